"""Function-preserving growth of a GrowthLM: wider stream, FFN, heads, GAU e/s, and deeper stacks.

``grow_state_dict`` maps a small model's tensors (weights, EMA weights) one at a time, following the
per-block rules in ``blocks.py``. Depth (Pre-LN only) inserts identity layers: fresh weights whose
writers (attention/GAU out, FFN out) are zero, so each new layer adds 0 to the stream at init; norm
gains stay at 1 (a zero gain would leave SwiGLU with zero gradients). Post-LN and DeepNorm apply a
norm after every residual add, so a new layer is never the identity; growing their depth is refused.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from growth.config import ModelConfig, fields_with_role, model_config_from_dict, model_differences
from growth.expand import blocks
from growth.expand.axes import remap
from growth.model.residual import RESIDUALS

# Which fields growth may change is each ModelConfig field's role (growth/config.py). Of the growable
# ones, these the plan derives from the sizes instead of taking the target's value...
DERIVED = ("norm_eps", "rope_dim")
# ...and the rest are the sizes the operators grow on request; none may shrink.
SIZES = tuple(name for name in fields_with_role("growable") if name not in DERIVED)
WRITERS = re.compile(r"(attention\.sublayer\.o_proj|ffn\.sublayer\.down_proj|gau\.sublayer\.o_proj)\.weight$")
LAYER = re.compile(r"^layers\.(\d+)\.")


class GrowthError(ValueError):
    """A growth that cannot be made exact; the message says why and what to change."""


@dataclass
class GrowthPlan:
    old: ModelConfig
    new: ModelConfig  # the grown model's config, with the implied adjustments applied
    layer_sources: list[int | None]  # new layer index -> old layer index, None for an identity layer
    notes: list[str] = field(default_factory=list)

    @property
    def stream_multiple(self) -> int:
        return self.new.d_model // self.old.d_model

    def source_name(self, name: str) -> str | None:
        """The small model's tensor a grown tensor comes from; None inside an identity layer."""
        match = LAYER.match(name)
        if not match:
            return name
        source = self.layer_sources[int(match.group(1))]
        return None if source is None else LAYER.sub(f"layers.{source}.", name)


def plan_growth(old: ModelConfig, target: ModelConfig) -> GrowthPlan:
    """Check that ``target`` can be reached exactly from ``old``; derive the grown config."""
    changed = model_differences(old, target, "fixed")
    if changed:
        key, was, now = changed[0]
        raise GrowthError(f"model.{key} changes from {was!r} to {now!r}; growth keeps it "
                          f"(only {', '.join(SIZES)} may grow)")
    for key in SIZES:
        if getattr(target, key) < getattr(old, key):
            raise GrowthError(f"model.{key}={getattr(target, key)} is smaller than the source's {getattr(old, key)}; "
                              "growth only makes models larger")
    if target.d_model % old.d_model and old.norm == "layernorm":
        raise GrowthError(f"model.d_model {old.d_model} -> {target.d_model} is not an integer multiple, which is only "
                          "exact with model.norm=rmsnorm; use a multiple of the source width")
    if target.n_layers != old.n_layers and RESIDUALS.get(old.residual).norm_after_add:
        raise GrowthError(f"growing depth with model.residual={old.residual} is not function-preserving (a norm "
                          "follows every residual add); grow width only, or use model.residual=pre")
    notes: list[str] = []
    changes = {**_norm_eps(old, target, notes), **_rope_dim(old, target, notes)}
    grown = model_config_from_dict({**dataclasses.asdict(target), **changes})
    return GrowthPlan(old, grown, layer_sources(old.n_layers, grown.n_layers), notes)


