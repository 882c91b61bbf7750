"""Shapes, budgets, and the steps of every phase of every path.

A budget is a number of FLOPs, named by how many steps of the large model it buys (``base_steps`` x a
multiple). Scratch spends it all on the large model; the grown path spends ``fraction`` of it on the
small model (and, with two stages, the half-grown one) and the rest on the large model after growing,
so it sees more tokens for the same FLOPs. FLOPs are the trainer's own accounting
(``growth/model/accounting.py``: 6 N_matmul + attention per token), checked against each run's
``flops_seen``.
"""

from __future__ import annotations

import dataclasses
import math
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from growth.bench.growth_protocol.recipe import Recipe
from growth.config import ModelConfig
from growth.model.accounting import flops_per_token

# ~1M -> ~8M and ~3.4M -> ~27M non-embedding parameters: 2x width (heads added) and 2x depth.
SCALES: dict[str, dict[str, dict[str, int]]] = {
    "default": {
        "small": {"d_model": 128, "n_layers": 4, "n_heads": 4, "head_dim": 32, "d_ff": 384},
        "large": {"d_model": 256, "n_layers": 8, "n_heads": 8, "head_dim": 32, "d_ff": 768},
    },
    "large": {
        "small": {"d_model": 256, "n_layers": 4, "n_heads": 8, "head_dim": 32, "d_ff": 768},
        "large": {"d_model": 512, "n_layers": 8, "n_heads": 16, "head_dim": 32, "d_ff": 1536},
    },
}
WIDTH_FIELDS = ("d_model", "n_heads", "head_dim", "d_ff")


def python_sources() -> str:
    """The data issue's corpus every install has: the Python sources of this interpreter's packages."""
    return str(Path(sysconfig.get_paths()["purelib"]) / "**" / "*.py")


@dataclass(frozen=True)
class Protocol:
    scale: str = "default"
    base_steps: int = 60  # the smallest budget, in large-model steps
    scratch_multiples: tuple[int, ...] = (1, 2, 4, 8)  # scratch goes 2x past the grown path's largest budget,
    grown_multiples: tuple[int, ...] = (1, 2, 4)  # so its saving there is read inside the scratch curve
    lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3)  # the peak-LR sweep at the smallest budget (scratch)
    seeds: tuple[int, ...] = (0, 1, 2)
    micro_batch_size: int = 16
    seq_len: int = 128
    vocab_size: int = 1024
    warmup_steps: int = 10
    decay_fraction: float = 0.2  # WSD: the last 20% of the large model's steps of a budget decay
    eval_batches: int = 16
    evals_per_run: int = 8  # each costs eval_batches forward passes: ~5 large steps
    corpus: str = field(default_factory=python_sources)

    @property
    def small(self) -> dict[str, int]:
        return SCALES[self.scale]["small"]

    @property
    def large(self) -> dict[str, int]:
        return SCALES[self.scale]["large"]

    def model_config(self, shape: dict[str, int]) -> ModelConfig:
        return ModelConfig(**shape, vocab_size=self.vocab_size, max_seq_len=max(256, self.seq_len))

    def step_flops(self, shape: dict[str, int]) -> float:
        tokens = self.micro_batch_size * self.seq_len
        return tokens * flops_per_token(self.model_config(shape), self.seq_len)

    def budget_flops(self, multiple: int) -> float:
        return multiple * self.base_steps * self.step_flops(self.large)

    def decay_steps(self, multiple: int) -> int:
        """The decay length of a budget: the same for scratch and the grown path (large-model steps)."""
        return max(1, round(self.decay_fraction * multiple * self.base_steps))

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "small": self.small, "large": self.large}


QUICK = dict(base_steps=15, seeds=(0,), warmup_steps=5, evals_per_run=4, eval_batches=8)


@dataclass(frozen=True)
class Phase:
    shape: dict[str, int]
    steps: int


def stage_shapes(protocol: Protocol, recipe: Recipe) -> list[dict[str, int]]:
    """The models of the grown path, small first, large last."""
    small, large = protocol.small, protocol.large
    wide = {**small, **{k: large[k] for k in WIDTH_FIELDS}}
    if recipe.dims == "width":
        return [{**small, "n_layers": large["n_layers"]}, large]
    if recipe.dims == "depth":
        return [wide, large]
    return [small, wide, large] if recipe.stages == "two" else [small, large]


def grown_phases(
    protocol: Protocol, shapes: list[dict[str, int]], budget: float, fraction: float
) -> list[Phase]:
    """Steps per model: ``fraction`` of ``budget`` split evenly over the models before the last growth,
    the rest on the large model (at least one step each)."""
    before = shapes[:-1]
    phases = [
        Phase(s, max(1, round(fraction * budget / len(before) / protocol.step_flops(s)))) for s in before
    ]
    spent = sum(p.steps * protocol.step_flops(p.shape) for p in phases)
    last = max(1, round((budget - spent) / protocol.step_flops(shapes[-1])))
    return phases + [Phase(shapes[-1], last)]


def phase_flops(protocol: Protocol, phases: list[Phase]) -> list[float]:
    return [p.steps * protocol.step_flops(p.shape) for p in phases]


def flops_at_step(protocol: Protocol, phases: list[Phase], step: int) -> float:
    """FLOPs seen after ``step`` optimizer steps of the path (phases in order)."""
    total, start = 0.0, 0
    for phase in phases:
        taken = min(max(step - start, 0), phase.steps)
        total += taken * protocol.step_flops(phase.shape)
        start += phase.steps
    return total


def changed_fields(old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in new.items() if old.get(k) != v}


def eval_interval(protocol: Protocol, steps: int) -> int:
    return max(1, math.ceil(steps / protocol.evals_per_run))
