"""GAU and FLASH (Hua et al. 2022, "Transformer Quality in Linear Time").

Claims: a Gated Attention Unit (one gated unit with a single small attention head, Sec. 2, Eq. 4-5)
matches or beats the standard attention + FFN layer in quality per parameter (Fig. 2, Table 1: two
GAUs per Transformer layer at equal parameters), and FLASH (GAU with mixed-chunk attention, Sec. 3.2:
exact attention inside chunks of c tokens, linear attention across them) keeps most of GAU's quality
at linear cost in the sequence length.

Arms at about equal parameters: standard layer (MHA + SwiGLU FFN, 4 layers), GAU relu^2 (the paper)
and GAU softmax (Su's GAU-alpha), 8 layers each, and FLASH (relu^2, chunks of c). Each at two sequence
lengths with the same tokens per step; validation loss at equal steps and at equal wall time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from growth.bench.blocks import common

NAME = "gau_flash"
D_MODEL = 64
# Per layer: standard 4 d^2 (attention) + 3 d d_ff (SwiGLU) = 13 d^2 at d_ff = 3d; GAU 3 d e + d s =
# 6.5 d^2 at e = 2d, s = d/2: two GAU layers per standard layer, as the paper compares them.
STANDARD = {"layer": "transformer", "n_layers": 4, "n_heads": 4, "head_dim": 16, "d_ff": 192}
GAU = {"layer": "gau", "n_layers": 8, "gau_expansion": 2 * D_MODEL, "gau_key_size": D_MODEL // 2}
ARMS = {
    "standard": STANDARD,
    "gau_relu2": {**GAU, "gau_attention": "relu2"},
    "gau_softmax": {**GAU, "gau_attention": "softmax"},
    "flash": {**GAU, "gau_attention": "relu2"},  # + model.chunk_size (per length)
}
CLAIM = "GAU matches or beats the standard layer in quality per parameter; FLASH keeps most of GAU's quality at linear cost"


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "lengths": [64, 256],
            "chunk": {"64": 16, "256": 64},
            "tokens_per_step": 1024,
            "steps": 30,
            "eval_every": 15,
        }
    return {
        "lengths": [256, 1024],
        "chunk": {"256": 64, "1024": 128},
        "tokens_per_step": 2048,
        "steps": 300,
        "eval_every": 50,
    }


def arm_overrides(s: dict[str, Any], arm: str, length: int, seed: int) -> list[str]:
    shape = {**ARMS[arm], **({"chunk_size": s["chunk"][str(length)]} if arm == "flash" else {})}
    return [
        f"model.d_model={D_MODEL}",
        *common.shape_overrides(shape),
        f"data.seq_len={length}",
        f"model.max_seq_len={length}",
        f"train.micro_batch_size={max(1, s['tokens_per_step'] // length)}",
        f"train.seed={seed}",
        *common.steps_overrides(s["steps"], s["eval_every"]),
    ]


def arm_result(run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    points = common.val_curve(run_dir)
    params = common.scalars(run_dir, "model/params")
    first = common.scalars(run_dir, "train/loss")[:1]
    return {
        **outcome,
        "curve": points,
        "params": int(params[0][1]) if params else 0,
        "first_train_loss": first[0][1] if first else math.nan,
        "final_val_loss": points[-1]["val_loss"] if points else math.nan,
        "seconds": points[-1]["seconds"] if points else math.nan,
    }


def at_equal_time(runs: dict[str, list[dict[str, Any]]]) -> tuple[float, dict[str, float]]:
    """The shortest arm's training time t*, and each arm's (seed-mean) val loss interpolated at t*."""
    t_star = min(r["seconds"] for arm in runs.values() for r in arm if math.isfinite(r["seconds"]))
    return t_star, {
        name: common.seed_stats(
            [common.interpolate([(p["seconds"], p["val_loss"]) for p in r["curve"]], t_star) for r in arm]
        )["mean"]
        for name, arm in runs.items()
    }


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "arms": ARMS, "d_model": D_MODEL, "seeds": seeds},
        "lengths": {},
    }
    for length in s["lengths"]:
        runs = {
            arm: common.seeded_runs(
                work,
                f"gau_{length}_{arm}",
                seeds,
                lambda seed, a=arm, n=length: arm_overrides(s, a, n, seed),
                arm_result,
            )
            for arm in ARMS
        }
        t_star, timed = at_equal_time(runs)
        record["lengths"][str(length)] = {
            "runs": runs,
            "equal_time_seconds": t_star,
            "val_loss_equal_time": timed,
            "val_loss_equal_steps": {
                a: common.seed_stats([r["final_val_loss"] for r in rs]) for a, rs in runs.items()
            },
            "params": {a: rs[0]["params"] for a, rs in runs.items()},
            "seconds": {a: common.seed_stats([r["seconds"] for r in rs])["mean"] for a, rs in runs.items()},
        }
    record["verdict"] = judge(record)
    return record


def kept_quality(flash: float, gau: float, start: float) -> float:
    """The share of GAU's loss drop (from the first training loss) that FLASH achieves."""
    return (start - flash) / (start - gau) if start > gau else math.nan


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """Three parts, at equal steps: at every length the better GAU is within 0.02 nats of the standard
    layer or below it; FLASH keeps >= 90% of dense GAU relu^2's loss drop; and at the longest length a
    FLASH run is faster than a dense GAU run."""
    parts, gau_holds, flash_holds = [], True, True
    lengths = sorted(record["lengths"], key=int)
    for length in lengths:
        data = record["lengths"][length]
        loss = {a: v["mean"] for a, v in data["val_loss_equal_steps"].items()}
        start = common.seed_stats([r["first_train_loss"] for r in data["runs"]["gau_relu2"]])["mean"]
        kept = kept_quality(loss["flash"], loss["gau_relu2"], start)
        gau_ok = min(loss["gau_relu2"], loss["gau_softmax"]) <= loss["standard"] + 0.02
        gau_holds, flash_holds = gau_holds and gau_ok, flash_holds and kept >= 0.9
        parts.append(
            f"T={length}: "
            + ", ".join(f"{a} {v:.3f}" for a, v in loss.items())
            + " (params "
            + "/".join(f"{p / 1e3:.0f}k" for p in data["params"].values())
            + f"; FLASH keeps {kept:.0%}; at equal time {data['equal_time_seconds']:.0f} s: "
            + ", ".join(f"{a} {v:.3f}" for a, v in data["val_loss_equal_time"].items())
            + ")"
        )
    longest = record["lengths"][lengths[-1]]["seconds"]
    faster = longest["flash"] < longest["gau_relu2"]
    parts.append(
        f"s/run at T={lengths[-1]}: flash {longest['flash']:.0f}, dense GAU {longest['gau_relu2']:.0f}, "
        f"standard {longest['standard']:.0f}"
    )
    return common.verdict(
        CLAIM,
        "val loss at equal steps; " + "; ".join(parts),
        None,
        {
            "gau_matches_standard": bool(gau_holds),
            "flash_keeps_90pct_of_gau": bool(flash_holds),
            "flash_faster_than_dense_gau_at_longest": bool(faster),
        },
    )


def plot(record: dict[str, Any], path: Path) -> None:
    lengths = sorted(record["lengths"], key=int)
    fig, axes = common.figure(2 * len(lengths))
    colors = dict(zip(ARMS, ("tab:grey", "tab:blue", "tab:green", "tab:orange")))
    for index, length in enumerate(lengths):
        by_step, by_time = axes[2 * index], axes[2 * index + 1]
        for arm, runs in record["lengths"][length]["runs"].items():
            for seed, run in enumerate(runs):
                if run["curve"]:
                    label = arm if seed == 0 else None
                    by_step.plot(
                        [p["step"] for p in run["curve"]],
                        [p["val_loss"] for p in run["curve"]],
                        color=colors[arm],
                        marker=".",
                        label=label,
                    )
                    by_time.plot(
                        [p["seconds"] for p in run["curve"]],
                        [p["val_loss"] for p in run["curve"]],
                        color=colors[arm],
                        marker=".",
                        label=label,
                    )
        by_step.set_title(f"T={length}: val loss vs step")
        by_time.set_title(f"T={length}: val loss vs seconds")
        by_step.legend(fontsize=7)
    common.save_figure(fig, path)
