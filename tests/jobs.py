"""Training jobs run on every rank by the distributed tests (importable, so spawn can find them)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from growth.config import load_config
from growth.train.checkpoint import consolidated_state_dict
from growth.train.run import train


def tiny_run_overrides(corpus: Path, cache: Path) -> list[str]:
    """A model and run small enough for many DeepSpeed runs in a CPU test suite."""
    return [
        "model.vocab_size=384", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.head_dim=16",
        "model.d_ff=64", "model.max_seq_len=32", "data.seq_len=32",
        f"data.corpus={corpus}", f"data.cache_dir={cache}",
        "train.max_steps=4", "train.warmup_steps=1", "train.lr=3e-3", "train.eval_interval=2",
        "train.save_interval=2", "train.eval_batches=2", "train.log_interval=1",
    ]


class ParamRecorder:
    """Consolidated weights after every applied step (collective under ZeRO-3: all ranks call it)."""

    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, trainer, result) -> None:
        self.snapshots.append(consolidated_state_dict(trainer.engine))


def train_job(world, overrides: list[str], result_file: str, record_params: bool = False) -> None:
    """Train with ``overrides``; rank 0 writes losses (and per-step weights) to ``result_file``."""
    config = load_config(overrides=overrides)
    recorder = ParamRecorder()
    trainer = train(config, world, callbacks=[recorder] if record_params else [])
    if world.is_main:
        torch.save({"losses": trainer.losses, "snapshots": recorder.snapshots}, result_file)


def train_many_job(world, runs: list[tuple[list[str], str, bool]]) -> None:
    """Several runs in one set of processes (spawning and importing DeepSpeed once)."""
    for overrides, result_file, record in runs:
        train_job(world, overrides, result_file, record)