def _norm_eps(old: ModelConfig, target: ModelConfig, notes: list[str]) -> dict:
    """The source's eps, rescaled when the width is not a multiple (see ``blocks.stream_norm_factor``)."""
    if not target.d_model % old.d_model:
        return {"norm_eps": old.norm_eps}
    eps = old.norm_eps * (target.d_model // old.d_model) * old.d_model / target.d_model
    notes.append(f"norm_eps {old.norm_eps:g} -> {eps:g} and gains x sqrt(kd/D) (non-multiple width)")
    return {"norm_eps": eps}


def _rope_dim(old: ModelConfig, target: ModelConfig, notes: list[str]) -> dict:
    """RoPE keeps its rotated dimensions; growing the GAU key size leaves the new ones unrotated."""
    if old.position != "rope":
        return {}
    rotated = old.rope_dim or _key_width(old)
    if old.layer == "gau" and target.gau_key_size != old.gau_key_size:
        notes.append(f"rope_dim={rotated}: new key dimensions are not rotated (old frequencies kept)")
        return {"rope_dim": rotated}
    if (target.rope_dim or _key_width(target)) != rotated:
        raise GrowthError(f"model.rope_dim changes from {old.rope_dim} to {target.rope_dim}; growth keeps RoPE as is")
    return {}


def _key_width(config: ModelConfig) -> int:
    """The per-head width RoPE rotates when model.rope_dim is 0."""
    if config.layer == "transformer":
        return config.head_dim
    if config.layer == "gau":
        return config.gau_key_size
    raise GrowthError(f"no RoPE growth rule for model.layer={config.layer}; add one in growth/expand/width.py")


def layer_sources(old_layers: int, new_layers: int) -> list[int | None]:
    """Old layers spread evenly through the deeper stack (x2: old at even positions), identity between."""
    sources: list[int | None] = [None] * new_layers
    for i in range(old_layers):
        sources[(i * new_layers) // old_layers] = i
    return sources


def _tied_output_norm(plan: GrowthPlan) -> str | None:
    """With tied embeddings the head reads k copies through the embedding matrix (no /k possible
    without breaking the embedding), so the last norm before the head is scaled by 1/k instead."""
    if not plan.new.tie_embeddings or plan.stream_multiple == 1:
        return None
    if not RESIDUALS.get(plan.new.residual).norm_after_add:
        return "final_norm."
    last = plan.new.n_layers - 1
    return f"layers.{last}.gau.norm." if plan.new.layer == "gau" else f"layers.{last}.ffn.norm."


def grow_tensor(name: str, value: torch.Tensor, plan: GrowthPlan, maps, noise_std: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One tensor of the small model -> the same tensor of the grown model."""
    if plan.new.tie_embeddings and name == "head.proj.weight":
        name = "embed.weight"  # a tied matrix follows the embedding's rule, and never gets noise
    if blocks.SCALAR_BUFFER.search(name):
        return value.clone()
    if blocks.NORM.search(name):
        gain = name.endswith("weight")
        out = blocks.norm_vector(value, gain, maps["stream"], blocks.stream_norm_factor(plan.old, plan.new))
        tied = _tied_output_norm(plan)
        return out / plan.stream_multiple if tied and name.startswith(tied) else out
    if blocks.SCALE_OFFSET.search(name):
        return blocks.gau_scale_offset(value, plan.old, plan.new)
    rule = blocks.rule_for(name)
    if rule is None:
        raise GrowthError(f"no growth rule for parameter {name}; add one in growth/expand/blocks.py")
    out = value
    for axis, map_name, role in rule:
        noisy = noise_std if role == "divide" and not (plan.new.tie_embeddings and name == "embed.weight") else 0.0
        out = remap(out, axis, maps[map_name], role, noisy, generator)
    return out


def grow_state_dict(state: dict[str, torch.Tensor], plan: GrowthPlan, fresh: dict[str, torch.Tensor],
                    noise_std: float = 0.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Map every tensor; ``fresh`` holds the grown model's own initial tensors (for identity layers)."""
    maps = blocks.axis_maps(plan.old, plan.new)
    grown = {}
    for name, init in fresh.items():
        source = plan.source_name(name)
        if source is None:  # an identity layer: its own init, writers zeroed
            grown[name] = torch.zeros_like(init) if WRITERS.search(name) else init.clone()
        else:
            grown[name] = grow_tensor(name, state[source], plan, maps, noise_std, generator)
    return grown


def widen(model: nn.Module, new_model_config: ModelConfig, noise_std: float = 0.0,
          generator: torch.Generator | None = None) -> nn.Module:
    """The grown module: computes the same function as ``model`` (fp32, dropout off) to ~1e-6."""
    from growth.model import build_model

    plan = plan_growth(model.config, new_model_config)
    with torch.random.fork_rng():
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        grown = build_model(plan.new)
    fresh = {k: v for k, v in grown.state_dict().items()}
    state = grow_state_dict(model.state_dict(), plan, fresh, noise_std, generator)
    grown.load_state_dict(state, strict=True)
    return grown
