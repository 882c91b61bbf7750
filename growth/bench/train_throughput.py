"""Tokens/s of the real training job (``launch/pretrain.py`` under the DeepSpeed launcher) at several
world sizes, read back from the run's own TensorBoard ``perf/tokens_per_s`` scalars."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]


def run_training(n_procs: int, out_dir: Path, overrides: list[str], port: int) -> None:
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    cmd = [
        deepspeed,
        "--num_gpus",
        str(n_procs),
        "--master_port",
        str(port),
        str(ROOT / "launch/pretrain.py"),
        f"train.out_dir={out_dir}",
        "train.resume=none",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n_procs))}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training with {n_procs} processes failed:\n{result.stderr[-3000:]}")


def tokens_per_second(out_dir: Path, skip: int) -> dict[str, float]:
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    rates = [s.value for s in events.Scalars("perf/tokens_per_s") if s.step > skip]
    flops = [s.value for s in events.Scalars("perf/tflops") if s.step > skip]
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
        run_training(n_procs, out_dir, overrides, port=29600 + index)
        results[n_procs] = tokens_per_second(out_dir, skip)
    return results
