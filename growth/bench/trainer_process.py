"""The trainer's real path from a benchmark: one ``launch/pretrain.py`` process per run, and its curve read
back from TensorBoard. Every benchmark that trains goes through ``run_trainer`` (the growth protocol, the
growth-schedule comparison, the block benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]


def run_trainer(
    out_dir: Path, overrides: list[str], config: Path | None = None, threads: int | None = None
) -> float:
    """``python launch/pretrain.py [--config CONFIG] train.out_dir=OUT_DIR OVERRIDES`` in one process (with
    ``threads`` OpenMP threads when given); returns its wall seconds; a failure raises with its stderr's tail."""
    cmd = [
        sys.executable,
        str(ROOT / "launch/pretrain.py"),
        *(["--config", str(config)] if config else []),
        f"train.out_dir={out_dir}",
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def train(out_dir: Path, overrides: list[str], config: Path | None = None) -> float:
    """A fresh run (``train.resume=none``) of ``run_trainer``; returns its wall seconds."""
    return run_trainer(out_dir, ["train.resume=none", *overrides], config)


def curve(out_dir: Path) -> list[dict[str, float]]:
    """(step, FLOPs seen, val loss, seconds since the run's first event) at every evaluation."""
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    flops = {s.step: s.value for s in events.Scalars("train/flops_seen")}
    start = min(s.wall_time for s in events.Scalars("train/loss"))
    return [
        {"step": s.step, "flops": flops[s.step], "val_loss": s.value, "seconds": s.wall_time - start}
        for s in events.Scalars("val/loss")
        if s.step in flops
    ]
