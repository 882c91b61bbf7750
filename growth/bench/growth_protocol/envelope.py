"""Growth against the compute-optimal envelope: the best model of any size trained from scratch on the
same budget (docs/growth_benchmark.md).

Scratch trains at least three sizes (the small model, the large one and one between), each with its own
peak LR from the same sweep rule, each as one WSD run to its largest budget with a fully decayed branch (LR
to 0 over the last ``decay_fraction`` of the steps) at every smaller budget. The envelope is the lower hull of
all those (FLOPs, final loss) points (``scaling.envelope``). The grown path is one run with ``train.growth``
(the small model until ``growth_at`` budget units of FLOPs, then the large one) on the same WSD shape, with a
fully decayed branch at each grown budget, on the same data order (``train.seed``). Its saving is
``1 - C_grown / C_envelope(L_grown)``, the small model counted; against the large model alone, as the
growth papers report, is kept as a secondary column.

Sizes and budgets: ``envelope_plan.py``; reading the runs: ``envelope_read.py``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

from growth.bench.growth_protocol import runs
from growth.bench.growth_protocol.envelope_plan import Envelope
from growth.bench.growth_protocol.envelope_read import read_seed, summarize
from growth.bench.growth_protocol.plan import changed_fields
from growth.bench.growth_protocol.protocol import Log, run_config
from growth.bench.growth_protocol.recipe import DEFAULT, Recipe, ablation_arms
from growth.bench.growth_protocol.recipe import ENVELOPE_ABLATIONS as ABLATIONS


class Bench(NamedTuple):
    """Where runs live, OpenMP threads per run, and the progress log."""

    work: Path
    threads: int
    log: Log


def _config(env: Envelope, shape: dict, seed: int, lr: float, max_steps: int, decay: int, **train) -> dict:
    config = run_config(env, shape, seed, lr, max_steps, **train)  # the growth protocol's run config
    config["train"].update(
        min_lr_ratio=0.0,
        decay_fraction=decay / max_steps,
        eval_interval=max(1, math.ceil(max_steps / env.evals_per_run)),
    )
    return config


def _resume_interval(max_steps: int) -> int:
    """Checkpoints besides the branch points, so a run killed mid-way (the benchmark interrupted) loses at most a
    tenth of its steps when it is asked again."""
    return max(1, math.ceil(max_steps / 10))


def scratch(
    env: Envelope, bench: Bench, size: str, seed: int, lr: float, multiples: tuple[int, ...] | None = None
) -> list[dict]:
    """``size`` from scratch at each of its budgets (fully decayed), as (multiple, FLOPs, tokens, loss...)."""
    shape, k = env.sizes[size], env.steps_per_unit(env.sizes[size])
    multiples = tuple(sorted(multiples or env.scratch_multiples[size]))
    points = {m: (m * k, round(env.decay_fraction * m * k)) for m in multiples}
    starts = [steps - decay for steps, decay in points.values()][:-1]
    top_steps, top_decay = points[multiples[-1]]
    main_config = _config(
        env,
        shape,
        seed,
        lr,
        top_steps,
        top_decay,
        save_interval=_resume_interval(top_steps),
        save_steps=starts,
    )
    done = runs.with_branches(
        bench.work, f"{size}-lr{lr:g}-s{seed}", main_config, points, *bench[1:], evals=1
    )
    out = []
    for m in multiples:
        run, steps = done[m], points[m][0]
        flops = steps * env.step_flops(shape)
        runs.check_flops(run, flops)
        out.append(
            {
                "size": size,
                "multiple": m,
                "steps": steps,
                "flops": flops,
                "loss": run.final_loss,
                "loss_se": run.extra.get("loss_se"),
                "tokens": steps * env.micro_batch_size * env.seq_len,
                "params": env.params(shape),
                "lr": lr,
                "curve": _curve(run, env.step_flops(shape)),
            }
        )
    return out


def _curve(run: runs.Run, step_flops: float) -> list[tuple[float, float]]:
    return [(s * step_flops, v) for s, v in run.val]


def grown(
    env: Envelope, bench: Bench, seed: int, lr: float, recipe: Recipe, small: dict[str, int] | None = None
) -> list[dict]:
    """The grown path at every grown budget: one run with ``train.growth`` after ``growth_at`` units of the
    small model's FLOPs (``small``: another starting shape than the first size, for the dims ablation), fully
    decayed branches at the smaller budgets."""
    small = small or env.small
    small_steps = env.steps_per_unit(small)
    at_step = round(env.growth_at * small_steps)
    large_per_unit = env.base_steps
    points = {}
    for m in sorted(env.grown_multiples):
        large_steps = round((m - at_step / small_steps) * large_per_unit)
        points[m] = (at_step + large_steps, round(env.decay_fraction * m * large_per_unit))
    if any(steps - decay <= at_step for steps, decay in points.values()):
        raise ValueError(f"growth_at={env.growth_at} falls inside a grown budget's decay: grow earlier")
    stage = recipe.stage(at_step, changed_fields(small, env.large), seed)
    starts = [steps - decay for steps, decay in points.values()][:-1]
    top_steps, top_decay = points[max(points)]
    config = _config(
        env,
        small,
        seed,
        lr,
        top_steps,
        top_decay,
        growth=[stage],
        save_interval=_resume_interval(top_steps),
        save_steps=starts,
    )
    done = runs.with_branches(bench.work, f"grown-s{seed}", config, points, bench.threads, bench.log, evals=1)
    out = []
    for m, (steps, _) in points.items():
        small_flops = at_step * env.step_flops(small)
        flops = small_flops + (steps - at_step) * env.step_flops(env.large)
        runs.check_flops(done[m], flops)
        out.append(
            {
                "multiple": m,
                "steps": steps,
                "at_step": at_step,
                "flops": flops,
                "flops_after_growth": flops - small_flops,
                "loss": done[m].final_loss,
                "loss_se": done[m].extra.get("loss_se"),
                "seconds": done[m].seconds_at(steps),
                "curve": [(_path_flops(env, small, s, at_step), v) for s, v in done[m].val],
            }
        )
    return out


def _path_flops(env: Envelope, small: dict[str, int], step: int, at_step: int) -> float:
    return min(step, at_step) * env.step_flops(small) + max(step - at_step, 0) * env.step_flops(env.large)


def lr_sweep(env: Envelope, bench: Bench, size: str) -> dict:
    """Each size's peak LR: ``env.lrs`` at the smallest budget (fully decayed), then, while the best is at an
    edge, one more point past it (x2 or /2), at most ``sweep_extensions`` times. The same rule for every size."""
    multiple = min(env.scratch_multiples[size])
    losses: dict[float, float] = {}
    todo = list(env.lrs)
    for _ in range(env.sweep_extensions + 1):
        done = runs.in_parallel(
            {
                lr: (
                    lambda lr=lr: scratch(env, bench, size, env.seeds[0], lr, multiples=(multiple,))[0][
                        "loss"
                    ]
                )
                for lr in todo
            }
        )
        losses.update(done)
        best, ordered = min(losses, key=losses.get), sorted(losses)
        todo = [best * 2] if best == ordered[-1] else [best / 2] if best == ordered[0] else []
        if not todo:
            break
    best = min(losses, key=losses.get)
    bench.log(
        f"LR sweep, {size}: "
        + ", ".join(f"{k:g}: {v:.4f}" for k, v in sorted(losses.items()))
        + f" -> {best:g}"
    )
    return {
        "multiple": multiple,
        "losses": {f"{k:g}": v for k, v in sorted(losses.items())},
        "best": best,
        "at_edge": best in (min(losses), max(losses)),
    }


def compare(env: Envelope, bench: Bench, recipe: Recipe = DEFAULT) -> dict:
    """Every size's LR sweep, then seed by seed (the first seed's answer comes first) scratch at every size
    and budget and the grown path, read against that seed's envelope."""
    sweeps = runs.in_parallel({size: (lambda size=size: lr_sweep(env, bench, size)) for size in env.sizes})
    grown_lr = sweeps[list(env.sizes)[-1]]["best"]  # the grown path ends as the large model: its swept LR
    seeds = {}
    for seed in env.seeds:
        calls = {
            size: (lambda size=size, seed=seed: scratch(env, bench, size, seed, sweeps[size]["best"]))
            for size in env.sizes
        }
        calls["grown"] = lambda seed=seed: grown(env, bench, seed, grown_lr, recipe)
        done = runs.in_parallel(calls)
        seeds[seed] = read_seed(env, [p for size in env.sizes for p in done[size]], done["grown"])
        bench.log(
            f"seed {seed}: saving vs envelope by budget: "
            + ", ".join(f"{p['multiple']}x {p['saving_vs_envelope']:+.3f}" for p in seeds[seed]["grown"])
        )
    return {
        "protocol": env.to_json(),
        "recipe": recipe.to_json(),
        "lr_sweeps": sweeps,
        "grown_lr": grown_lr,
        "seeds": seeds,
        **summarize(env, seeds),
    }


