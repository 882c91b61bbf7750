"""What one growth may choose besides the target model: the operators (docs/growth_operators.md "How each
block grows", docs/design.md Sec. 4). The same options come from ``tools/expand.py`` flags and from a ``train.growth``
stage (``growth.train.config.GrowthStage``, a subclass: the fields are declared once, here), so both
paths grow alike.

    width_operator   tiled (default)  the stream [h; h; ...; h; 0_r]; readers W/k; any D >= d; heads grow
                                      in number or in size (head_dim)
                     interleaved      Su's "repeat and divide by sqrt(k)": every channel repeated k times in
                                      place, the stream scaled by 1/sqrt(k); integer multiples, heads grow in
                                      size only, no RoPE (refused where it is not exact)
    depth_operator   auto (default)   zero for Pre-LN, ramp for Post-LN and DeepNorm
                     zero             new layers with zero writers: the identity in a Pre-LN stack (exact)
                     ramp             h <- m L(h) + (1 - m) h, m: 0 -> 1 over ramp_steps optimizer steps
                                      (exact at the growth step for every residual kind; MSG)
                     stack            G_stack: the old stack repeated to fill the new depth (not exact;
                                      the report and growth event record the loss change)
    noise            absolute         zero-sum noise of std noise_std
                     relative         std noise_std x the RMS of each weight
    split            equal            each copy's reader gets 1/c
                     lemon            unequal splits (LEMON): the first copy alpha, the others (1 - alpha)/(c - 1)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from growth.expand.errors import GrowthError

WIDTH_OPERATORS = ("tiled", "interleaved")
DEPTH_OPERATORS = ("auto", "ramp", "zero", "stack")
NOISE_KINDS = ("absolute", "relative")
SPLITS = ("equal", "lemon")
OPTIMIZER_STATES = ("grown", "reset")
# The string options and what each accepts (a train.growth stage's validator names its key with them).
OPERATOR_CHOICES = {
    "optimizer": OPTIMIZER_STATES,
    "noise": NOISE_KINDS,
    "split": SPLITS,
    "width_operator": WIDTH_OPERATORS,
    "depth_operator": DEPTH_OPERATORS,
}


# Not frozen: a train.growth stage subclasses it and auto-growth sets the stage's at_step when it decides.
@dataclass
class GrowthOptions:
    noise_std: float = 1e-3  # zero-sum symmetry-breaking noise (exact at any value); 0: none
    seed: int = 0  # seeds the noise and new layers
    optimizer: str = "grown"  # grown (Adam moments mapped with the weights) | reset
    noise: str = "absolute"  # absolute | relative (noise_std x each weight's RMS)
    split: str = "equal"  # equal | lemon (reader shares alpha, (1 - alpha)/(c - 1), ...: exact for any alpha)
    split_alpha: float = 0.7  # lemon: the first copy's share
    width_operator: str = "tiled"  # tiled | interleaved (Su)
    depth_operator: str = "auto"  # auto (zero for Pre-LN, ramp for Post-LN/DeepNorm) | ramp | zero | stack
    ramp_steps: int = 100  # ramp: optimizer steps over which m rises linearly from 0 to 1

    def __post_init__(self) -> None:
        for name, allowed in OPERATOR_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise GrowthError(f"{name} must be one of {' | '.join(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise GrowthError(
                f"noise_std={self.noise_std} must be a finite number >= 0 (0: no symmetry breaking)"
            )
        if not math.isfinite(self.split_alpha):
            raise GrowthError(f"split_alpha={self.split_alpha} must be a finite number (any alpha is exact)")
        if not (isinstance(self.ramp_steps, int) and self.ramp_steps >= 1):
            raise GrowthError(
                f"ramp_steps={self.ramp_steps} must be an integer >= 1 (m rises over that many steps)"
            )

    @classmethod
    def of(cls, source: Any, **overrides: Any) -> GrowthOptions:
        """The options an object with the same attribute names carries (a ``GrowthStage``, argparse's
        namespace), with ``overrides`` on top."""
        values = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if hasattr(source, f.name)}
        return cls(**{**values, **overrides})

    def depth_for(self, residual_norm_after_add: bool) -> str:
        """The depth operator ``auto`` stands for: zero-writer layers where they are the identity (Pre-LN),
        else the ramp."""
        if self.depth_operator != "auto":
            return self.depth_operator
        return "ramp" if residual_norm_after_add else "zero"
