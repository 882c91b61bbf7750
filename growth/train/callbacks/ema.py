"""The EMA of the weights (``growth/train/ema.py``): its one owner, updated once per *applied*
optimizer step. The evaluator, the checkpointer and a growth stage read it here (``averaged_weights``);
when the trainer swaps in a grown model, ``on_model_replaced`` averages the new parameters from then on,
starting from the grown averaged weights."""

from __future__ import annotations

from growth.train.callback import Callback, ModelReplacement
from growth.train.ema import EMA


class EMAUpdater(Callback):
    priority = 100  # first: the EMA is updated before anything evaluates or saves it

    def __init__(self, ema: EMA):
        self.ema = ema

    def post_step(self, trainer, result) -> None:
        if result.applied:
            self.ema.update()

    def on_model_replaced(self, trainer, replacement: ModelReplacement) -> None:
        """Average the new engine's parameters, starting from the averaged weights grown alongside."""
        ema = EMA(trainer.engine.module, self.ema.decay, self.ema.warmup)
        if replacement.ema is not None:
            ema.load_state_dict(replacement.ema)
        self.ema = ema


def averaged_weights(trainer) -> EMA | None:
    """The run's EMA, or None. The one place a callback looks another up by type: reading the averaged
    weights (to evaluate, save or grow them) is a question, which a hook or the order cannot answer."""
    owner = trainer.callback(EMAUpdater)
    return owner.ema if owner is not None else None
