"""The whole comparison: the LR sweep, scratch at every budget, the grown path, over seeds; and the
ablations, each against the same seed's scratch curve.

Every path reads the same data order (``train.seed`` = the seed: the same windows in the same order,
and the same initial weights of a shape); the grown path simply reads further, because its small
model's steps are cheaper. The grown path is one run with ``train.growth`` on one WSD schedule: warmup,
a constant peak across the growth points, then the same number of decaying large-model steps as
scratch's decay at that budget.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import NamedTuple

from growth.bench.growth_protocol import curves, runs
from growth.bench.growth_protocol.plan import (
    Phase,
    Protocol,
    changed_fields,
    eval_interval,
    flops_at_step,
    grown_phases,
    phase_flops,
    stage_shapes,
)
from growth.bench.growth_protocol.recipe import DEFAULT, Recipe, ablation_arms
from growth.bench.harness import Log


def run_config(protocol: Protocol, shape: dict, seed: int, lr: float, max_steps: int, **train) -> dict:
    interval = eval_interval(protocol, max_steps)
    return {
        "model": {**shape, "vocab_size": protocol.vocab_size, "max_seq_len": max(256, protocol.seq_len)},
        "data": {"corpus": protocol.corpus, "seq_len": protocol.seq_len},
        "train": {
            "max_steps": max_steps,
            "micro_batch_size": protocol.micro_batch_size,
            "lr": lr,
            "warmup_steps": protocol.warmup_steps,
            "lr_schedule": "wsd",
            "decay_fraction": protocol.decay_fraction,
            "seed": seed,
            "eval_interval": interval,
            "log_interval": interval,
            "eval_batches": protocol.eval_batches,
            "save_interval": max_steps,
            "keep_checkpoints": 0,
            **train,
        },
    }


# -- scratch ---------------------------------------------------------------------------------------------
def scratch(
    protocol: Protocol,
    work: Path,
    seed: int,
    lr: float,
    threads: int,
    log: Log,
    multiples: tuple[int, ...] | None = None,
) -> dict:
    """The large model at every budget: one WSD run to the largest, decay branches for the others."""
    multiples = sorted(multiples or protocol.scratch_multiples)
    steps = [m * protocol.base_steps for m in multiples]
    starts = [s - protocol.decay_steps(m) for s, m in zip(steps, multiples)]
    main_config = run_config(
        protocol, protocol.large, seed, lr, steps[-1], save_interval=math.gcd(*(starts[:-1] or steps))
    )
    main_config["train"]["decay_fraction"] = protocol.decay_steps(multiples[-1]) / steps[-1]
    points = {m: (s, protocol.decay_steps(m)) for s, m in zip(steps, multiples)}
    done = runs.with_branches(work, f"scratch-s{seed}", main_config, points, threads, log)
    main = done[multiples[-1]]
    budgets = []
    for multiple, max_steps in zip(multiples, steps):
        run = done[multiple]
        flops = max_steps * protocol.step_flops(protocol.large)
        runs.check_flops(run, flops)
        budgets.append(
            {
                "multiple": multiple,
                "steps": max_steps,
                "flops": flops,
                "loss": run.final_loss,
                "seconds": run.seconds_at(max_steps),
                "run": run.__dict__,
            }
        )
    return {"lr": lr, "budgets": budgets, "constant_curve": _constant_part(main, protocol, starts[-1])}


def _constant_part(
    run: runs.Run, protocol: Protocol, decay_start: int, phases: list[Phase] | None = None
) -> list:
    """(FLOPs, loss) of a run's evaluations at the constant peak LR (after warmup, before the decay)."""
    phases = phases or [Phase(protocol.large, run.steps)]
    return [
        (flops_at_step(protocol, phases, s), v)
        for s, v in run.val
        if protocol.warmup_steps < s <= decay_start
    ]


def frontiers(scratch_result: dict) -> tuple[list, list]:
    budgets = scratch_result["budgets"]
    return (
        curves.frontier([(b["flops"], b["loss"]) for b in budgets]),
        curves.frontier([(b["seconds"], b["loss"]) for b in budgets]),
    )


# -- the grown path ------------------------------------------------------------------------------------
def growth_stages(shapes: list[dict], phases: list[Phase], recipe: Recipe, seed: int) -> list[dict]:
    stages, at = [], 0
    for old, new, phase in zip(shapes, shapes[1:], phases):
        at += phase.steps
        stages.append(recipe.stage(at, changed_fields(old, new), seed))
    return stages


