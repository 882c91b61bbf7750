"""Reading the envelope protocol's runs: one seed's envelope and the grown path against it (and against the large
model alone), the crossover check, the fitted law, the headline with its interval, and the slope rule's reading."""

from __future__ import annotations

from growth.bench.growth_protocol import curves, scaling
from growth.bench.growth_protocol.envelope_plan import Envelope


def slope_rule_reading(env: Envelope, seed_data: dict, law: scaling.ScalingLaw, window: int = 3) -> dict:
    """Where ``at_step: auto`` (growth/train/auto_growth.py) would grow on this seed's small model: its rule
    applied to the small model's longest scratch run at the peak LR (before its decay), with the fitted law."""
    from growth.train.auto_growth import Law, decide

    small_name = list(env.sizes)[0]
    longest = max((p for p in seed_data["scratch"] if p["size"] == small_name), key=lambda p: p["flops"])
    constant = [(f, v) for f, v in longest["curve"] if f <= (1 - env.decay_fraction) * longest["flops"]]
    rule_law = Law(law.E, law.A, law.alpha, law.B, law.beta)
    for end in range(1, len(constant) + 1):
        decision = decide(constant[:end], window, rule_law, env.params(env.large), step=0, latest=0)
        if decision.grow:
            return {
                "flops": constant[end - 1][0],
                "units": constant[end - 1][0] / env.unit_flops(),
                "reason": decision.reason,
            }
    return {"flops": None, "units": None, "reason": "no crossing on the measured curve"}


def read_seed(env: Envelope, scratch_points: list[dict], grown_points: list[dict]) -> dict:
    """One seed's envelope, the large model's own frontier, and the grown path read against both."""
    front = scaling.envelope([(p["flops"], p["loss"]) for p in scratch_points])
    large_name = list(env.sizes)[-1]
    large_front = curves.frontier(
        [(p["flops"], p["loss"]) for p in scratch_points if p["size"] == large_name]
    )
    read = []
    for p in grown_points:
        against_large = curves.savings(
            large_front, large_front, p["loss"], p["flops"], p["flops_after_growth"], p["flops"]
        )  # FLOPs only: wall time is read from the JSON when needed
        read.append(
            {
                **p,
                **scaling.saving_vs_envelope(front, p["loss"], p["flops"]),
                "saving_with_small": against_large["saving_with_small"],
                "saving_without_small": against_large["saving_without_small"],
                "large_only_extrapolated": against_large["extrapolated"],
                "best_scratch_size": _best_size(scratch_points, p["multiple"]),
            }
        )
    return {"scratch": scratch_points, "envelope": front, "grown": read}


def _best_size(points: list[dict], multiple: int) -> str | None:
    at = [p for p in points if p["multiple"] == multiple]
    return min(at, key=lambda p: p["loss"])["size"] if at else None


def summarize(env: Envelope, seeds: dict) -> dict:
    """The crossover check, the fitted law, and the headline per grown budget (mean and 95% interval)."""
    names = list(env.sizes)
    small_name, large_name = names[0], names[-1]
    margins = {}
    for m in sorted(set(env.scratch_multiples[small_name]) & set(env.scratch_multiples[large_name])):
        gaps = [_loss(s, small_name, m) - _loss(s, large_name, m) for s in seeds.values()]
        margins[m] = {"small_minus_large": scaling.interval95(gaps), "per_seed": gaps}
    top_two = sorted(margins)[-2:]
    crossover_inside = all(
        margins[m]["small_minus_large"]["mean"] > 0
        and min(margins[m]["per_seed"]) > 0
        and margins[m]["small_minus_large"]["mean"] > _seed_spread(seeds, m)
        for m in top_two
    )
    law = scaling.fit_scaling_law(
        [(p["params"], p["tokens"], p["loss"]) for s in seeds.values() for p in s["scratch"]]
    )
    budgets = sorted({p["flops"] for s in seeds.values() for p in s["grown"]})
    headline = {}
    for m in sorted(env.grown_multiples):
        values = [next(p for p in s["grown"] if p["multiple"] == m) for s in seeds.values()]
        headline[m] = {
            key: {**scaling.interval95([v[key] for v in values]), "per_seed": [v[key] for v in values]}
            for key in (
                "saving_vs_envelope",
                "saving_with_small",
                "saving_without_small",
                "loss_gap_to_envelope",
                "loss",
            )
        }
        headline[m]["inside_envelope"] = all(v["envelope_inside"] for v in values)
        # past the crossover: the large model from scratch beat the small one alone at this budget (mean over seeds)
        headline[m]["past_crossover"] = m in margins and margins[m]["small_minus_large"]["mean"] > 0
    rule = {seed: slope_rule_reading(env, data, law) for seed, data in seeds.items()}
    return {
        "slope_rule": rule,
        "crossover": {
            "margins": margins,
            "inside": crossover_inside,
            "checked_at": top_two,
            "fitted_flops": law.crossover(env.params(env.small), env.params(env.large)),
        },
        "scaling_law": {
            **law.to_json(),
            "optimal_params": {f"{b:.3e}": law.optimal_params(b) for b in budgets},
        },
        "headline": headline,
    }


def _loss(seed_data: dict, size: str, multiple: int) -> float:
    return next(p["loss"] for p in seed_data["scratch"] if p["size"] == size and p["multiple"] == multiple)


def _seed_spread(seeds: dict, multiple: int) -> float:
    """Half the range over seeds of the small and the large model's losses at ``multiple`` (the larger)."""
    spreads = []
    for size in {p["size"] for s in seeds.values() for p in s["scratch"]}:
        values = [
            _loss(s, size, multiple)
            for s in seeds.values()
            if any(p["size"] == size and p["multiple"] == multiple for p in s["scratch"])
        ]
        if len(values) > 1:
            spreads.append((max(values) - min(values)) / 2)
    return max(spreads, default=0.0)
