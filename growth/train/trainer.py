"""The loop: step counting, non-finite skips and divergence, and the callbacks around it.

It knows nothing about tokens or sentences: a ``TrainModule`` builds and runs each step, and
callbacks evaluate, save, average and log (``growth/train/callbacks/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from growth.checkpoint import RunState
from growth.distributed import World
from growth.train.callback import Callback, ModelReplacement
from growth.train.module import StepResult, TrainModule

C = TypeVar("C", bound=Callback)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps."""


class Trainer:
    def __init__(
        self,
        engine,
        module: TrainModule,
        state: RunState,
        world: World,
        max_steps: int,
        max_bad_steps: int,
        callbacks: Sequence[Callback] = (),
    ):
        self.engine, self.module, self.state, self.world = engine, module, state, world
        self.max_steps, self.max_bad_steps = max_steps, max_bad_steps
        # Highest priority first; sorted() is stable, so equal priorities keep the order given.
        self.callbacks = sorted(callbacks, key=lambda callback: -callback.priority)
        self.losses: list[float] = []  # every applied step's global loss, for summaries and tests
        self.bad_in_a_row = 0
        self.recovery_note = ""  # what a user can go back to (the checkpointer keeps it true); "" = nothing
        self.last_checkpoint: Path | None = None  # the newest good checkpoint (kept true by the checkpointer)
        self.stopped = None  # set by GracefulStop (callbacks/graceful_stop.py) to end the loop after a step

    # -- callbacks ------------------------------------------------------------------------------
    def call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.call("log_metrics", step, scalars)

    def log_text(self, step: int, texts: dict[str, str], line: str) -> None:
        self.call("log_text", step, texts, line)

    def callback(self, kind: type[C]) -> C | None:
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    def callback_states(self) -> dict[str, dict]:
        return {c.name: state for c in self.callbacks if (state := c.state_dict())}

    def load_callback_states(self, states: dict[str, dict]) -> None:
        for callback in self.callbacks:
            if callback.name in states:
                callback.load_state_dict(states[callback.name])

    # -- the model --------------------------------------------------------------------------------
    def replace_model(
        self, network: nn.Module, build_engine: Callable[[nn.Module], Any], replacement: ModelReplacement
    ) -> None:
        """Train ``network`` from here on (a growth stage's grown model): the old engine is destroyed first
        (its memory is freed before the new one is allocated), ``build_engine(network)`` makes the new one,
        and every callback hears ``on_model_replaced`` so what it holds about the model follows."""
        self.engine.destroy()
        self.module.network = network
        self.engine = build_engine(network)
        self.call("on_model_replaced", replacement)

    @property
    def is_last_step(self) -> bool:
        return self.state.step >= self.max_steps

    # -- the loop -------------------------------------------------------------------------------
    def step(self) -> StepResult:
        self.call("pre_step")
        result = self.module.train_batch(self.engine, self.module.micro_batches())
        self.state.step += 1
        if result.applied:
            self.bad_in_a_row = 0
            self.state.tokens_seen += result.tokens
            self.state.flops_seen += result.flops
            self.losses.append(result.loss)
        else:
            self.bad_in_a_row += 1
            self.state.skipped_steps += 1
        self.call("post_step", result)
        if self.bad_in_a_row > self.max_bad_steps:
            note = self.recovery_note or "no checkpoint has been written, so there is nothing to resume from"
            raise TrainingDiverged(
                f"{self.bad_in_a_row} non-finite steps in a row at step {self.state.step}; "
                f"lower train.lr or check the data; {note}"
            )
        return result

    def fit(self) -> RunState:
        self.call("pre_train")
        try:
            while self.state.step < self.max_steps and self.stopped is None:
                self.step()
        except BaseException as error:
            self.call("on_error", error)
            raise
        self.call("post_train")
        return self.state
