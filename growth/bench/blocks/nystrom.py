"""Nystromformer claims, measured on the attention kernel itself (no training; CPU, one thread):

  1. the error against exact softmax attention shrinks as the landmarks m grow (Xiong et al. 2021, Sec. 3:
     the Nystrom approximation is exact at m = n), here with the paper's 6 pseudo-inverse iterations:
     monotonically, and the most landmarks at least halve the error of the fewest;
  2. the cost is linear in the sequence length for fixed m: at 4096 tokens and m = 64 its bidirectional
     forward is cheaper than softmax attention's.

q, k, v ~ N(0, 1) scaled by 0.5 on q and k (moderately peaked attention), 4 heads of 32, 1024 tokens for the
error; the relative RMS over all outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from growth.bench.blocks import common
from growth.model.nystrom import nystrom_attention

NAME = "nystrom"
CLAIM = "Nystromformer: error falls with landmarks; linear cost beats softmax at 4k"
HEADS, HEAD_DIM = 4, 32


def inputs(length: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, length, HEAD_DIM, generator=generator) for _ in range(3))
    return [q * 0.5, k * 0.5, v]


def error_vs_landmarks(landmarks: list[int], length: int, seeds: int) -> list[float]:
    errors = []
    for m in landmarks:
        total = 0.0
        for seed in range(seeds):
            q, k, v = inputs(length, seed)
            exact = F.scaled_dot_product_attention(q, k, v)
            total += common.relative_rms(nystrom_attention(q, k, v, m)[0], exact)
        errors.append(total / seeds)
    return errors


def cost_per_token(landmarks: list[int], length: int) -> dict[str, Any]:
    q, k, v = inputs(length)
    with torch.no_grad():
        softmax = common.best_seconds(lambda: F.scaled_dot_product_attention(q, k, v))
        nystrom = [common.best_seconds(lambda m=m: nystrom_attention(q, k, v, m)) for m in landmarks]
    return {"softmax": 1e6 * softmax / length, "nystrom": [1e6 * s / length for s in nystrom]}


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    landmarks = [8, 32, 128] if quick else [8, 16, 32, 64, 128, 256, 512]
    error_length, cost_length = (256, 1024) if quick else (1024, 4096)
    record = {
        "settings": {
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "error_length": error_length,
            "cost_length": cost_length,
        },
        "landmarks": landmarks,
        "error": error_vs_landmarks(landmarks, error_length, seeds),
        "microseconds_per_token": cost_per_token(landmarks, cost_length),
    }
    record["verdict"] = judge(record)
    return record


def judge(record: dict[str, Any]) -> dict[str, Any]:
    error, landmarks = record["error"], record["landmarks"]
    cost = record["microseconds_per_token"]
    at_64 = cost["nystrom"][landmarks.index(64)] if 64 in landmarks else cost["nystrom"][len(landmarks) // 2]
    parts = {
        "error falls with landmarks": all(a > b for a, b in zip(error, error[1:])),
        "the most landmarks at least halve the error": error[-1] <= error[0] / 2,
        "cheaper than softmax": at_64 < cost["softmax"],
    }
    measured = (
        f"relative error {error[0]:.3f} at m={landmarks[0]} -> {error[-1]:.3f} at m={landmarks[-1]} "
        f"({record['settings']['error_length']} tokens); at {record['settings']['cost_length']} tokens "
        f"{at_64:.1f} us/token vs softmax {cost['softmax']:.1f}"
    )
    return common.verdict(CLAIM, measured, None, parts)


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (error, cost) = common.figure(2, width=4.6)
    m = record["landmarks"]
    error.plot(m, record["error"], marker="o", label="Nystrom (6 pinv iterations)")
    error.set_xscale("log", base=2)
    error.set_yscale("log")
    error.set_title(f"error vs exact softmax, {record['settings']['error_length']} tokens")
    error.set_xlabel("landmarks m")
    error.set_ylabel("relative RMS error")
    error.legend()
    micro = record["microseconds_per_token"]
    cost.plot(m, micro["nystrom"], marker="o", label="Nystrom")
    cost.axhline(micro["softmax"], color="black", linestyle=":", label="softmax (SDPA)")
    cost.set_xscale("log", base=2)
    cost.set_yscale("log")
    cost.set_title(f"bidirectional forward, {record['settings']['cost_length']} tokens, CPU 1 thread")
    cost.set_xlabel("landmarks m")
    cost.set_ylabel("microseconds per token")
    cost.legend()
    common.save_figure(fig, path)
