"""The compute-optimal envelope and the scaling law fitted under it (docs/growth_benchmark.md).

The *envelope* is the best loss any scratch run reached for a compute budget: the lower convex hull of every
completed schedule's (FLOPs, final loss) point, over all model sizes, in (log FLOPs, loss), kept where it
falls. Interpolating along it is the most a practitioner could get by picking the best size for the budget
(and mixing neighbours), so a saving read against it is conservative. A reading outside its measured span is
flagged, never silently extrapolated.

The law is Chinchilla's parametric form (Hoffmann et al. 2022, Eq. 10), L(N, D) = E + A/N^alpha + B/D^beta,
with N the parameters that cost FLOPs (``flops_per_token / 6``, so C = 6 N D exactly) and D tokens. It is
fitted by variable projection: for fixed exponents the loss is linear in (E, A, B), solved by non-negative
least squares; the exponents are searched on a grid and refined.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]  # (FLOPs, loss)

# Two-sided 95% Student-t quantiles by degrees of freedom (the interval over a handful of seeds).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def envelope(points: list[Point]) -> list[Point]:
    """Lower convex hull of (log FLOPs, loss), from the cheapest point to the lowest loss."""
    hull: list[Point] = []
    for cost, loss in sorted(points):
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], (cost, loss)) <= 0:
            hull.pop()
        hull.append((cost, loss))
    lowest = min(range(len(hull)), key=lambda i: hull[i][1])
    return hull[: lowest + 1]


def _cross(a: Point, b: Point, c: Point) -> float:
    """> 0 when a -> b -> c turns left in (log cost, loss), i.e. b lies below the chord a-c."""
    (x0, y0), (x1, y1), (x2, y2) = ((math.log(x), y) for x, y in (a, b, c))
    return (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)


def cost_for_loss(front: list[Point], loss: float) -> tuple[float, bool]:
    """FLOPs at which the envelope reaches ``loss`` (log-linear between points) and whether that is inside
    the measured span. Outside it the end segment is extended and the reading flagged."""
    if len(front) < 2:
        return math.nan, False
    losses = [value for _, value in front]
    inside = losses[-1] <= loss <= losses[0]
    i = next((j for j in range(len(front) - 1) if losses[j + 1] <= loss), len(front) - 2)
    (c0, l0), (c1, l1) = front[i], front[i + 1]
    t = (loss - l0) / (l1 - l0)
    return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))), inside


def loss_for_cost(front: list[Point], cost: float) -> float:
    """The envelope's loss at ``cost`` (log-linear between points, the end segments extended)."""
    logs = [math.log(c) for c, _ in front]
    i = next((j for j in range(len(front) - 1) if math.log(cost) <= logs[j + 1]), len(front) - 2)
    (c0, l0), (c1, l1) = front[i], front[i + 1]
    return l0 + (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0)) * (l1 - l0)


def saving_vs_envelope(front: list[Point], loss: float, flops: float) -> dict:
    """1 - flops / C_envelope(loss): the share of the best scratch choice's compute for ``loss`` that the path
    saved (negative: the path cost more than the best-sized model trained from scratch)."""
    needed, inside = cost_for_loss(front, loss)
    return {
        "envelope_flops_for_loss": needed,
        "saving_vs_envelope": 1 - flops / needed,
        "envelope_inside": inside,
        "loss_gap_to_envelope": loss - loss_for_cost(front, flops),
    }


def interval95(values: list[float]) -> dict:
    """Mean and the half-width of its two-sided 95% Student-t interval (0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "half_width": math.nan, "low": math.nan, "high": math.nan, "n": len(values)}
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "n": len(values)}


# -- L(N, D) = E + A / N^alpha + B / D^beta --------------------------------------------------------------
@dataclass(frozen=True)
class ScalingLaw:
    E: float
    A: float
    alpha: float
    B: float
    beta: float
    rms_residual: float

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A * params**-self.alpha + self.B * tokens**-self.beta

    def loss_at_compute(self, params: float, flops: float) -> float:
        return self.loss(params, flops / (6 * params))

    def optimal_params(self, flops: float) -> float:
        """argmin over N of L(N, C / 6N): dL/dN = 0 gives N* = G (C/6)^(beta/(alpha+beta)),
        G = (alpha A / beta B)^(1/(alpha+beta)) (Hoffmann et al. 2022, Eq. 4); NaN when the fit left out the
        size or the data term (A or B = 0: no interior optimum)."""
        if self.A <= 0 or self.B <= 0:
            return math.nan
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return g * (flops / 6) ** (self.beta / (self.alpha + self.beta))

    def crossover(self, small: float, large: float, low: float = 1e9, high: float = 1e22) -> float:
        """The compute at which the model of ``large`` parameters overtakes the one of ``small`` (bisection
        in log FLOPs); NaN if it does not within [low, high]."""

        def gap(log_c: float) -> float:
            c = math.exp(log_c)
            return self.loss_at_compute(large, c) - self.loss_at_compute(small, c)

        lo, hi = math.log(low), math.log(high)
        if gap(lo) <= 0 or gap(hi) >= 0:
            return math.nan
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
        return math.exp((lo + hi) / 2)

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0, by trying each subset of active columns (3 columns)."""
    best, best_residual = np.zeros(x.shape[1]), math.inf
    for mask in range(1, 2 ** x.shape[1]):
        cols = [j for j in range(x.shape[1]) if mask >> j & 1]
        coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (coef < 0).any():
            continue
        full = np.zeros(x.shape[1])
        full[cols] = coef
        residual = float(np.sum((x @ full - y) ** 2))
        if residual < best_residual:
            best, best_residual = full, residual
    return best


def fit_scaling_law(runs: list[tuple[float, float, float]]) -> ScalingLaw:
    """Fit L(N, D) to ``(params, tokens, loss)`` points (at least 5, over more than one N and D)."""
    if len(runs) < 5 or len({n for n, _, _ in runs}) < 2:
        raise ValueError("fitting L(N, D) needs at least 5 runs over at least 2 model sizes")
    n, d, y = (np.asarray(column, dtype=float) for column in zip(*runs))
    n_scale, d_scale = n.min(), d.min()  # conditioning; undone below

    def solve(alpha: float, beta: float) -> tuple[float, np.ndarray]:
        x = np.stack([np.ones_like(y), (n / n_scale) ** -alpha, (d / d_scale) ** -beta], axis=1)
        coef = _nonnegative_lstsq(x, y)
        return float(np.sum((x @ coef - y) ** 2)), coef

    grid = np.linspace(0.05, 1.5, 59)
    _, alpha, beta = min((solve(a, b)[0], a, b) for a in grid for b in grid)
    step = grid[1] - grid[0]
    for _ in range(30):  # coordinate refinement around the grid optimum, halving the step
        step /= 2
        candidates = [(alpha + da, beta + db) for da in (-step, 0, step) for db in (-step, 0, step)]
        _, alpha, beta = min((solve(a, b)[0], a, b) for a, b in candidates if a > 0 and b > 0)
    residual, (e, a, b) = solve(alpha, beta)
    return ScalingLaw(
        float(e),
        float(a * n_scale**alpha),
        float(alpha),
        float(b * d_scale**beta),
        float(beta),
        math.sqrt(residual / len(y)),
    )
