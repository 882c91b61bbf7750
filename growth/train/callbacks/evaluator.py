"""Evaluate every ``interval`` applied steps and at the end: the module's validation scalars for the
trained weights and, with EMA, for the averaged ones (suffix ``_ema``), logged against the step and
(under ``by_tokens/``) against tokens seen, so grown and scratch runs lay over each other."""

from __future__ import annotations

from growth.train.callback import Callback
from growth.train.callbacks.ema import averaged_weights


class Evaluator(Callback):
    # After the EMA's update; before the checkpointer, which reuses this step's val/loss, and whose
    # growth points include an ``at_step: auto`` stage decided in this evaluation's post_eval.
    priority = 70

    def __init__(self, interval: int):
        self.interval = interval
        self.last: dict[str, float] = {}  # the latest evaluation, for the run's summary

    def post_step(self, trainer, result) -> None:
        if result.applied and (trainer.state.step % self.interval == 0 or trainer.is_last_step):
            self.evaluate(trainer)

    def evaluate(self, trainer) -> dict[str, float]:
        scalars = trainer.module.eval_metrics(trainer.engine)
        ema = averaged_weights(trainer)
        if ema is not None:
            with ema.swapped_in():
                scalars.update(
                    {f"{k}_ema": v for k, v in trainer.module.eval_metrics(trainer.engine).items()}
                )
        trainer.log(trainer.state.step, scalars)
        trainer.log(
            trainer.state.tokens_seen, {f"by_tokens/{k.replace('/', '_')}": v for k, v in scalars.items()}
        )
        self.last = scalars
        trainer.call("post_eval", scalars)
        return scalars
