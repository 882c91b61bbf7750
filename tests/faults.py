"""Fault-injection callbacks for the tests: they break a run through the loop's own hooks (a
forward hook on the network, a hook before a checkpoint is published), not by patching modules."""

from __future__ import annotations

import torch

from growth.train.callback import Callback


class NaNLoss(Callback):
    """Rank ``rank`` computes non-finite logits during the given (1-based) optimizer steps."""

    def __init__(self, steps: list[int], rank: int):
        self.steps, self.rank = set(steps), rank
        self.handle = None

    def pre_step(self, trainer) -> None:
        if trainer.state.step + 1 in self.steps and trainer.world.rank == self.rank:
            self.handle = trainer.engine.module.register_forward_hook(lambda module, args, out: out * float("nan"))

    def post_step(self, trainer, result) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class KillDuringSave(Callback):
    """Die (as if killed) while writing checkpoint number ``nth``: after every file, before ``latest``."""

    def __init__(self, nth: int):
        self.nth, self.saves = nth, 0

    def pre_publish_checkpoint(self, trainer, folder) -> None:
        self.saves += 1
        if self.saves == self.nth:
            raise KeyboardInterrupt("killed during save")


class WeightRecorder(Callback):
    """Consolidated weights after every step (collective under ZeRO-3: all ranks call it)."""

    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def post_step(self, trainer, result) -> None:
        from growth.checkpoint import consolidated_state_dict

        self.snapshots.append(consolidated_state_dict(trainer.engine, trainer.world))
