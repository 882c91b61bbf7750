"""Ramped depth growth (MSG, masked structural growth): a new layer L computes h <- m L(h) + (1 - m) h.

m = 0 at the growth step, so the grown model is the small model's function whatever the residual kind
(Pre-LN, Post-LN, DeepNorm); then m rises linearly, m = j / R at the j-th optimizer step after the growth
(R = ``ramp_steps``; skipped steps count, as they do for the step counter), and after R steps m = 1 and
the gate is folded away (``growth.model.transformer.fold_depth_gate``): the trained model is a plain one,
with no leftover gate.

A ramp is ``{"layers": [...], "steps": R, "start": s}``: m = (step - s) / R. Ramps are this callback's
state (``run_state.json``), so a resume mid-ramp gives the same m at every step (the gate itself is not
in the weights). They begin at an in-run growth (``on_model_replaced``: the grown model's new layers) or come with
``train.init_from``: ``tools/expand.py`` writes one into the grown folder's run state (``ramp_state``), and a
training checkpoint saved mid-ramp carries its own; a fresh run started from either continues it.
"""

from __future__ import annotations

from pathlib import Path

from growth import checkpoint as ckpt
from growth.expand.grow_state import RAMP_STATE
from growth.model.transformer import depth_gates, fold_depth_gate, set_depth_gate
from growth.train.callback import Callback, ModelReplacement


class DepthRamp(Callback):
    priority = 30  # pre_step after GrowthSchedule (a grown model's gates), before TextSamples samples them

    def __init__(self, init_from: str = ""):
        self.init_from = init_from
        self.ramps: list[dict] = []
        self.restored = False

    @property
    def name(self) -> str:
        return RAMP_STATE

    def state_dict(self) -> dict:
        return {"ramps": [dict(ramp) for ramp in self.ramps]}

    def load_state_dict(self, state: dict) -> None:
        self.ramps = [dict(ramp) for ramp in state.get("ramps", [])]
        self.restored = True

    # -- the ramp ---------------------------------------------------------------------------------
    def begin(self, trainer, layers: list[int], steps: int) -> None:
        """New layers at m = 0 from now (``trainer.state.step``) on."""
        self.ramps.append(
            {"layers": [int(i) for i in layers], "steps": int(steps), "start": int(trainer.state.step)}
        )
        self._apply(trainer)

    def on_model_replaced(self, trainer, replacement: ModelReplacement) -> None:
        if replacement.ramp_layers:
            self.begin(trainer, list(replacement.ramp_layers), replacement.ramp_steps)

    def active(self, trainer) -> bool:
        return any(trainer.state.step - ramp["start"] < ramp["steps"] for ramp in self.ramps)

    def gates(self, trainer) -> dict[int, float]:
        """{layer: m} the network holds now."""
        return depth_gates(trainer.module.network.layers)

    def pre_train(self, trainer) -> None:
        if not self.restored and self.init_from:
            self.ramps = carried_ramps(self.init_from, trainer.state.step)
        self._apply(trainer)

    def pre_step(self, trainer) -> None:
        self._apply(trainer)

    def post_step(self, trainer, result) -> None:
        gates = self.gates(trainer)  # the m this step used
        if gates:
            trainer.log(
                trainer.state.step, {"growth/ramp_m": min(gates.values()), "growth/ramped_layers": len(gates)}
            )
        self._apply(trainer)  # the next step's m; a finished ramp is folded

    def _apply(self, trainer) -> None:
        layers = trainer.module.network.layers
        ongoing = []
        for ramp in self.ramps:
            done = trainer.state.step - ramp["start"]
            if done >= ramp["steps"]:
                for index in ramp["layers"]:
                    fold_depth_gate(layers, index)
                continue
            for index in ramp["layers"]:
                set_depth_gate(layers, index, max(done, 0) / ramp["steps"])
            ongoing.append(ramp)
        self.ramps = ongoing


def carried_ramps(init_from: str, step: int) -> list[dict]:
    """The ramps a ``train.init_from`` checkpoint is in the middle of, re-based on this run's step count."""
    folder = ckpt.resolve_checkpoint(Path(init_from), "train.init_from")
    source = ckpt.run_state_or_empty(folder)
    ramps = source.callbacks.get(RAMP_STATE, {}).get("ramps", [])
    return [
        {**ramp, "start": step - (source.step - ramp["start"])}
        for ramp in ramps
        if source.step - ramp["start"] < ramp["steps"]
    ]
