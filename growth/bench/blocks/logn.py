"""Entropy-invariant (log-n) attention scale (Su 2021, "从熵不变性看Attention的Scale操作"; GAU-alpha).

Claim: multiplying the logits by log(n)/log(train length) on top of 1/sqrt(d) keeps the attention's
entropy from growing with the number of keys n, so a model trained at a short length degrades less
beyond it, and is no worse within it. The clamp ``logn_min_keys: 16`` (bert4keras) is a third arm.

Each arm trains at ``data.seq_len`` = T with RoPE and ``model.max_seq_len`` = 8T; ``logn_base`` = T so
the factor is 1 at the training length. The trained checkpoint is then evaluated per position on the
validation stream at 1x, 2x, 4x and 8x T (``growth/eval/per_position.py``), scoring the same tokens at
every length (only the context they see grows).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from growth.bench.blocks import common
from growth.eval.per_position import bucket_means, load_run, per_position_loss, validation_tokens

NAME = "logn"
MULTIPLES = (1, 2, 4, 8)
SHAPE = {"d_model": 64, "n_layers": 4, "n_heads": 4, "head_dim": 16, "d_ff": 192}
CLAIM = "log-n degrades less beyond the training length, and is no worse within it"


def arms(train_len: int) -> dict[str, list[str]]:
    logn = ["model.attention_scale=logn", f"model.logn_base={train_len}"]
    return {
        "sqrt": ["model.attention_scale=sqrt"],
        "logn": [*logn, "model.logn_min_keys=1"],
        "logn_clamp16": [*logn, "model.logn_min_keys=16"],
    }


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"train_len": 32, "steps": 60, "eval_every": 30, "batch": 16, "long_windows": 16}
    # 40 windows of 8 x 64 tokens: 20,480 of the bundled corpus's 21,530 validation tokens
    return {"train_len": 64, "steps": 500, "eval_every": 100, "batch": 16, "long_windows": 40}


def arm_overrides(s: dict[str, Any], flags: list[str], seed: int) -> list[str]:
    t = s["train_len"]
    return [
        *common.shape_overrides(SHAPE),
        "model.position=rope",
        f"data.seq_len={t}",
        f"model.max_seq_len={t * MULTIPLES[-1]}",
        f"train.micro_batch_size={s['batch']}",
        f"train.seed={seed}",
        *common.steps_overrides(s["steps"], s["eval_every"]),
        *flags,
    ]


def evaluate(run_dir: Path, train_len: int, long_windows: int) -> dict[str, Any]:
    """Per-position loss at each multiple k of the training length, on the same tokens at every k: the
    first ``long_windows`` windows of the longest length, cut into ``long_windows * 8 / k`` windows of kT
    (so only the context each token sees changes with k, not which tokens are scored)."""
    model, config, folder = load_run(run_dir)
    tokens = validation_tokens(config, folder)
    longest = MULTIPLES[-1] * train_len
    span = min(long_windows, (len(tokens) - 1) // longest)
    out: dict[str, Any] = {"long_windows": span}
    for k in MULTIPLES:
        losses = per_position_loss(model, tokens, k * train_len, span * MULTIPLES[-1] // k)
        out[str(k)] = {
            "mean": float(losses.mean()),
            "beyond": float(losses[train_len:].mean()) if k > 1 else math.nan,
            "buckets": bucket_means(losses, max(1, train_len // 4)),
        }
    return out


def degradation(evaluation: dict[str, Any], k: int) -> float:
    """Mean loss over all positions at k x T minus the mean at T (0 = no degradation)."""
    return evaluation[str(k)]["mean"] - evaluation["1"]["mean"]


def arm_result(s: dict[str, Any], flags: list[str], run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    evaluation = evaluate(run_dir, s["train_len"], s["long_windows"]) if outcome["ok"] else {}
    return {**outcome, "flags": flags, "eval": evaluation, "val_loss": common.scalars(run_dir, "val/loss")}


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "shape": SHAPE, "multiples": list(MULTIPLES), "seeds": seeds},
        "arms": {},
    }
    for arm, flags in arms(s["train_len"]).items():
        runs = common.seeded_runs(
            work,
            f"logn_{arm}",
            seeds,
            lambda seed, f=flags: arm_overrides(s, f, seed),
            lambda run_dir, outcome, f=flags: arm_result(s, f, run_dir, outcome),
        )
        ok = [r for r in runs if r["eval"]]
        record["arms"][arm] = {
            "runs": runs,
            "loss_at": {
                str(k): common.seed_stats([r["eval"][str(k)]["mean"] for r in ok]) for k in MULTIPLES
            },
            "degradation": {
                str(k): common.seed_stats([degradation(r["eval"], k) for r in ok]) for k in MULTIPLES[1:]
            },
        }
    record["verdict"] = judge(record)
    return record


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """Reproduced when both log-n arms degrade less than sqrt at 4x and 8x (seed means) and are within
    0.02 nats (or one seed std) of sqrt at 1x."""
    a = record["arms"]
    worst = str(MULTIPLES[-1])
    parts = []
    for arm in a:
        at1 = a[arm]["loss_at"]["1"]["mean"]
        parts.append(
            f"{arm}: 1x {at1:.3f}, "
            + ", ".join(f"{k}x +{a[arm]['degradation'][str(k)]['mean']:.3f}" for k in MULTIPLES[1:])
        )
    base = a["sqrt"]
    tolerance = max(0.02, base["loss_at"]["1"]["std"])
    checks = {}
    for arm in ("logn", "logn_clamp16"):
        checks[f"{arm}_degrades_less"] = all(
            a[arm]["degradation"][k]["mean"] < base["degradation"][k]["mean"] for k in ("4", worst)
        )
        checks[f"{arm}_no_worse_within"] = (
            a[arm]["loss_at"]["1"]["mean"] <= base["loss_at"]["1"]["mean"] + tolerance
        )
    return common.verdict(
        CLAIM,
        "val loss at 1x and its rise at 2x/4x/8x the training length; " + "; ".join(parts),
        None,
        checks,
    )


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (per_position, by_length) = common.figure(2, width=5.0)
    t = record["settings"]["train_len"]
    width = max(1, t // 4)
    for color, (arm, data) in zip(("tab:grey", "tab:blue", "tab:orange"), record["arms"].items()):
        for index, run in enumerate(data["runs"]):
            if run["eval"]:
                buckets = run["eval"][str(MULTIPLES[-1])]["buckets"]
                per_position.plot(
                    [width * (i + 0.5) for i in range(len(buckets))],
                    buckets,
                    color=color,
                    alpha=0.8,
                    label=arm if index == 0 else None,
                )
        means = [data["loss_at"][str(k)]["mean"] for k in MULTIPLES]
        by_length.plot(MULTIPLES, means, color=color, marker="o", label=arm)
    per_position.axvline(t, color="black", linestyle=":", linewidth=1)
    per_position.set_title(f"val loss per position at {MULTIPLES[-1]}x (trained at {t})")
    per_position.set_xlabel("position")
    per_position.legend()
    by_length.set_xscale("log", base=2)
    by_length.set_title("mean val loss vs eval length / train length")
    by_length.set_xlabel("multiple of the training length")
    by_length.legend()
    common.save_figure(fig, path)
