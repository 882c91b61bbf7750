"""Training jobs run on every rank by the distributed tests (importable, so spawn can find them)."""

from __future__ import annotations

from pathlib import Path

import torch

from growth.config import load_config
from growth.train.callback import Callback
from growth.train.callbacks import EMAUpdater
from growth.train.run import train
from tests.support.faults import KillDuringSave, NaNLoss, WeightRecorder


def tiny_run_overrides(corpus: Path, cache: Path) -> list[str]:
    """A model and run small enough for many DeepSpeed runs in a CPU test suite."""
    return [
        "model.vocab_size=384",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.head_dim=16",
        "model.d_ff=64",
        "model.max_seq_len=32",
        "data.seq_len=32",
        f"data.corpus={corpus}",
        f"data.cache_dir={cache}",
        "train.max_steps=4",
        "train.warmup_steps=1",
        "train.lr=3e-3",
        "train.eval_interval=2",
        "train.save_interval=2",
        "train.eval_batches=2",
        "train.log_interval=1",
    ]


def train_job(world, overrides: list[str], result_file: str, record_params: bool = False) -> None:
    """Train with ``overrides``; rank 0 writes losses (and per-step weights) to ``result_file``."""
    config = load_config(overrides=overrides)
    recorder = WeightRecorder()
    trainer = train(config, world, callbacks=[recorder] if record_params else [])
    if world.is_main:
        torch.save({"losses": trainer.losses, "snapshots": recorder.snapshots}, result_file)


def train_many_job(world, runs: list[tuple[list[str], str, bool]]) -> None:
    """Several runs in one set of processes (spawning and importing DeepSpeed once)."""
    for overrides, result_file, record in runs:
        train_job(world, overrides, result_file, record)


class GradNormRecorder(Callback):
    def __init__(self):
        self.norms: list[float] = []

    def post_step(self, trainer, result) -> None:
        self.norms.append(float(trainer.engine.get_global_grad_norm()))


def grad_norm_job(world, overrides: list[str], result_file: str) -> None:
    recorder = GradNormRecorder()
    trainer = train(load_config(overrides=overrides), world, callbacks=[recorder])
    if world.is_main:
        torch.save({"losses": trainer.losses, "grad_norms": recorder.norms}, result_file)


def nan_job(world, overrides: list[str], result_file: str, nan_steps: list[int], nan_rank: int) -> None:
    """Rank ``nan_rank`` produces a NaN loss at the given steps (1-based); record what happened."""
    recorder = WeightRecorder()
    try:
        trainer = train(
            load_config(overrides=overrides), world, callbacks=[NaNLoss(nan_steps, nan_rank), recorder]
        )
        ema = trainer.callback(EMAUpdater)
        outcome = {
            "losses": trainer.losses,
            "skipped": trainer.state.skipped_steps,
            "error": None,
            "lr": trainer.engine.get_lr()[0],
            "ema_updates": ema.ema.updates if ema else None,
        }
    except Exception as err:  # noqa: BLE001 - the test inspects it
        outcome = {"error": f"{type(err).__name__}: {err}"}
    if world.is_main:
        torch.save({**outcome, "snapshots": recorder.snapshots}, result_file)


def interrupted_save_job(world, overrides: list[str]) -> None:
    """Die while writing the second checkpoint, after every file but before it is published."""
    try:
        train(load_config(overrides=overrides), world, callbacks=[KillDuringSave(2)])
    except KeyboardInterrupt:
        pass


def train_from_config_job(world, config_path: str, runs: list[tuple[list[str], str, bool]]) -> None:
    """Runs that start from a YAML (e.g. a grown checkpoint's config.yaml) plus overrides."""
    for overrides, result_file, _ in runs:
        trainer = train(load_config(config_path, overrides), world)
        if world.is_main:
            torch.save({"losses": trainer.losses}, result_file)