def grown(
    protocol: Protocol,
    work: Path,
    seed: int,
    lr: float,
    multiple: int,
    recipe: Recipe,
    fraction: float,
    threads: int,
    log: Log,
    label: str = "grown",
) -> dict:
    budget = protocol.budget_flops(multiple)
    shapes = stage_shapes(protocol, recipe)
    phases = grown_phases(protocol, shapes, budget, fraction)
    total = sum(p.steps for p in phases)
    decay = min(protocol.decay_steps(multiple), phases[-1].steps)
    stages = growth_stages(shapes, phases, recipe, seed)
    tag = f"{label}-s{seed}-b{multiple}"
    if recipe.schedule == "restarted":
        configs = [run_config(protocol, p.shape, seed, lr, p.steps, lr_schedule="cosine") for p in phases]
        options = [
            {k: s[k] for k in ("noise_std", "seed", "optimizer", "depth_operator", "split")} for s in stages
        ]
        run = runs.restarted(work, tag, configs, options, threads, log)
    else:
        config = run_config(protocol, shapes[0], seed, lr, total, decay_fraction=decay / total, growth=stages)
        run = runs.train(work, tag, config, threads, log)
    flops = phase_flops(protocol, phases)
    runs.check_flops(run, sum(flops))
    return {
        "multiple": multiple,
        "fraction": fraction,
        "phases": [p.__dict__ for p in phases],
        "stages": stages,
        "flops": sum(flops),
        "flops_after_growth": sum(flops[1:]),
        "loss": run.final_loss,
        "seconds": run.seconds_at(total),
        "curve": [(flops_at_step(protocol, phases, s), v) for s, v in run.val],
        "run": run.__dict__,
    }


def read_against(scratch_result: dict, path: dict) -> dict:
    flops_front, seconds_front = frontiers(scratch_result)
    return {
        **path,
        **curves.savings(
            flops_front,
            seconds_front,
            path["loss"],
            path["flops"],
            path["flops_after_growth"],
            path["seconds"],
        ),
    }


def small_alone(
    protocol: Protocol, work: Path, seed: int, lr: float, multiple: int, threads: int, log: Log
) -> dict:
    """The small model trained on the whole budget: what growth has to beat to be worth it, and the small
    curve of the slope rule."""
    steps = round(protocol.budget_flops(multiple) / protocol.step_flops(protocol.small))
    decay = protocol.decay_steps(multiple)
    run = runs.train(
        work,
        f"small-s{seed}-b{multiple}",
        run_config(protocol, protocol.small, seed, lr, steps, decay_fraction=decay / steps),
        threads,
        log,
    )
    phases = [Phase(protocol.small, steps)]
    return {
        "multiple": multiple,
        "steps": steps,
        "flops": steps * protocol.step_flops(protocol.small),
        "loss": run.final_loss,
        "curve": [(flops_at_step(protocol, phases, s), v) for s, v in run.val],
        "constant_curve": _constant_part(run, protocol, steps - decay, phases),
    }


def growth_fraction(
    recipe: Recipe, protocol: Protocol, multiple: int, small: dict | None, scratch0: dict
) -> float:
    if recipe.growth_point == "fixed":
        return recipe.fraction
    point = curves.slope_rule_flops(small["constant_curve"], scratch0["constant_curve"])
    return min(0.9, point / protocol.budget_flops(multiple))


# -- everything -------------------------------------------------------------------------------------------
def lr_sweep(protocol: Protocol, work: Path, threads: int, log: Log) -> dict:
    multiple = protocol.scratch_multiples[0]
    results = runs.in_parallel(
        {
            lr: (
                lambda lr=lr: scratch(
                    protocol, work, protocol.seeds[0], lr, threads, log, multiples=(multiple,)
                )
            )
            for lr in protocol.lrs
        }
    )
    losses = {lr: result["budgets"][0]["loss"] for lr, result in results.items()}
    best = min(losses, key=losses.get)
    log(
        f"LR sweep at {multiple * protocol.base_steps} steps: "
        + ", ".join(f"{k:g}: {v:.4f}" for k, v in losses.items())
        + f" -> {best:g}"
    )
    return {"multiple": multiple, "losses": {str(k): v for k, v in losses.items()}, "best": best}


class GrownRun(NamedTuple):
    """One grown run to train: its seed, budget and recipe, and which trained result is its seed's scratch."""

    seed: int
    multiple: int
    recipe: Recipe
    scratch_key: Hashable


