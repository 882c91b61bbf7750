"""Save a checkpoint every ``interval`` applied steps and at the end (``growth/checkpoint/``) — only a
good one.

A checkpoint is written and published as ``latest`` only if its step was applied, every weight is
finite, and the weights give a finite validation loss (``val/loss`` of the module's evaluation;
the evaluator's when it has just run, else one more evaluation). An update can leave weights that
are finite but so large that the next forward overflows (``train.lr=1e9``): such a checkpoint would
make a resume diverge at once, so it is not written, and ``latest`` stays on the last good one.
``val/loss`` counts only if it was finite at the start of the run (a validation split too small
for a loss gives NaN there from the start). ``train.keep_checkpoints`` > 0 keeps the newest N, and
the checkpoints of the growth points (``train.growth[i].at_step``: the small models) besides.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from growth.checkpoint import non_finite_weights, resume_checkpoint, save_checkpoint
from growth.config import Config
from growth.train.callback import Callback
from growth.train.callbacks.ema import averaged_weights
from growth.train.trainer import TrainingDiverged

PROBE = "val/loss"


class Checkpointer(Callback):
    def __init__(self, root: Path, interval: int, config: Config):
        self.root, self.interval, self.config = root, interval, config
        self.keep = config.train.keep_checkpoints
        self.growth_points = [stage.at_step for stage in config.train.growth]  # exempt from ``keep``
        self.probe_counts: bool | None = None  # whether PROBE was finite for the weights the run started from
        self.evaluated: tuple[int, dict[str, float]] | None = None  # the evaluator's latest (step, scalars)

    def pre_train(self, trainer) -> None:
        trainer.recovery_note = self.note(resume_checkpoint(self.root)[0])
        if self.probe_counts is None:
            self.probe_counts = math.isfinite(
                trainer.module.eval_metrics(trainer.engine).get(PROBE, math.nan)
            )

    def note(self, folder: Path | None) -> str:
        """What a user can go back to, for the divergence message."""
        if folder is None:
            return "no checkpoint has been written, so there is nothing to resume from; start again with a lower train.lr"
        return (
            f"the last good checkpoint, {folder}, is intact; a relaunch with a lower train.lr continues "
            f"from it (train.resume=auto)"
        )

    def post_eval(self, trainer, scalars: dict[str, float]) -> None:
        self.evaluated = (trainer.state.step, dict(scalars))

    def post_step(self, trainer, result) -> None:
        step = trainer.state.step
        if result.applied and (
            step % self.interval == 0 or step in self.config.train.save_steps or trainer.is_last_step
        ):
            self.save(trainer)

    def unsound(self, trainer) -> str:
        """Why the current weights must not become a checkpoint ("" if they may). Collective."""
        bad = non_finite_weights(trainer.engine.module, trainer.world)
        if bad:
            return f"{len(bad)} parameters hold NaN or infinite values (first: {bad[0]})"
        if self.probe_counts:
            step = trainer.state.step
            scalars = (
                self.evaluated[1]
                if self.evaluated and self.evaluated[0] == step
                else trainer.module.eval_metrics(trainer.engine)
            )
            value = scalars.get(PROBE, math.nan)
            if not math.isfinite(value):
                return f"the weights give {PROBE}={value} (the update of step {step} blew them up)"
        return ""

    def save(self, trainer) -> Path | None:
        """Write and publish a checkpoint of the current state; None if the weights are not good."""
        state = trainer.state
        reason = self.unsound(trainer)
        if reason:
            if trainer.is_last_step:
                raise TrainingDiverged(
                    f"step {state.step}, the last: no final checkpoint written: {reason}; "
                    f"{trainer.recovery_note}"
                )
            if trainer.world.is_main:
                print(
                    f"warning: step {state.step}: no checkpoint written: {reason}; "
                    f"checkpoints/latest stays on the last good one",
                    file=sys.stderr,
                    flush=True,
                )
            return None
        state.sampler = trainer.module.state_dict()
        state.callbacks = trainer.callback_states()
        # Each checkpoint records the model it holds (after a growth stage, the grown one).
        config_yaml = dataclasses.replace(self.config, model=trainer.module.network.config).to_yaml()
        folder = save_checkpoint(
            trainer.engine,
            self.root,
            state,
            config_yaml,
            trainer.world,
            averaged_weights(trainer),
            trainer.module.extra_weights(),
            before_publish=lambda f: trainer.call("pre_publish_checkpoint", f),
            keep=self.keep,
            keep_steps=self.growth_points,
        )
        trainer.recovery_note = self.note(folder)
        trainer.call("post_checkpoint", folder)
        return folder

    def state_dict(self) -> dict:
        return {"probe_counts": self.probe_counts} if self.probe_counts is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "probe_counts" in state:
            self.probe_counts = bool(state["probe_counts"])
