"""The grown path's knobs, one field per ablation, and the ablations themselves.

A ``Recipe`` says how the small model becomes the large one inside one run (``train.growth``): when
(``fraction`` of the budget's FLOPs spent before the last growth, or the staged-training slope rule),
in how many jumps, along which dimensions, with which LR schedule across the growth points and which
operators. ``ABLATIONS`` (the large-only protocol's) and ``ENVELOPE_ABLATIONS`` change one thing at a time
against the default recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    fraction: float = 0.75  # share of the budget's FLOPs spent before the (last) growth; the best measured
    #   (docs/growth_benchmark.md: 10/25/50/75% and the slope rule; the headline was measured at 0.5)
    growth_point: str = "fixed"  # fixed (fraction) | slope (Shen et al. 2022: grow when the small model's
    #   loss decrease per FLOP falls below the large model's at the same loss)
    stages: str = (
        "one"  # one (small -> large in one jump) | two (2x width, then 2x depth; fraction split evenly)
    )
    dims: str = "both"  # both | width (the small model has the large depth) | depth (the large width)
    schedule: str = (
        "one"  # one (train.growth, one WSD schedule) | restarted (expand + init_from, cosine from the peak)
    )
    rewarmup_steps: int = (
        0  # after each growth, ramp the LR from 0 to the scheduled value over this many steps
    )
    noise_std: float = 1e-3
    split: str = "equal"  # equal | lemon
    depth_operator: str = "auto"  # auto (zero-writer for Pre-LN) | ramp | stack
    optimizer: str = "grown"  # grown | reset

    def stage(self, at_step: int, model: dict, seed: int) -> dict:
        """One ``train.growth`` stage with this recipe's operators."""
        return {
            "at_step": at_step,
            "model": model,
            "noise_std": self.noise_std,
            "optimizer": self.optimizer,
            "rewarmup_steps": self.rewarmup_steps,
            "seed": seed,
            "depth_operator": self.depth_operator,
            "split": self.split,
        }

    def changed(self, **fields) -> Recipe:
        return dataclasses.replace(self, **fields)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT = Recipe()

# name -> arms (label, fields changed from the default); the default itself is every ablation's first arm.
ABLATIONS: dict[str, list[tuple[str, dict]]] = {
    "growth_point": [(f"{f:.0%} of FLOPs", {"fraction": f}) for f in (0.1, 0.25, 0.5)]
    + [("slope rule", {"growth_point": "slope"})],
    "schedule": [
        ("re-warm 20 steps", {"rewarmup_steps": 20}),
        ("restarted cosine (expand + init_from)", {"schedule": "restarted"}),
    ],
    "stages": [("two 2x stages", {"stages": "two"})],
    "dims": [("width only", {"dims": "width"}), ("depth only", {"dims": "depth"})],
    "optimizer": [("reset moments", {"optimizer": "reset"})],
    "noise": [
        ("noise 0", {"noise_std": 0.0}),
        ("noise 1e-2", {"noise_std": 1e-2}),
        ("lemon split", {"split": "lemon"}),
    ],
    "depth_operator": [("ramp", {"depth_operator": "ramp"}), ("stack", {"depth_operator": "stack"})],
}


# The envelope protocol's (tools/bench_growth.py without --large-only): a change names a Recipe field, an
# Envelope field (growth_at) or ``small`` (width: the small model has the large depth; depth: the large width).
ENVELOPE_ABLATIONS: dict[str, list[tuple[str, dict]]] = {
    "growth_point": [(f"grow at {u:g} units", {"growth_at": u}) for u in (0.25, 0.5, 1.5)],
    "transition": [
        ("re-warm the LR over 100 steps", {"rewarmup_steps": 100}),
        ("reset Adam moments", {"optimizer": "reset"}),
        ("no symmetry-breaking noise", {"noise_std": 0.0}),
        ("noise 1e-2", {"noise_std": 1e-2}),
        ("stacked depth (G_stack, not exact)", {"depth_operator": "stack"}),
    ],
    # How hard to break the copies' symmetry after a block-tiled widening (the zero-sum noise keeps the function
    # exact at any size): the transition ablation measured 0 < 1e-3 < 1e-2 in loss at every budget.
    "symmetry": [
        ("noise 1e-1", {"noise_std": 1e-1}),
        ("noise 1e-2 + stacked depth", {"noise_std": 1e-2, "depth_operator": "stack"}),
        ("noise 3e-2", {"noise_std": 3e-2}),
        ("noise 1e-2", {"noise_std": 1e-2}),
    ],
    "dims": [
        ("width only (small has the large depth)", {"small": "width"}),
        ("depth only (small has the large width)", {"small": "depth"}),
    ],
}
RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)}


def ablation_arms(
    name: str, base: Recipe = DEFAULT, table: dict[str, list[tuple[str, dict]]] = ABLATIONS
) -> list[tuple[str, Recipe]]:
    """The default recipe, then each arm of ``table[name]`` with its Recipe fields changed (the protocol
    applies the others)."""
    arms = [
        (label, base.changed(**{k: v for k, v in fields.items() if k in RECIPE_FIELDS}))
        for label, fields in table[name]
    ]
    return [("default recipe", base), *arms]
