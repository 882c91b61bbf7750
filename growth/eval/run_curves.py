"""Validation curves of finished runs, from their TensorBoard logs (``tools/compare_runs.py``).

Growth and scratch runs are compared on one axis: optimizer steps, tokens seen or training FLOPs
(each run logs ``train/tokens_seen`` and ``train/flops_seen`` with its steps, carried across
growth), with the raw and, when logged, the EMA validation loss, and the growth events marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from growth.checkpoint.atomic import atomic_path
from growth.errors import ConfigError

AXES = {"steps": None, "tokens": "train/tokens_seen", "flops": "train/flops_seen"}


@dataclass
class RunCurves:
    name: str
    val: list[tuple[float, float]]  # (x, val/loss)
    val_ema: list[tuple[float, float]] = field(default_factory=list)
    growth: list[float] = field(default_factory=list)  # x of each growth event


def _interpolate(points: dict[int, float], step: int) -> float:
    """The logged value at ``step``, or linearly between the nearest logged steps around it."""
    if step in points:
        return points[step]
    below = max((s for s in points if s < step), default=None)
    above = min((s for s in points if s > step), default=None)
    if below is None or above is None:
        return points[below if above is None else above]
    t = (step - below) / (above - below)
    return points[below] + t * (points[above] - points[below])


def read_run(run: Path, axis: str) -> RunCurves:
    """A run directory's curves against ``axis`` (steps | tokens | flops)."""
    if axis not in AXES:
        raise ConfigError(f"--x {axis}: use one of {' | '.join(AXES)}")
    logs = Path(run) / "tensorboard"
    if not logs.is_dir():
        raise ConfigError(
            f"{run} is not a run directory (no tensorboard/ folder); pass the folder train.out_dir names"
        )
    events = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if "val/loss" not in tags:
        raise ConfigError(f"{run}: no val/loss logged yet (the run has not reached train.eval_interval)")
    scale = {s.step: s.value for s in events.Scalars(AXES[axis])} if AXES[axis] else None

    def against(tag: str) -> list[tuple[float, float]]:
        if tag not in tags:
            return []
        return [
            (_interpolate(scale, s.step) if scale else float(s.step), s.value) for s in events.Scalars(tag)
        ]

    growth_tag = "growth/params_after"
    growth = []
    if growth_tag in tags:  # in-run stages log at their step; expand's events at tokens seen
        growth = (
            [p[0] for p in against(growth_tag)]
            if axis != "tokens"
            else [float(s.step) for s in events.Scalars(growth_tag)]
        )
    return RunCurves(Path(run).name, against("val/loss"), against("val/loss_ema"), growth)


def plot_runs(curves: list[RunCurves], axis: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(curves):
        color = f"C{index}"
        ax.plot(*zip(*run.val), color=color, marker=".", label=f"{run.name} val/loss")
        if run.val_ema:
            ax.plot(*zip(*run.val_ema), color=color, linestyle="--", label=f"{run.name} val/loss (EMA)")
        for x in run.growth:
            ax.axvline(x, color=color, linestyle=":", linewidth=1)
    ax.set_xlabel({"steps": "optimizer steps", "tokens": "tokens seen", "flops": "training FLOPs"}[axis])
    ax.set_ylabel("validation loss")
    if axis != "steps":
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_title("validation loss (growth events dotted)")
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:  # a failed write (read-only, full) leaves nothing at ``out``
            fig.savefig(tmp, dpi=120, format=out.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
