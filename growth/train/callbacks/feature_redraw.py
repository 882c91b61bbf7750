"""Redraw the random features of random-feature attention (``model.attention=performer``) every N steps.

Performer keeps its feature matrix W fixed between redraws (Choromanski et al. 2021, Sec. 4; the reference
redraws every ``feature_redraw_interval`` calls). Here the redraw happens before optimizer step s + 1 when s is
a positive multiple of ``model.performer_redraw_interval``, from a generator seeded by (train.seed, s, layer):
every rank draws the same W with no communication, and a run resumed from the checkpoint of step s redraws
the same W again, so resuming is bit-exact whether W came from the checkpoint or from the redraw.
"""

from __future__ import annotations

import torch

from growth.train.callback import Callback


def redraw_seed(seed: int, step: int, index: int) -> int:
    """One seed per (run seed, step, layer), distinct across them."""
    return (seed * 1_000_003 + step) * 10_007 + index


class FeatureRedraw(Callback):
    priority = 40  # pre_step after GrowthSchedule: a grown model's features are redrawn too

    def __init__(self, interval: int, seed: int):
        self.interval, self.seed = interval, seed

    def pre_step(self, trainer) -> None:
        step = trainer.state.step
        if step == 0 or step % self.interval:
            return
        redrawable = [m for m in trainer.module.network.modules() if hasattr(m, "redraw_features")]
        for index, module in enumerate(redrawable):
            module.redraw_features(torch.Generator().manual_seed(redraw_seed(self.seed, step, index)))
