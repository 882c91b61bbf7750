"""The envelope protocol's sizes and budgets (``Envelope``, the presets) and building one from the command line.

A budget is a multiple of ``base_steps`` steps of the large model in FLOPs (a *unit*). Each size trains a whole
number of its own steps per unit (``steps_per_unit``, a multiple of 5), so every decay branch starts on a
checkpoint of its main run. docs/growth_benchmark.md has the protocol.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from growth.bench.growth_protocol.plan import python_sources
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
    # 4x fewer parameters (~0.03M -> ~0.2M): the same questions in an hour. Small and large cross near 4 units
    # (measured: docs/growth_benchmark.md), so the budgets go to 8, twice the crossover.
    "quick": {
        "sizes": {"small": _shape(32, 2, 16), "mid": _shape(48, 3, 16), "large": _shape(64, 4, 16)},
        "base_steps": 250,
        "scratch_multiples": {
            "small": (1, 2, 3, 4, 6, 8),
            "mid": (1, 2, 3, 4, 6, 8),
            "large": (1, 2, 3, 4, 6, 8),
        },
        "grown_multiples": (2, 3, 4, 6, 8),
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
    sweep_extensions: int = 2  # how many times the sweep may step past an edge
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
