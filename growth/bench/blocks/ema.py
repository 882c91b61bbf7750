"""EMA of the weights (Polyak & Juditsky 1992; as used for LM pretraining, e.g. Sanyal et al. 2023
"Early Weight Averaging meets High Learning Rates").

Claim: the averaged weights theta_ema <- d theta_ema + (1 - d) theta are better than the raw weights
while the learning rate is still high (the average cancels the iterates' noise around the valley
floor), and the gap closes as the LR anneals (the raw iterate settles by itself).

One run per decay with a warmup-stable-decay schedule (``train.lr_schedule=wsd``): the stable phase is
"a run whose LR has not fully decayed", the final ``decay_fraction`` anneals it to ~0. The trainer
logs ``val/loss`` and ``val/loss_ema`` (``growth/train/callbacks/evaluator.py``) at every evaluation.
EMA never feeds back into training, so raw curves of one seed are the same run for every decay.
No ``train.ema_warmup``: its decay_t = min(d, (1 + t)/(10 + t)) stays below 0.99 for ~900 steps, which
would make both decays the same average here; the decays are short enough (0.99^420 = 1.5%) that the
initial weights have left the average by the end of the stable phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from growth.bench.blocks import common

NAME = "ema"
SHAPE = {"d_model": 64, "n_layers": 4, "n_heads": 4, "head_dim": 16, "d_ff": 192}
CLAIM = "EMA weights are better at the end of a run whose LR has not fully decayed, and the gap closes as the LR anneals"


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"decays": [0.8, 0.95], "steps": 80, "eval_every": 10, "decay_fraction": 0.3, "lr": 3e-3}
    return {"decays": [0.95, 0.99], "steps": 600, "eval_every": 25, "decay_fraction": 0.3, "lr": 3e-3}


def arm_overrides(s: dict[str, Any], decay: float, seed: int) -> list[str]:
    return [
        *common.shape_overrides(SHAPE),
        f"train.ema_decay={decay}",
        "train.ema_warmup=false",
        "train.lr_schedule=wsd",
        f"train.decay_fraction={s['decay_fraction']}",
        "train.min_lr_ratio=0.01",
        f"train.lr={s['lr']}",
        f"train.seed={seed}",
        *common.steps_overrides(s["steps"], s["eval_every"]),
    ]


def gaps(raw: Sequence[tuple[int, float]], ema: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """(step, val/loss - val/loss_ema) where both were logged: > 0 means the EMA weights are better."""
    averaged = dict(ema)
    return [(step, loss - averaged[step]) for step, loss in raw if step in averaged]


def gap_at(points: Sequence[tuple[int, float]], step: int) -> float:
    """The gap at the last evaluation at or before ``step``."""
    before = [g for s, g in points if s <= step]
    return before[-1] if before else math.nan


def stable_end(s: dict[str, Any]) -> int:
    """The last step before the WSD decay phase starts."""
    return int(round(s["steps"] * (1 - s["decay_fraction"])))


def read(s: dict[str, Any], run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    raw, ema = common.scalars(run_dir, "val/loss"), common.scalars(run_dir, "val/loss_ema")
    points = gaps(raw, ema)
    return {
        **outcome,
        "val_loss": raw,
        "val_loss_ema": ema,
        "gap": points,
        "gap_stable_end": gap_at(points, stable_end(s)),
        "gap_end": gap_at(points, s["steps"]),
        "lr": common.scalars(run_dir, "train/lr"),
    }


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "shape": SHAPE, "seeds": seeds, "stable_end": stable_end(s)},
        "decays": {},
    }
    for decay in s["decays"]:
        runs = common.seeded_runs(
            work,
            f"ema_{decay}",
            seeds,
            lambda seed, d=decay: arm_overrides(s, d, seed),
            lambda d, o: read(s, d, o),
        )
        record["decays"][str(decay)] = {
            "runs": runs,
            "gap_stable_end": common.seed_stats([r["gap_stable_end"] for r in runs]),
            "gap_end": common.seed_stats([r["gap_end"] for r in runs]),
        }
    record["verdict"] = judge(record)
    return record


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """Two parts, for every decay (seed means): the EMA is better before the anneal (gap > 0); the gap
    at the end is smaller in size than before the anneal."""
    parts, better, closes = [], True, True
    for decay, data in record["decays"].items():
        before, after = data["gap_stable_end"]["mean"], data["gap_end"]["mean"]
        better, closes = better and before > 0, closes and abs(after) < abs(before)
        parts.append(
            f"decay {decay}: raw - EMA = {before:+.3f} at step {record['settings']['stable_end']} "
            f"(LR still high), {after:+.3f} at the end (LR annealed)"
        )
    return common.verdict(
        CLAIM,
        "; ".join(parts),
        None,
        {"ema_better_while_lr_high": bool(better), "gap_closes_as_lr_anneals": bool(closes)},
    )


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (losses, gap) = common.figure(2, width=5.0)
    first = next(iter(record["decays"].values()))["runs"][0]
    if first["val_loss"]:
        losses.plot(*zip(*first["val_loss"]), color="black", label="raw weights")
    for color, (decay, data) in zip(("tab:blue", "tab:orange"), record["decays"].items()):
        for index, run in enumerate(data["runs"]):
            if run["val_loss_ema"]:
                losses.plot(
                    *zip(*run["val_loss_ema"]),
                    color=color,
                    linestyle="--",
                    label=f"EMA {decay}" if index == 0 else None,
                )
            if run["gap"]:
                gap.plot(
                    *zip(*run["gap"]), color=color, marker=".", label=f"EMA {decay}" if index == 0 else None
                )
    for ax in (losses, gap):
        ax.axvline(record["settings"]["stable_end"], color="grey", linestyle=":", label="LR decay starts")
        ax.set_xlabel("step")
    gap.axhline(0, color="black", linewidth=0.8)
    losses.set_title("val loss")
    losses.set_ylim(top=min(6.5, losses.get_ylim()[1]))
    gap.set_title("val loss raw - EMA (> 0: EMA better)")
    losses.legend(fontsize=7)
    gap.legend(fontsize=7)
    common.save_figure(fig, path)
