"""The EMA of the weights (``growth/train/ema.py``): its one owner, updated once per *applied*
optimizer step. The evaluator and the checkpointer find it here (``averaged_weights``), so a
rebuilt engine (a growth stage) replaces it in one place."""

from __future__ import annotations

from growth.train.callback import Callback
from growth.train.ema import EMA


class EMAUpdater(Callback):
    def __init__(self, ema: EMA):
        self.ema = ema

    def post_step(self, trainer, result) -> None:
        if result.applied:
            self.ema.update()


def averaged_weights(trainer) -> EMA | None:
    owner = trainer.callback(EMAUpdater)
    return owner.ema if owner is not None else None
