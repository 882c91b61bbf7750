"""Callbacks: what is cross-cutting in a run (checkpoints, evaluation, EMA, logging, growth events)
hooks into the loop here instead of living in it. Called on every rank, in list order.

Add one from Python without editing the loop::

    class PrintLoss(Callback):
        def post_step(self, trainer, result):
            if trainer.world.is_main and result.applied:
                print(trainer.state.step, result.loss)

    train(config, world, callbacks=[PrintLoss()])

A callback with ``state_dict``/``load_state_dict`` is saved in each checkpoint's ``run_state.json``
under its ``name`` and restored on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from growth.train.module import StepResult
    from growth.train.trainer import Trainer


class Callback:
    @property
    def name(self) -> str:
        return type(self).__name__

    def pre_train(self, trainer: Trainer) -> None: ...
    def pre_step(self, trainer: Trainer) -> None: ...
    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        """After every optimizer step, applied or skipped (``result.applied``)."""

    def post_eval(self, trainer: Trainer, scalars: dict[str, float]) -> None: ...
    def pre_publish_checkpoint(self, trainer: Trainer, folder: Path) -> None:
        """Rank 0, when every file of a checkpoint is written and before it is published as ``latest``."""

    def post_checkpoint(self, trainer: Trainer, folder: Path) -> None: ...
    def log_metrics(self, trainer: Trainer, step: int, scalars: dict[str, float]) -> None:
        """Scalars any part of the run reports through ``trainer.log`` (loggers write them)."""

    def on_error(self, trainer: Trainer, error: BaseException) -> None: ...
    def post_train(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
