"""``train.growth[i].at_step: auto``: the run decides when to grow, from its own evaluations.

The rule (staged training's slope rule, Shen et al. 2022 Sec. 4, read against a fitted law instead of a second
run): grow once the small model's validation loss falls more slowly per FLOP than the large model would fall
at the same loss. The small model's rate is the least-squares slope of its last ``auto_window`` evaluations
against FLOPs seen. The large model's comes from L(N, D) = E + A/N^alpha + B/D^beta (``auto_law``, as
``tools/bench_growth.py`` fits it on scratch runs; N = the FLOP-counted parameters, flops_per_token / 6, so
C = 6 N D): at loss L it has seen D* tokens with B D*^-beta = L - E - A N^-alpha, and there
dL/dC = -beta (B D*^-beta) / D* / (6 N). When L is below what the law lets the large model reach at all
(the right side <= 0), growing cannot help the rate and the rule waits for ``auto_latest``.

The decision is a function of evaluation losses, which are identical on every rank, so every rank decides
the same step; it is saved in the checkpoint (the ``GrowthSchedule`` callback's state), so a resume keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AUTO = "auto"


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 10)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def slope_at_loss(self, params: float, loss: float) -> float | None:
        """dL/dC of a model of ``params`` FLOP-counted parameters when it is at ``loss``; None if the law says
        it never gets there."""
        data_term = loss - self.E - self.A * params**-self.alpha  # = B D*^-beta
        if data_term <= 0:
            return None
        tokens = (self.B / data_term) ** (1 / self.beta)
        return -self.beta * data_term / tokens / (6 * params)


def small_slope(history: list[tuple[float, float]], window: int) -> float | None:
    """Least-squares dL/dC over the last ``window`` (FLOPs, loss) evaluations; None before there are enough."""
    if len(history) < window:
        return None
    flops, losses = (np.asarray(column, dtype=float) for column in zip(*history[-window:]))
    if np.ptp(flops) == 0:
        return None
    return float(np.polyfit(flops, losses, 1)[0])


@dataclass(frozen=True)
class Decision:
    grow: bool
    reason: str
    small_slope: float = math.nan
    large_slope: float = math.nan


def decide(
    history: list[tuple[float, float]], window: int, law: Law, large_params: float, step: int, latest: int
) -> Decision:
    """Whether to grow after ``step``, and why, from the small model's (FLOPs, loss) evaluations."""
    if latest and step >= latest:
        return Decision(True, f"reached auto_latest={latest}")
    own = small_slope(history, window)
    if own is None:
        return Decision(False, f"fewer than {window} evaluations")
    loss = history[-1][1]
    large = law.slope_at_loss(large_params, loss)
    if large is None:
        return Decision(False, f"loss {loss:.4f} is below what the law gives the large model", own)
    if own > large:  # both negative: the small model falls more slowly per FLOP
        return Decision(
            True,
            f"the small model's loss falls {-own:.3e}/FLOP over its last {window} evaluations, the large "
            f"model's would fall {-large:.3e}/FLOP at loss {loss:.4f}",
            own,
            large,
        )
    return Decision(False, "the small model still falls faster per FLOP", own, large)
