"""Callbacks: what is cross-cutting in a run (checkpoints, evaluation, EMA, logging, growth events)
hooks into the loop here instead of living in it. Called on every rank, highest ``priority`` first (as in
OLMo-core); callbacks of equal priority keep the order they were given in. The built-in callbacks' order
and why it is that order: docs/architecture.md, "Callback order". A callback of your own has priority 0:
after every built-in one, before ``GracefulStop`` (which must see the step fully logged and saved).

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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from growth.train.module import StepResult
    from growth.train.trainer import Trainer


@dataclass(frozen=True)
class ModelReplacement:
    """What callbacks are told when the trainer swaps in another network and engine (``Trainer.replace_model``,
    called by a growth stage): state grown alongside the weights, for the callbacks that hold it."""

    ema: dict | None = (
        None  # the grown averaged weights ({"decay", "updates", "weights"}), for the EMA's owner
    )
    ramp_layers: tuple[int, ...] = ()  # new layers entering at m = 0 (MSG), raised to 1 by ``DepthRamp``
    ramp_steps: int = 0  # over this many optimizer steps


class Callback:
    priority: int = 0  # higher runs first at every hook (the built-in order: docs/architecture.md)

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

    def log_text(self, trainer: Trainer, step: int, texts: dict[str, str], line: str) -> None:
        """Texts by tag (e.g. sampled continuations) and a console ``line`` about them, reported through
        ``trainer.log_text`` (loggers write them)."""

    def on_model_replaced(self, trainer: Trainer, replacement: ModelReplacement) -> None:
        """After ``trainer.replace_model``: ``trainer.module.network`` and ``trainer.engine`` are new, so
        anything held about the old ones (averaged weights, gates, cached modules) must follow."""

    def on_stop_requested(self, trainer: Trainer) -> None:
        """After a step the run stops at (a signal, ``GracefulStop``), before the loop ends (collective)."""

    def on_error(self, trainer: Trainer, error: BaseException) -> None: ...
    def post_train(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
