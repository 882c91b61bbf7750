"""Save a checkpoint every ``interval`` applied steps and at the end (``growth/checkpoint/``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from growth.checkpoint import save_checkpoint
from growth.config import Config
from growth.train.callback import Callback
from growth.train.callbacks.ema import averaged_weights


class Checkpointer(Callback):
    def __init__(self, root: Path, interval: int, config: Config):
        self.root, self.interval, self.config = root, interval, config

    def pre_train(self, trainer) -> None:
        trainer.recovery_note = f"checkpoints in {self.root} are as they were"

    def post_step(self, trainer, result) -> None:
        if result.applied and (trainer.state.step % self.interval == 0 or trainer.is_last_step):
            self.save(trainer)

    def save(self, trainer) -> Path:
        state = trainer.state
        state.sampler = trainer.module.state_dict()
        state.callbacks = trainer.callback_states()
        # Each checkpoint records the model it holds (after a growth stage, the grown one).
        config_yaml = dataclasses.replace(self.config, model=trainer.module.network.config).to_yaml()
        folder = save_checkpoint(trainer.engine, self.root, state, config_yaml, trainer.world, averaged_weights(trainer),
                                 trainer.module.extra_weights(),
                                 before_publish=lambda f: trainer.call("pre_publish_checkpoint", f))
        trainer.recovery_note = f"the last good checkpoint, {folder}, is intact"
        trainer.call("post_checkpoint", folder)
        return folder