def train_with_grown(
    protocol: Protocol,
    work: Path,
    lr: float,
    threads: int,
    log: Log,
    first: dict[Hashable, Callable[[], dict]],
    grown_runs: dict[Hashable, GrownRun],
) -> dict:
    """Train ``first`` (which must hold ``"small"`` and every scratch key) and ``grown_runs``; returns every
    result by key. Grown runs at a fixed growth point are independent of the rest and train beside it; the
    slope rule's read the small and scratch curves first, so they train after."""

    def call(key: Hashable, done: dict | None) -> Callable[[], dict]:
        spec = grown_runs[key]

        def run() -> dict:
            fraction = growth_fraction(
                spec.recipe, protocol, spec.multiple, done and done["small"], done and done[spec.scratch_key]
            )
            return grown(protocol, work, spec.seed, lr, spec.multiple, spec.recipe, fraction, threads, log)

        return run

    fixed = {key: call(key, None) for key, spec in grown_runs.items() if spec.recipe.growth_point == "fixed"}
    done = runs.in_parallel({**first, **fixed})
    done.update(runs.in_parallel({key: call(key, done) for key in grown_runs if key not in fixed}))
    return done


def compare(protocol: Protocol, work: Path, threads: int, log: Log = print, recipe: Recipe = DEFAULT) -> dict:
    """The headline comparison. Scratch, the small model alone and (at a fixed growth point) every grown
    run are independent runs, asked for at once (``runs.set_parallel_runs`` bounds how many train)."""
    sweep = lr_sweep(protocol, work, threads, log)
    lr, largest, first = sweep["best"], max(protocol.grown_multiples), protocol.seeds[0]
    budgets = {seed: protocol.grown_multiples if seed == first else (largest,) for seed in protocol.seeds}
    calls = {
        ("scratch", seed): (lambda seed=seed: scratch(protocol, work, seed, lr, threads, log))
        for seed in protocol.seeds
    }
    calls["small"] = lambda: small_alone(protocol, work, first, lr, largest, threads, log)
    grown_runs = {
        ("grown", seed, m): GrownRun(seed, m, recipe, ("scratch", seed))
        for seed in protocol.seeds
        for m in budgets[seed]
    }
    done = train_with_grown(protocol, work, lr, threads, log, calls, grown_runs)
    seeds = {}
    for seed in protocol.seeds:
        scratch_result = done[("scratch", seed)]
        read = [read_against(scratch_result, done[("grown", seed, m)]) for m in budgets[seed]]
        seeds[seed] = {"scratch": scratch_result, "grown": read}
        log(
            f"seed {seed}: saving at the largest budget: with small {read[-1]['saving_with_small']:.3f}, "
            f"without {read[-1]['saving_without_small']:.3f}"
        )
    small_point = read_against(
        seeds[first]["scratch"], {**done["small"], "flops_after_growth": 0.0, "seconds": float("nan")}
    )
    return {
        "protocol": protocol.to_json(),
        "recipe": recipe.to_json(),
        "lr_sweep": sweep,
        "seeds": seeds,
        "small_alone": small_point,
        "headline": headline(seeds, largest),
    }


def headline(seeds: dict, largest: int) -> dict:
    out = {}
    for key in ("saving_with_small", "saving_without_small", "loss_gap_at_equal_flops", "wall_ratio"):
        values = [next(p[key] for p in s["grown"] if p["multiple"] == largest) for s in seeds.values()]
        out[key] = statistics.fmean(values)
        out[f"{key}_per_seed"] = values
        out[f"{key}_spread"] = (max(values) - min(values)) / 2
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["extrapolated"] = any(
        p["extrapolated"] for s in seeds.values() for p in s["grown"] if p["multiple"] == largest
    )
    return out


def ablation(
    name: str, protocol: Protocol, work: Path, threads: int, log: Log = print, multiple: int | None = None
) -> dict:
    """Every arm of one ablation at one budget (the middle one by default), seed 0, one flag changed."""
    seed = protocol.seeds[0]
    multiple = multiple or sorted(protocol.grown_multiples)[len(protocol.grown_multiples) // 2]
    lr = lr_sweep(protocol, work, threads, log)["best"]
    recipes = ablation_arms(name)
    done = train_with_grown(
        protocol,
        work,
        lr,
        threads,
        log,
        {
            "scratch": lambda: scratch(protocol, work, seed, lr, threads, log),
            "small": lambda: small_alone(
                protocol, work, seed, lr, max(protocol.grown_multiples), threads, log
            ),
        },
        {index: GrownRun(seed, multiple, recipe, "scratch") for index, (_, recipe) in enumerate(recipes)},
    )
    scratch_result = done["scratch"]
    arms = []
    for index, (label, recipe) in enumerate(recipes):
        path = read_against(scratch_result, done[index])
        arms.append({"arm": label, "recipe": recipe.to_json(), **path})
        log(
            f"  {name} / {label}: loss {path['loss']:.4f}, saving with small {path['saving_with_small']:.3f}, "
            f"without {path['saving_without_small']:.3f}"
        )
    return {"ablation": name, "multiple": multiple, "seed": seed, "lr": lr, "arms": arms}
