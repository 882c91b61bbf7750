"""The loss across growth points: one run on one LR schedule (``configs/grow_schedule.yaml``) against
the old flow of the same stages — train, ``tools/expand.py``, train again with ``train.init_from`` —
where every phase restarts its schedule (warmup to the peak, cosine over the phase). Same data
order, same models, same steps; ``tools/bench_growth_schedule.py`` writes JSON + a PNG of LR and
validation loss against the step, growth points marked.

The bump: validation loss just before a growth against the highest validation loss in the
``window`` steps after it (positive = the loss rose after growing).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from growth.bench.harness import ROOT, scalars, train
from growth.bench.plotting import figure, save_figure
from growth.config import load_config
from growth.train.growth_schedule import stage_models

CONFIG = ROOT / "configs/grow_schedule.yaml"


def bumps(val: list[tuple[int, float]], growth_steps: list[int], window: int) -> list[dict[str, float]]:
    out = []
    for step in growth_steps:
        before = [v for s, v in val if s <= step]
        after = [v for s, v in val if step < s <= step + window]
        if before and after:
            out.append(
                {
                    "at_step": step,
                    "val_loss_before": before[-1],
                    "max_val_loss_after": max(after),
                    "bump": max(after) - before[-1],
                }
            )
    return out


def one_schedule(work: Path, overrides: list[str]) -> dict:
    seconds = train(work / "one_schedule", overrides, config=CONFIG)
    return {
        "seconds": seconds,
        "val": scalars(work / "one_schedule", "val/loss"),
        "lr": scalars(work / "one_schedule", "train/lr"),
    }


def restarted_phases(work: Path, overrides: list[str]) -> dict:
    """The same stages as three runs; each continued phase restarts warmup + cosine over its steps."""
    config = load_config(CONFIG, overrides)
    models = stage_models(config)
    ends = [stage.at_step for stage in config.train.growth] + [config.train.max_steps]
    phase_overrides = [o for o in overrides if not o.startswith("train.growth")]
    val, lr, seconds, offset, source = [], [], 0.0, 0, None
    for index, (model, end) in enumerate(zip(models, ends)):
        run = work / f"phase{index}"
        steps = [f"train.max_steps={end - offset}", "train.growth=[]", "train.lr_schedule=cosine"]
        if source is None:
            seconds += train(run, [*phase_overrides, *steps])
        else:
            target = work / f"target{index}.yaml"
            target.write_text(yaml.safe_dump({"model": vars(model), "train": {}}))
            from growth.expand.grow_checkpoint import expand_checkpoint

            expand_checkpoint(source, target, work / f"grown{index}")
            seconds += train(run, [*phase_overrides, *steps], config=work / f"grown{index}/config.yaml")
        val += [(s + offset, v) for s, v in scalars(run, "val/loss")]
        lr += [(s + offset, v) for s, v in scalars(run, "train/lr")]
        offset, source = end, run
    return {"seconds": seconds, "val": val, "lr": lr}


def compare(work: Path, overrides: list[str] = (), window: int = 40) -> dict:
    overrides = [*overrides, "train.eval_interval=10", "train.log_interval=5", "train.eval_batches=16"]
    growth_steps = [stage.at_step for stage in load_config(CONFIG, overrides).train.growth]
    runs = {"one_schedule": one_schedule(work, overrides), "restarted": restarted_phases(work, overrides)}
    for result in runs.values():
        result["bumps"] = bumps(result["val"], growth_steps, window)
        result["final_val_loss"] = result["val"][-1][1]
    return {
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": overrides,
        "growth_steps": growth_steps,
        "window": window,
        **runs,
    }


def plot(result: dict, path: Path) -> None:
    fig, (lr_axis, loss_axis) = figure(1, width=7, height=3, rows=2, sharex=True)
    for name, label in (
        ("one_schedule", "one run, one schedule (train.growth)"),
        ("restarted", "three runs, schedule restarted (expand + init_from)"),
    ):
        lr_axis.plot(*zip(*result[name]["lr"]), label=label)
        loss_axis.plot(*zip(*result[name]["val"]), marker=".", label=label)
    for axis in (lr_axis, loss_axis):
        for step in result["growth_steps"]:
            axis.axvline(step, color="grey", linestyle=":", linewidth=1)
    lr_axis.set_ylabel("learning rate")
    loss_axis.set_ylabel("validation loss")
    loss_axis.set_xlabel("optimizer step (growth points dotted)")
    lr_axis.legend(fontsize=8)
    save_figure(fig, path, dpi=120)
