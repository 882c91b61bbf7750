"""Tokens/s of the real training job (``launch/pretrain.py`` under the DeepSpeed launcher) at several
world sizes, read back from the run's own TensorBoard ``perf/tokens_per_s`` scalars."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from growth.bench.harness import scalars, train


def tokens_per_second(out_dir: Path, skip: int) -> dict[str, float]:
    rates = [v for s, v in scalars(out_dir, "perf/tokens_per_s") if s > skip]
    flops = [v for s, v in scalars(out_dir, "perf/tflops") if s > skip]
    return {
        "tokens_per_s": statistics.median(rates),
        "tflops": statistics.median(flops),
        "steps_measured": len(rates),
    }


def measure(
    world_sizes: list[int], overrides: list[str], work_dir: Path, skip: int = 5
) -> dict[int, dict[str, float]]:
    results = {}
    for index, n_procs in enumerate(world_sizes):
        out_dir = work_dir / f"ranks{n_procs}"
        shutil.rmtree(out_dir, ignore_errors=True)
        train(out_dir, overrides, n_procs=n_procs, port=29600 + index)
        results[n_procs] = tokens_per_second(out_dir, skip)
    return results
