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

The step of each growth point is saved (applied or not): the small model, which a user can go back to and
which the growth stage's errors name. A run told to stop (``GracefulStop``) is saved at the step it stops at
(``on_stop_requested``). Loading — finding the checkpoint a run resumes from, checking and restoring it — is
this callback's ``loader`` (``checkpoint_loader.py``): one owner for the folder and its format.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from growth.checkpoint import non_finite_weights, resume_checkpoint, save_checkpoint, tag_for
from growth.checkpoint.layout import is_complete
from growth.config import Config
from growth.train.auto_growth import AUTO
from growth.train.callback import Callback
from growth.train.callbacks.checkpoint_loader import CheckpointLoader
from growth.train.callbacks.ema import averaged_weights
from growth.train.trainer import TrainingDiverged

PROBE = "val/loss"


class Checkpointer(Callback):
    # After the EMA's update and the evaluator (whose val/loss it reuses); before GrowthSchedule's
    # pre_step needs the small model saved, and before GracefulStop asks for this step's checkpoint.
    priority = 60

    def __init__(self, root: Path, interval: int, config: Config):
        self.root, self.interval, self.config = root, interval, config
        self.keep = config.train.keep_checkpoints
        self.loader = CheckpointLoader(root, config)
        self.probe_counts: bool | None = None  # whether PROBE was finite for the weights the run started from
        self.evaluated: tuple[int, dict[str, float]] | None = None  # the evaluator's latest (step, scalars)

    @property
    def growth_points(self) -> list[int]:
        """Steps after which a stage grows (an ``auto`` stage once decided): saved, and exempt from ``keep``."""
        return [stage.at_step for stage in self.config.train.growth if stage.at_step != AUTO]

    def pre_train(self, trainer) -> None:
        trainer.last_checkpoint = resume_checkpoint(self.root)[0]
        trainer.recovery_note = self.note(trainer.last_checkpoint)
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
        due = step % self.interval == 0 or step in self.config.train.save_steps or trainer.is_last_step
        grows_next = step in self.growth_points and not trainer.is_last_step
        if (result.applied and due) or grows_next:
            self.save(trainer)

    def on_stop_requested(self, trainer) -> None:
        """The run stops after this step: save it, unless a checkpoint of it exists already (this step was
        due, or a growth point). Collective."""
        here = self.root / tag_for(trainer.state.step)
        if is_complete(here):
            trainer.last_checkpoint = here
        else:
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
        trainer.last_checkpoint = folder
        trainer.recovery_note = self.note(folder)
        trainer.call("post_checkpoint", folder)
        return folder

    def state_dict(self) -> dict:
        return {"probe_counts": self.probe_counts} if self.probe_counts is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "probe_counts" in state:
            self.probe_counts = bool(state["probe_counts"])
