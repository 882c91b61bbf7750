"""The depth-growth gates a checkpoint was saved with, read from its run state.

Layers that depth growth ramps in compute h <- m L(h) + (1 - m) h (``growth/model/transformer.py``); m is not in
the weights but follows from the ramps in ``run_state.json`` (``growth/train/callbacks/depth_ramp.py``: m =
(step - start) / steps until it reaches 1). Whoever runs a checkpoint outside training (``tools/generate.py``)
needs them to compute what the run computed: a grown checkpoint at m = 0 is the small model's function.
"""

from __future__ import annotations

from growth.checkpoint.layout import RunState

# The ``DepthRamp`` callback's name: its ramps are saved under it in a run state's ``callbacks``.
RAMP_STATE = "DepthRamp"


def saved_depth_gates(state: RunState) -> dict[int, float]:
    """{layer: m} of the layers still ramping in at ``state.step``, as the run's next step would set them."""
    gates = {}
    for ramp in state.callbacks.get(RAMP_STATE, {}).get("ramps", []):
        done = state.step - ramp["start"]
        if done < ramp["steps"]:
            gates.update({int(layer): max(done, 0) / ramp["steps"] for layer in ramp["layers"]})
    return gates
