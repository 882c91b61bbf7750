"""Growth against the compute-optimal envelope: the best model of any size trained from scratch on the
same budget (docs/growth_benchmark.md).

Scratch trains at least three sizes (the small model, the large one and one between), each with its own
peak LR from the same sweep rule, each as one WSD run to its largest budget with a fully decayed branch (LR
to 0 over the last ``decay_fraction`` of the steps) at every smaller budget. The envelope is the lower hull of
all those (FLOPs, final loss) points (``scaling.envelope``). The grown path is one run with ``train.growth``
(the small model until ``growth_at`` budget units of FLOPs, then the large one) on the same WSD shape, with a
fully decayed branch at each grown budget, on the same data order (``train.seed``). Its saving is
``1 - C_envelope(L_grown) / C_grown``, the small model counted; against the large model alone, as the
growth papers report, is kept as a secondary column.

A budget is a multiple of ``base_steps`` steps of the large model in FLOPs. Each size trains a whole
number of its own steps per budget unit (``steps_per_unit``, a multiple of 5), so every branch starts on a
checkpoint of its main run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from growth.bench.growth_protocol import curves, runs, scaling
from growth.bench.growth_protocol.plan import changed_fields, python_sources
from growth.bench.growth_protocol.protocol import Log, run_config
from growth.bench.growth_protocol.recipe import DEFAULT, Recipe
from growth.config import ModelConfig
from growth.model.accounting import flops_per_token


def _shape(d_model: int, n_layers: int, head_dim: int = 32) -> dict[str, int]:
    return {
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": d_model // head_dim,
        "head_dim": head_dim,
        "d_ff": 3 * d_model,
    }


# Sizes by preset, smallest first; growth goes from the first to the last (2x width with heads added, 2x depth).
PRESETS: dict[str, dict] = {
    # ~0.1M -> ~0.85M non-embedding parameters, vocab 1024: they cross near 2.7e13 FLOPs (issue 23's
    # measurement at constant LR), ~2,000 steps of 2,048 tokens of the large model.
    "default": {
        "sizes": {"small": _shape(64, 2), "mid": _shape(96, 3), "large": _shape(128, 4)},
        "base_steps": 1000,
        "scratch_multiples": {"small": (1, 2, 3, 4), "mid": (1, 2, 3, 4), "large": (1, 2, 3, 4, 6)},
        "grown_multiples": (2, 3, 4),
        "growth_at": 1.0,
    },
    # 4x fewer parameters (~0.03M -> ~0.2M): the same questions in minutes.
    "quick": {
        "sizes": {"small": _shape(32, 2, 16), "mid": _shape(48, 3, 16), "large": _shape(64, 4, 16)},
        "base_steps": 250,
        "scratch_multiples": {"small": (1, 2, 3, 4), "mid": (1, 2, 3, 4), "large": (1, 2, 3, 4, 6)},
        "grown_multiples": (2, 3, 4),
        "growth_at": 1.0,
    },
    # GPU: ~3.4M -> ~27M non-embedding parameters, budgets to ~1e16 FLOPs.
    "gpu": {
        "sizes": {"small": _shape(256, 4), "mid": _shape(384, 6), "large": _shape(512, 8)},
        "base_steps": 4000,
        "scratch_multiples": {"small": (1, 2, 3, 4), "mid": (1, 2, 3, 4), "large": (1, 2, 3, 4, 6)},
        "grown_multiples": (2, 3, 4),
        "growth_at": 1.0,
    },
}


@dataclass(frozen=True)
class Envelope:
    preset: str = "default"
    sizes: dict[str, dict[str, int]] = field(default_factory=lambda: dict(PRESETS["default"]["sizes"]))
    base_steps: int = 1000  # one budget unit: this many large-model steps' FLOPs
    scratch_multiples: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: dict(PRESETS["default"]["scratch_multiples"])
    )
    grown_multiples: tuple[int, ...] = (2, 3, 4)
    growth_at: float = 1.0  # budget units of FLOPs the small model trains before growing
    lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3)  # the sweep's start; extended past an edge (lr_sweep)
    seeds: tuple[int, ...] = (0, 1, 2)
    micro_batch_size: int = 16
    seq_len: int = 128
    vocab_size: int = 1024
    warmup_steps: int = 50
    decay_fraction: float = 0.2  # every path decays to 0 over the last 20% of its budget's FLOPs
    eval_batches: int = 128  # 128 x 16 windows x 128 tokens = 262k held-out tokens, the same for every path
    evals_per_run: int = 6
    corpus: str = field(default_factory=python_sources)

    @classmethod
    def of(cls, preset: str, **fields) -> Envelope:
        return cls(preset=preset, **{**PRESETS[preset], **fields})

    @property
    def small(self) -> dict[str, int]:
        return next(iter(self.sizes.values()))

    @property
    def large(self) -> dict[str, int]:
        return list(self.sizes.values())[-1]

    def model(self, shape: dict[str, int]) -> ModelConfig:
        return ModelConfig(**shape, vocab_size=self.vocab_size, max_seq_len=max(256, self.seq_len))

    def step_flops(self, shape: dict[str, int]) -> float:
        return self.micro_batch_size * self.seq_len * flops_per_token(self.model(shape), self.seq_len)

    def params(self, shape: dict[str, int]) -> float:
        """N of the scaling law: the parameters that cost FLOPs, so that C = 6 N D."""
        return flops_per_token(self.model(shape), self.seq_len) / 6

    def steps_per_unit(self, shape: dict[str, int]) -> int:
        """Steps of ``shape`` in one budget unit, a multiple of 5 so its decay (20%) is whole steps."""
        ratio = self.base_steps * self.step_flops(self.large) / self.step_flops(shape)
        return max(5, 5 * round(ratio / 5))

    def unit_flops(self) -> float:
        return self.base_steps * self.step_flops(self.large)

    def to_json(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "params": {k: self.params(s) for k, s in self.sizes.items()},
            "step_flops": {k: self.step_flops(s) for k, s in self.sizes.items()},
        }


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


def _branches(
    bench: Bench, label: str, main_config: dict, points: dict[int, tuple[int, int]]
) -> dict[int, runs.Run]:
    """One WSD main run to the largest of ``points`` (multiple -> (max_steps, decay steps)), a fully decayed
    branch at each other; the finished run of each multiple."""
    largest = max(points)
    main = runs.train(bench.work, label, main_config, bench.threads, bench.log)
    branches = runs.in_parallel(
        {
            m: (
                lambda m=m: runs.branch(
                    bench.work,
                    f"{label}-b{m}",
                    main,
                    main_config,
                    *points[m],
                    bench.threads,
                    bench.log,
                    evals=1,
                )
            )
            for m in points
            if m != largest
        }
    )
    return {**branches, largest: main}


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
    done = _branches(bench, f"{size}-lr{lr:g}-s{seed}", main_config, points)
    out = []
    for m in multiples:
        run, steps = done[m], points[m][0]
        flops = steps * env.step_flops(shape)
        _check_flops(run, flops)
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


def _check_flops(run: runs.Run, planned: float) -> None:
    if abs(run.flops_seen - planned) > 1e-9 * planned:
        raise RuntimeError(
            f"{run.folder}: the trainer counted {run.flops_seen:.6e} FLOPs, the plan {planned:.6e}"
        )


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
    done = _branches(bench, f"grown-s{seed}", config, points)
    out = []
    for m, (steps, _) in points.items():
        small_flops = at_step * env.step_flops(small)
        flops = small_flops + (steps - at_step) * env.step_flops(env.large)
        _check_flops(done[m], flops)
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


def lr_sweep(env: Envelope, bench: Bench, size: str, rounds: int = 2) -> dict:
    """Each size's peak LR: ``env.lrs`` at the smallest budget (fully decayed), then, while the best is at an
    edge, one more point past it (x2 or /2), at most ``rounds`` times. The same rule for every size."""
    multiple = min(env.scratch_multiples[size])
    losses: dict[float, float] = {}
    todo = list(env.lrs)
    for _ in range(rounds + 1):
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


# -- the recipe search: one change at a time, read against the first seed's envelope -------------------------
# name -> arms (label, changes); a change names an Envelope field (growth_at), a Recipe field, or ``small``
# (width: the small model has the large depth; depth: the large width). Every arm trains only the grown path.
ABLATIONS: dict[str, list[tuple[str, dict]]] = {
    "growth_point": [(f"grow at {u:g} units", {"growth_at": u}) for u in (0.25, 0.5, 1.5)],
    "transition": [
        ("re-warm the LR over 100 steps", {"rewarmup_steps": 100}),
        ("reset Adam moments", {"optimizer": "reset"}),
        ("no symmetry-breaking noise", {"noise_std": 0.0}),
        ("noise 1e-2", {"noise_std": 1e-2}),
        ("stacked depth (G_stack, not exact)", {"depth_operator": "stack"}),
    ],
    "dims": [
        ("width only (small has the large depth)", {"small": "width"}),
        ("depth only (small has the large width)", {"small": "depth"}),
    ],
}
RECIPE_FIELDS = {f.name for f in dataclasses.fields(Recipe)}


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
    calls = {
        size: (lambda size=size: scratch(env, bench, size, seed, sweeps[size]["best"])) for size in env.sizes
    }
    for index, (_, changes) in enumerate(arms):
        arm_env = dataclasses.replace(env, **{k: v for k, v in changes.items() if k == "growth_at"})
        arm_recipe = recipe.changed(**{k: v for k, v in changes.items() if k in RECIPE_FIELDS})
        calls[index] = lambda e=arm_env, r=arm_recipe, c=changes: grown(
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


# -- building an Envelope from the command line -----------------------------------------------------------
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "head_dim", "d_ff")


def parse_shape(text: str, flag: str) -> dict[str, int]:
    """``d_model=256,n_layers=8,...`` -> a shape; unset keys follow from d_model (head_dim 32, d_ff 3 d_model)."""
    fields = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in SHAPE_KEYS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"{flag} {text!r}: give positive integers as {'=N,'.join(SHAPE_KEYS)}=N")
        fields[key] = int(value)
    if "d_model" not in fields or "n_layers" not in fields:
        raise ValueError(f"{flag} {text!r}: d_model and n_layers are required")
    head_dim = fields.get("head_dim", fields["d_model"] // fields["n_heads"] if "n_heads" in fields else 32)
    shape = {**_shape(fields["d_model"], fields["n_layers"], head_dim), **fields}
    if shape["n_heads"] * shape["head_dim"] != shape["d_model"]:
        raise ValueError(f"{flag} {text!r}: n_heads * head_dim must equal d_model")
    return shape


def middle_shape(small: dict[str, int], large: dict[str, int]) -> dict[str, int]:
    """Between two sizes: the geometric mean width (whole heads of the small model's size), the mean depth."""
    head_dim = small["head_dim"]
    heads = max(1, round(math.sqrt(small["d_model"] * large["d_model"]) / head_dim))
    return _shape(heads * head_dim, round((small["n_layers"] + large["n_layers"]) / 2), head_dim)


def from_options(
    preset: str,
    seeds: int | None = None,
    base_steps: int | None = None,
    growth_at: float | None = None,
    small: str | None = None,
    large: str | None = None,
    corpus: str | None = None,
) -> Envelope:
    """The preset with the command line's changes; a bad value raises ValueError naming the flag."""
    fields: dict = {}
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds {seeds}: give at least 1")
        fields["seeds"] = tuple(range(seeds))
    if base_steps is not None:
        if base_steps < 20:
            raise ValueError(f"--base-steps {base_steps}: give at least 20 large-model steps per budget unit")
        fields["base_steps"] = base_steps
    if growth_at is not None:
        fields["growth_at"] = growth_at
    if small or large:
        if not (small and large):
            raise ValueError("--small and --large go together (the middle size is derived between them)")
        s, lg = parse_shape(small, "--small"), parse_shape(large, "--large")
        fields["sizes"] = {"small": s, "mid": middle_shape(s, lg), "large": lg}
    if corpus:
        fields["corpus"] = corpus
    env = Envelope.of(preset, **fields)
    first_grown = min(env.grown_multiples)
    if not 0 < env.growth_at < (1 - env.decay_fraction) * first_grown:
        raise ValueError(
            f"--growth-at {env.growth_at}: grow after some training and before the smallest grown "
            f"budget's decay, i.e. between 0 and {(1 - env.decay_fraction) * first_grown:g} units"
        )
    return env
