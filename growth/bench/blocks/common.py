"""What every block benchmark shares: one arm = one run of the trainer's real path through the harness
(``growth/bench/harness.py``: ``launch/pretrain.py`` in a subprocess, its TensorBoard scalars), divergence
detection, seed statistics, and the claims table's verdicts.

Arms of one comparison differ only in the flag under test: the same ``train.seed`` (so the same data
order and initial draw), steps, batch and schedule.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from growth.bench.harness import curve as val_curve  # noqa: F401  (the sub-benchmarks read them as common.*)
from growth.bench.harness import scalars, train, write_json  # noqa: F401
from growth.bench.plotting import figure, save_figure  # noqa: F401

# One small default for every sub-benchmark; each adds its model shape and the flag under test.
COMMON = ["train.resume=none", "train.eval_batches=8", "model.dropout=0.0"]
FIRST_SEED = 1234  # ``train.seed`` of an arm's first seed: the arms of one comparison share their seeds


def shape_overrides(shape: dict[str, Any]) -> list[str]:
    """``model.<field>=<value>`` for each field of a sub-benchmark's model shape."""
    return [f"model.{k}={v}" for k, v in shape.items()]


def steps_overrides(max_steps: int, eval_every: int, log_every: int = 0) -> list[str]:
    """max_steps, evaluation cadence, one checkpoint at the end (the per-position and STS evaluations read it)."""
    log = log_every or eval_every
    return [
        f"train.max_steps={max_steps}",
        f"train.eval_interval={eval_every}",
        f"train.log_interval={log}",
        f"train.save_interval={max_steps}",
    ]


def run_arm(out_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """One training run; a run that stops (e.g. ``max_bad_steps`` non-finite steps) is a result, not an error."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        seconds = train(out_dir, [*COMMON, *overrides])
        return {"ok": True, "process_seconds": seconds}
    except RuntimeError as error:
        lines = [line for line in str(error).splitlines() if line.startswith("error:")]
        message = lines[-1] if lines else str(error).strip().splitlines()[-1]
        return {"ok": False, "error": message, "diverged_at": diverged_step_from_message(message)}


def seeded_runs(
    work: Path,
    name: str,
    seeds: int,
    overrides: Callable[[int], list[str]],
    read: Callable[[Path, dict[str, Any]], dict[str, Any]] = lambda run_dir, outcome: outcome,
) -> list[dict[str, Any]]:
    """One arm over ``seeds`` seeds: ``<work>/<name>_s<i>`` trained with ``overrides(FIRST_SEED + i)``, each
    read back by ``read(run_dir, outcome)``."""
    out = []
    for index in range(seeds):
        run_dir = work / f"{name}_s{index}"
        out.append(read(run_dir, run_arm(run_dir, overrides(FIRST_SEED + index))))
    return out


def diverged_step_from_message(message: str) -> int | None:
    """The step in the trainer's divergence message (``N non-finite steps in a row at step S``)."""
    found = re.search(r"non-finite steps in a row at step (\d+)", message)
    return int(found.group(1)) if found else None


def divergence_step(
    losses: Sequence[tuple[int, float]], skipped: Sequence[tuple[int, float]] = (), blowup: float = 2.0
) -> int | None:
    """First step where training broke: a skipped (non-finite) step, a non-finite logged loss, or a
    loss above ``blowup`` x the first logged loss (a finite explosion). None when it never broke."""
    first_skip = min((step for step, _ in skipped), default=None)
    first_loss = losses[0][1] if losses else math.nan
    bad = [step for step, loss in losses if not math.isfinite(loss) or loss > blowup * first_loss]
    candidates = [s for s in (first_skip, min(bad, default=None)) if s is not None]
    return min(candidates) if candidates else None


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one seed) and the values themselves."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "values": list(values)}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std, "values": list(values)}


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear value at ``x`` of points sorted by x (clamped to the ends)."""
    if not points:
        return math.nan
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return points[-1][1]


def verdict(
    claim: str, measured: str, reproduced: bool | None, parts: dict[str, bool] | None = None
) -> dict[str, Any]:
    """A row of the claims table (docs/blocks.md): the paper's claim, what was measured, and whether it held
    (None: not decidable).
    With ``parts`` (each sub-claim's outcome) ``reproduced`` is True, False or "partly"."""
    if parts:
        held = list(parts.values())
        reproduced = True if all(held) else ("partly" if any(held) else False)
    return {
        "claim": claim,
        "measured": measured,
        "reproduced": reproduced,
        **({"parts": parts} if parts else {}),
    }


def best_seconds(work: Any, repeats: int = 5, min_seconds: float = 0.5) -> float:
    """The fastest of at least ``repeats`` timed calls of ``work()`` (more until ``min_seconds`` are spent),
    after one warm-up: the call least disturbed by other load on a shared machine."""
    import time

    work()
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def relative_rms(approx: Any, exact: Any) -> float:
    """||approx - exact|| / ||exact|| over all entries."""
    return ((approx - exact).pow(2).mean() / exact.pow(2).mean()).sqrt().item()


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (the exponent of a power law)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
