"""Performer (FAVOR+) claims, measured on the attention kernel itself (no training; CPU, one thread):

  1. the error against exact softmax attention falls as ~m^(-1/2) with the number of random features m
     (Choromanski et al. 2021, Theorem 4: the estimator's variance is O(1/m)); fitted slope in [-0.7, -0.3];
  2. the cost per token stays flat from 256 to 8k tokens while softmax attention's grows (linear attention):
     Performer's time per token at the longest / shortest length <= 1.5, softmax's >= 3.

q, k ~ N(0, s^2), v ~ N(0, 1), head size 32, 4 heads, 512 tokens; the error is the relative RMS over all
outputs, averaged over feature draws, causal and bidirectional. The claim is judged at s = 0.35 (q.k/sqrt(d)
with std 0.12); at s = 1 (std 1, a peaked attention) the estimator's variance, which grows like
exp(|q'+k'|^2) (Theorem 2), keeps it far from its asymptote at these m: that slope is reported, not judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from growth.bench.blocks import common
from growth.model.performer import default_features, favor_attention, orthogonal_gaussian

NAME = "performer"
CLAIM = "Performer: error vs softmax ~ m^-1/2; cost per token flat in length"
HEADS, HEAD_DIM = 4, 32


SCALES = {"moderate": 0.35, "peaked": 1.0}


def inputs(length: int, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, length, HEAD_DIM, generator=generator) for _ in range(3))
    return [q * scale, k * scale, v]


def error_vs_features(features: list[int], draws: int, length: int, scale: float) -> dict[str, list[float]]:
    q, k, v = inputs(length, scale=scale)
    out = {}
    for causal in (True, False):
        exact = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out["causal" if causal else "bidirectional"] = [
            sum(
                common.relative_rms(
                    favor_attention(
                        q, k, v, orthogonal_gaussian(m, HEAD_DIM, torch.Generator().manual_seed(s)), causal
                    ),
                    exact,
                )
                for s in range(draws)
            )
            / draws
            for m in features
        ]
    return out


def cost_per_token(lengths: list[int]) -> dict[str, list[float]]:
    """Microseconds per token of one causal forward, softmax (torch SDPA) and Performer (default m)."""
    w = orthogonal_gaussian(default_features(HEAD_DIM), HEAD_DIM, torch.Generator().manual_seed(0))
    costs: dict[str, list[float]] = {"softmax": [], "performer": []}
    with torch.no_grad():
        for length in lengths:
            q, k, v = inputs(length)
            softmax = common.best_seconds(
                lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            )
            performer = common.best_seconds(lambda q=q, k=k, v=v: favor_attention(q, k, v, w, True))
            costs["softmax"].append(1e6 * softmax / length)
            costs["performer"].append(1e6 * performer / length)
    return costs


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    features = [16, 32, 64, 128] if quick else [16, 32, 64, 128, 256, 512, 1024]
    lengths = [256, 512, 1024] if quick else [256, 512, 1024, 2048, 4096, 8192]
    draws = max(2, seeds) if quick else max(8, seeds)
    record = {
        "settings": {
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "error_length": 512,
            "draws": draws,
            "scales": SCALES,
        },
        "features": features,
        "error": {name: error_vs_features(features, draws, 512, s) for name, s in SCALES.items()},
        "lengths": lengths,
        "microseconds_per_token": cost_per_token(lengths),
    }
    record["verdict"] = judge(record)
    return record


def judge(record: dict[str, Any]) -> dict[str, Any]:
    slopes = {
        f"{scale} {kind}": common.log_log_slope(record["features"], e)
        for scale, by_kind in record["error"].items()
        for kind, e in by_kind.items()
    }
    cost = record["microseconds_per_token"]
    growth = {arm: c[-1] / c[0] for arm, c in cost.items()}
    record["slopes"], record["cost_growth"] = slopes, growth
    parts = {
        "error ~ m^-1/2": all(-0.7 <= s <= -0.3 for k, s in slopes.items() if k.startswith("moderate")),
        "flat cost": growth["performer"] <= 1.5 and growth["softmax"] >= 3.0,
    }
    lengths = record["lengths"]
    measured = (
        "error slope vs m (causal, bidirectional): moderate "
        f"{slopes['moderate causal']:.2f}, {slopes['moderate bidirectional']:.2f}; peaked "
        f"{slopes['peaked causal']:.2f}, {slopes['peaked bidirectional']:.2f}; "
        f"time per token {lengths[0]} -> {lengths[-1]} tokens: Performer x{growth['performer']:.2f}, "
        f"softmax x{growth['softmax']:.2f}"
    )
    return common.verdict(CLAIM, measured, None, parts)


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (error, cost) = common.figure(2, width=4.6)
    m = record["features"]
    for scale, by_kind in record["error"].items():
        for kind, values in by_kind.items():
            style = "-" if scale == "moderate" else "--"
            error.plot(m, values, marker="o", linestyle=style, label=f"{kind}, {scale} q.k")
    reference = [record["error"]["moderate"]["causal"][0] * (m[0] / x) ** 0.5 for x in m]
    error.plot(m, reference, color="black", linestyle=":", label="m^-1/2")
    error.set_xscale("log", base=2)
    error.set_yscale("log")
    error.set_title("FAVOR+ error vs exact softmax")
    error.set_xlabel("random features m")
    error.set_ylabel("relative RMS error")
    error.legend()
    for arm, values in record["microseconds_per_token"].items():
        cost.plot(record["lengths"], values, marker="o", label=arm)
    cost.set_xscale("log", base=2)
    cost.set_yscale("log")
    cost.set_title("causal attention forward, CPU 1 thread")
    cost.set_xlabel("tokens")
    cost.set_ylabel("microseconds per token")
    cost.legend()
    common.save_figure(fig, path)
