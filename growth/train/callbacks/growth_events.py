"""Growth events a run carries (from ``tools/expand.py`` or an in-run stage), on TensorBoard at the
tokens seen when they happened, so both phases line up with a scratch run."""

from __future__ import annotations

from growth.train.callback import Callback

GROWTH_SCALARS = ("loss_before", "loss_after", "params_before", "params_after", "source_step")


class GrowthEventLogger(Callback):
    priority = 80  # after the logger it writes through

    def pre_train(self, trainer) -> None:
        for event in trainer.state.growth_events:
            trainer.log(
                int(event["tokens_seen"]),
                {f"growth/{k}": float(event[k]) for k in GROWTH_SCALARS if k in event},
            )