# -- the recipe search: one change at a time (recipe.ENVELOPE_ABLATIONS), read against the first seed's envelope
def _arm_small(env: Envelope, which: str | None) -> dict[str, int] | None:
    if which is None:
        return None
    if which == "width":
        return {**env.small, "n_layers": env.large["n_layers"]}
    return {**env.large, "n_layers": env.small["n_layers"]}


def ablation(env: Envelope, bench: Bench, name: str, recipe: Recipe = DEFAULT) -> dict:
    """Every arm of ``name`` on the first seed, each read against that seed's envelope (the scratch runs of
    ``compare``, reused from the run cache)."""
    seed = env.seeds[0]
    sweeps = runs.in_parallel({size: (lambda size=size: lr_sweep(env, bench, size)) for size in env.sizes})
    lr = sweeps[list(env.sizes)[-1]]["best"]
    arms = [("default recipe", {})] + ABLATIONS[name]
    recipes = ablation_arms(name, recipe, ABLATIONS)
    calls = {
        size: (lambda size=size: scratch(env, bench, size, seed, sweeps[size]["best"])) for size in env.sizes
    }
    for index, (_, changes) in enumerate(arms):
        arm_env = dataclasses.replace(env, **{k: v for k, v in changes.items() if k == "growth_at"})
        calls[index] = lambda e=arm_env, r=recipes[index][1], c=changes: grown(
            e, bench, seed, lr, r, _arm_small(env, c.get("small"))
        )
    done = runs.in_parallel(calls)
    scratch_points = [p for size in env.sizes for p in done[size]]
    result = {"ablation": name, "seed": seed, "lr": lr, "arms": []}
    for index, (label, changes) in enumerate(arms):
        read = read_seed(env, scratch_points, done[index])
        result["arms"].append({"arm": label, "changes": changes, "grown": read["grown"]})
        bench.log(
            f"  {name} / {label}: "
            + ", ".join(
                f"{p['multiple']}x loss {p['loss']:.4f} vs envelope {p['saving_vs_envelope']:+.3f}"
                for p in read["grown"]
            )
        )
    result["envelope"] = read_seed(env, scratch_points, [])["envelope"]
    return result
