"""Reading a path against the scratch curve: compute saved at equal loss, both accountings; the loss
gap at equal FLOPs; and the staged-training slope rule.

The scratch *frontier* is the final validation loss of each completed schedule against its FLOPs
(seconds for wall time). Between budgets the loss is interpolated linearly in log FLOPs. Past the
largest budget the last segment is extended: real curves flatten in log FLOPs, so this extension
reaches a lower loss sooner than scratch would and *under*-states the saving; such readings are
flagged ``extrapolated``.
"""

from __future__ import annotations

import math

import numpy as np


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(cost, loss) of completed schedules, sorted by cost, keeping only budgets that improve on every
    cheaper one (a larger budget that reads worse adds nothing: the cheaper schedule reached that loss),
    so every segment falls and can be read both ways."""
    out: list[tuple[float, float]] = []
    for cost, loss in sorted(points):
        if not out or loss < out[-1][1]:
            out.append((cost, loss))
    return out


def _segment(xs: list[float], x: float) -> int:
    """Index i of the segment [xs[i], xs[i+1]] holding x (the end segments when outside)."""
    for i in range(len(xs) - 1):
        if x <= xs[i + 1]:
            return i
    return len(xs) - 2


def loss_at(front: list[tuple[float, float]], cost: float) -> float:
    if len(front) < 2:
        return math.nan
    logs = [math.log(c) for c, _ in front]
    i = _segment(logs, math.log(cost))
    (c0, l0), (c1, l1) = front[i], front[i + 1]
    t = (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0))
    return l0 + t * (l1 - l0)


def cost_at(front: list[tuple[float, float]], loss: float) -> tuple[float, bool]:
    """The cost at which the frontier reaches ``loss``, and whether that is outside the measured range."""
    if len(front) < 2:
        return math.nan, True  # one budget: no slope to read a cost from
    losses = [value for _, value in front]
    extrapolated = not (losses[-1] <= loss <= losses[0])
    i = next((j for j in range(len(front) - 1) if losses[j + 1] <= loss), len(front) - 2)
    if loss > losses[0]:
        i = 0
    (c0, l0), (c1, l1) = front[i], front[i + 1]
    t = (loss - l0) / (l1 - l0)
    return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))), extrapolated


def savings(
    flops_front: list[tuple[float, float]],
    seconds_front: list[tuple[float, float]],
    final_loss: float,
    flops_total: float,
    flops_after_growth: float,
    seconds: float,
) -> dict[str, float | bool]:
    """Compute saved at the grown path's final loss: 1 - its FLOPs / the FLOPs scratch needs for that loss,
    counting the small model (``with_small``) or only what was spent after the first growth
    (``without_small``, as bert2BERT / LiGO report); the same for wall seconds; and the loss gap at the
    grown path's FLOPs (negative: the grown model is better)."""
    needed, extrapolated = cost_at(flops_front, final_loss)
    needed_s, extrapolated_s = cost_at(seconds_front, final_loss)
    return {
        "scratch_flops_for_loss": needed,
        "saving_with_small": 1 - flops_total / needed,
        "saving_without_small": 1 - flops_after_growth / needed,
        "extrapolated": extrapolated,
        "loss_gap_at_equal_flops": final_loss - loss_at(flops_front, flops_total),
        "wall_ratio": seconds / needed_s,
        "wall_extrapolated": extrapolated_s,
    }


# -- the staged-training slope rule (Shen et al. 2022, Sec. 4) ----------------------------------------
def fit_power_law(flops: list[float], losses: list[float]) -> tuple[float, float, float]:
    """Least-squares L(F) = E + A F^-alpha: (E, A) linear for each alpha; alpha on a grid, then refined by
    golden-section search between the best grid point's neighbours."""
    f, y = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    scale = f[0]
    f = f / scale  # conditioning; undone below

    def solve(alpha: float) -> tuple[float, float, float]:
        x = np.stack([np.ones_like(f), f**-alpha], axis=1)
        (e, a), *_ = np.linalg.lstsq(x, y, rcond=None)
        residual = float(np.sum((x @ np.array([e, a]) - y) ** 2))
        return (residual if a > 0 else math.inf), float(e), float(a)

    grid = np.geomspace(0.02, 3.0, 200)
    scores = [solve(alpha)[0] for alpha in grid]
    best = int(np.argmin(scores))
    if not math.isfinite(scores[best]):
        raise ValueError("the loss does not fall with FLOPs: no power law to fit")
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a1, a2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, a2) if solve(a1)[0] <= solve(a2)[0] else (a1, hi)
    alpha = (lo + hi) / 2
    _, e, a = solve(alpha)
    return e, a * scale**alpha, float(alpha)


def slope_rule_flops(small: list[tuple[float, float]], large: list[tuple[float, float]]) -> float:
    """The FLOPs at which the small model's loss decrease per FLOP first falls below the large model's at
    the same loss (both fitted on their constant-LR curves); the small curve's end if it never does."""
    es, as_, als = fit_power_law(*zip(*small))
    el, al, all_ = fit_power_law(*zip(*large))
    for f in np.geomspace(small[0][0], small[-1][0], 400):
        loss = es + as_ * f**-als
        if loss <= el:
            return float(f)  # below what the large model can reach on its fit: grow now
        f_large = (al / (loss - el)) ** (1 / all_)
        if als * as_ * f ** (-als - 1) < all_ * al * f_large ** (-all_ - 1):
            return float(f)
    return float(small[-1][0])
