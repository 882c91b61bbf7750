"""Function-preserving growth of a GrowthLM: wider stream, FFN, heads, GAU e/s, and deeper stacks.

``grow_state_dict`` maps a small model's tensors (weights, EMA weights) one at a time, following the
per-block rules in ``blocks.py`` and the operators a ``GrowthOptions`` picks (``options.py``). Depth:

  * ``zero`` (Pre-LN; ``auto`` there): identity layers, fresh weights whose writers (attention/GAU out, FFN
    out) are zero, so each new layer adds 0 to the stream at init; norm gains stay at 1 (a zero gain would
    leave SwiGLU with zero gradients). Post-LN and DeepNorm apply a norm after every residual add, so a
    zero-writer layer is not the identity there: refused.
  * ``ramp`` (every residual kind; ``auto`` for Post-LN/DeepNorm; MSG): new layers with their full fresh
    init behind a gate h <- m L(h) + (1 - m) h (``growth.model.transformer.set_depth_gate``), m = 0 at the
    growth step (exact), raised to 1 over ``ramp_steps`` optimizer steps by the ``DepthRamp`` callback, then
    folded away. DeepNorm: the old layers keep their stored alpha (exact); the new ones are built as layers
    of the deeper stack (alpha' = (2N')^(1/4), beta' init) — the gate, not alpha, makes them exact.
  * ``stack`` (G_stack, Du et al. 2024): the old stack repeated, layer i <- i mod L; not function-preserving
    (``GrowthPlan.function_preserving``), so the report records the loss change instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from growth.expand import blocks
from growth.expand.axes import remap
from growth.expand.errors import GrowthError
from growth.expand.options import GrowthOptions
from growth.model.config import ModelConfig, fields_with_role, model_config_from_dict, model_differences
from growth.model.layer_kind import layer_kind
from growth.model.residual import RESIDUALS

# Which fields growth may change is each ModelConfig field's role (growth/config.py). Of the growable
# ones, these the plan derives from the sizes instead of taking the target's value...
DERIVED = ("norm_eps", "rope_dim", "n_kv_heads")
# ...and the rest are the sizes the operators grow on request; none may shrink.
SIZES = tuple(name for name in fields_with_role("growable") if name not in DERIVED)
LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass
class GrowthPlan:
    old: ModelConfig
    new: ModelConfig  # the grown model's config, with the implied adjustments applied
    layer_sources: list[
        int | None
    ]  # new layer index -> old layer index, None for a new (identity/ramped) layer
    notes: list[str] = field(default_factory=list)
    options: GrowthOptions = field(default_factory=GrowthOptions)
    depth_operator: str = (
        "none"  # zero | ramp | stack when the depth grows (``options.depth_for``), else none
    )

    @property
    def stream_multiple(self) -> int:
        return self.new.d_model // self.old.d_model

    @property
    def new_layers(self) -> list[int]:
        """Layers with no source: fresh layers (zero writers, or ramped in)."""
        return [i for i, source in enumerate(self.layer_sources) if source is None]

    @property
    def ramp_layers(self) -> list[int]:
        """The layers a ``DepthRamp`` gates: h <- m L(h) + (1 - m) h, m = 0 at the growth step."""
        return self.new_layers if self.depth_operator == "ramp" else []

    @property
    def function_preserving(self) -> bool:
        """False for G_stack: the grown model is checked on its widening only, its loss change reported."""
        return self.depth_operator != "stack"

    def source_name(self, name: str) -> str | None:
        """The small model's tensor a grown tensor comes from; None inside an identity layer."""
        match = LAYER.match(name)
        if not match:
            return name
        source = self.layer_sources[int(match.group(1))]
        return None if source is None else LAYER.sub(f"layers.{source}.", name)


def plan_growth(old: ModelConfig, target: ModelConfig, options: GrowthOptions | None = None) -> GrowthPlan:
    """Check that ``target`` can be reached from ``old`` with the operators ``options`` picks (exactly, but
    for ``depth_operator=stack``); derive the grown config."""
    options = options or GrowthOptions()
    changed = model_differences(old, target, "fixed")
    if changed:
        key, was, now = changed[0]
        raise GrowthError(
            f"model.{key} changes from {was!r} to {now!r}; growth keeps it (only {', '.join(SIZES)} may grow)"
        )
    for key in SIZES:
        if getattr(target, key) < getattr(old, key):
            raise GrowthError(
                f"model.{key}={getattr(target, key)} is smaller than the source's {getattr(old, key)}; "
                "growth only makes models larger"
            )
    if refusal := layer_kind(old).growth_refusal(old, target):
        raise GrowthError(refusal)
    interleaved = options.width_operator == "interleaved" and _width_changes(old, target)
    if interleaved and (refusal := blocks.su_refusal(old, target)):
        raise GrowthError(refusal)
    if target.d_model % old.d_model and old.norm == "layernorm":
        raise GrowthError(
            f"model.d_model {old.d_model} -> {target.d_model} is not an integer multiple, which is only "
            "exact with model.norm=rmsnorm; use a multiple of the source width"
        )
    depth = "none"
    if target.n_layers != old.n_layers:
        norm_after_add = RESIDUALS.get(old.residual).norm_after_add
        depth = options.depth_for(norm_after_add)
        if depth == "zero" and norm_after_add:
            raise GrowthError(
                f"depth_operator=zero is not function-preserving with model.residual={old.residual}: a "
                "norm follows every residual add, so a layer with zero writers is LN(LN(h)), not h; use "
                "depth_operator=ramp (exact at the growth step, the default here) or stack"
            )
    notes: list[str] = []
    changes = {
        **_norm_eps(old, target, notes, interleaved),
        **_rope_dim(old, target, notes),
        **_kv_heads(old, target, notes),
    }
    grown = model_config_from_dict({**dataclasses.asdict(target), **changes})
    return GrowthPlan(old, grown, layer_sources(old.n_layers, grown.n_layers, depth), notes, options, depth)


def _width_changes(old: ModelConfig, target: ModelConfig) -> bool:
    return any(getattr(old, key) != getattr(target, key) for key in SIZES if key != "n_layers")


def _norm_eps(old: ModelConfig, target: ModelConfig, notes: list[str], interleaved: bool = False) -> dict:
    """The source's eps, rescaled when the width is not a multiple (see ``blocks.stream_norm_factor``), or for
    Su's interleaved stream h/sqrt(k), whose variance is var(h)/k: eps/k."""
    if interleaved and target.d_model != old.d_model:
        k = target.d_model // old.d_model
        notes.append(f"norm_eps {old.norm_eps:g} -> {old.norm_eps / k:g} (interleaved stream h/sqrt({k}))")
        return {"norm_eps": old.norm_eps / k}
    if not target.d_model % old.d_model:
        return {"norm_eps": old.norm_eps}
    eps = old.norm_eps * (target.d_model // old.d_model) * old.d_model / target.d_model
    notes.append(f"norm_eps {old.norm_eps:g} -> {eps:g} and gains x sqrt(kd/D) (non-multiple width)")
    return {"norm_eps": eps}


def _kv_heads(old: ModelConfig, target: ModelConfig, notes: list[str]) -> dict:
    """Grouped-query attention keeps its query group size g = n_heads / n_kv_heads: key/value heads are copied
    with their groups (``blocks.axis_maps``: ``kv_heads``), so n_kv_heads' = n_heads' / g. The target may
    carry the source's value or that one; 0 (one per query head) stays 0."""
    if "n_kv_heads" not in layer_kind(old).sizes:
        return {"n_kv_heads": old.n_kv_heads}
    group = old.n_heads // (old.n_kv_heads or old.n_heads)
    if target.n_heads % group:
        raise GrowthError(
            f"model.n_heads={target.n_heads} is not a multiple of the query group size {group} "
            f"(n_heads / n_kv_heads = {old.n_heads} / {old.n_kv_heads}); grow n_heads by a multiple of {group}"
        )
    derived = target.n_heads // group if old.n_kv_heads else 0
    if target.n_kv_heads not in (old.n_kv_heads, derived, target.n_heads // group):
        raise GrowthError(
            f"model.n_kv_heads={target.n_kv_heads} changes the query group size from {group}; growth "
            f"keeps it (set model.n_kv_heads={derived})"
        )
    if derived != old.n_kv_heads:
        notes.append(f"n_kv_heads {old.n_kv_heads} -> {derived} (query group size {group} kept)")
    return {"n_kv_heads": derived}


def _rope_dim(old: ModelConfig, target: ModelConfig, notes: list[str]) -> dict:
    """RoPE keeps its rotated dimensions; growing the GAU key size leaves the new ones unrotated."""
    if old.position != "rope":
        return {}
    width = layer_kind(old).rope_width_field
    rotated = old.rope_dim or getattr(old, width)
    if getattr(target, width) != getattr(old, width):
        notes.append(
            f"rope_dim={rotated}: {width} {getattr(old, width)} -> {getattr(target, width)}, the new "
            "dimensions are not rotated (old frequencies kept)"
        )
        return {"rope_dim": rotated}
    if (target.rope_dim or getattr(target, width)) != rotated:
        raise GrowthError(
            f"model.rope_dim changes from {old.rope_dim} to {target.rope_dim}; growth keeps RoPE as is"
        )
    return {}


def layer_sources(old_layers: int, new_layers: int, operator: str = "zero") -> list[int | None]:
    """zero / ramp: old layers spread evenly through the deeper stack (x2: old at even positions), new layers
    between. stack (G_stack): the whole old stack repeated, new layer i <- old i mod L (12 -> 48: four copies
    of layers 0..11 in order)."""
    if operator == "stack":
        return [i % old_layers for i in range(new_layers)]
    sources: list[int | None] = [None] * new_layers
    for i in range(old_layers):
        sources[(i * new_layers) // old_layers] = i
    return sources


def _tied_output_norm(plan: GrowthPlan) -> str | None:
    """With tied embeddings the head reads k copies through the embedding matrix (no /k possible
    without breaking the embedding), so the last norm before the head is scaled by 1/k instead."""
    if (
        not plan.new.tie_embeddings
        or plan.stream_multiple == 1
        or plan.options.width_operator == "interleaved"
    ):
        return None  # interleaved: the head reads h/sqrt(k) through E/sqrt(k), k copies: exactly E h
    if not RESIDUALS.get(plan.new.residual).norm_after_add:
        return "final_norm."
    # The last layer that carries a source's norm (a ramped layer after it is the identity at m = 0).
    last = max(i for i, source in enumerate(plan.layer_sources) if source is not None)
    last_branch = list(layer_kind(plan.new).sublayers(plan.new))[-1]
    return f"layers.{last}.{last_branch}.norm."


def grow_tensor(
    name: str,
    value: torch.Tensor,
    plan: GrowthPlan,
    maps,
    noise_std: float,
    generator: torch.Generator | None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """One tensor of the small model -> the same tensor of the grown model (``init``: the grown model's own
    initial tensor, for the rows ``Role.fresh`` takes from it)."""
    if plan.new.tie_embeddings and name == "head.proj.weight":
        name = "embed.weight"  # a tied matrix follows the embedding's rule, and never gets noise
    if blocks.SCALAR_BUFFER.search(name):
        return value.clone()
    if blocks.NORM.search(name):
        gain = name.endswith("weight")
        out = blocks.norm_vector(value, gain, maps["stream"], blocks.stream_norm_factor(plan.old, plan.new))
        tied = _tied_output_norm(plan)
        return out / plan.stream_multiple if tied and name.startswith(tied) else out
    growth_role = blocks.role_for(name, plan.new)
    if growth_role is not None and growth_role.kept:
        return value.clone()
    if growth_role is not None and growth_role.scale_offset:
        return blocks.gau_scale_offset(value, plan.old, plan.new)
    if growth_role is None or growth_role.rule is None:
        raise GrowthError(
            f"no growth rule for parameter {name}; declare its sublayer's growth_axes (growth/model/layer_kind.py)"
        )
    rule = growth_role.rule
    if noise_std > 0 and plan.options.noise == "relative":  # std relative to this weight's scale (its RMS)
        noise_std = noise_std * value.detach().double().pow(2).mean().sqrt().item()
    out = value
    for axis, map_name, role in rule:
        noisy = (
            noise_std
            if role == "divide" and not (plan.new.tie_embeddings and name == "embed.weight")
            else 0.0
        )
        out = remap(out, axis, maps[map_name], role, noisy, generator)
    factor = blocks.query_key_factor(growth_role, plan.old, plan.new, plan.options.width_operator)
    if factor != 1.0:
        out = out * factor
    rows = maps[rule[0][1]].src < 0 if rule[0][0] == 0 else None
    if rows is None or not rows.any():
        return out
    if growth_role.fresh and init is not None and not init.is_meta:
        out[rows] = init[rows].to(out.dtype)
    elif growth_role.query_key == "q":
        out[rows] = 0.0  # new query dimensions start at zero (not even zero-sum noise)
    return out


def grow_state_dict(
    state: dict[str, torch.Tensor],
    plan: GrowthPlan,
    fresh: dict[str, torch.Tensor],
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Map every tensor; ``fresh`` holds the grown model's own initial tensors (for new layers, and the
    rows of ``Role.fresh``)."""
    maps = blocks.axis_maps(plan.old, plan.new, plan.options)
    grown = {}
    for name, init in fresh.items():
        source = plan.source_name(name)
        if source is None:  # a new layer: its own init; an identity layer's writers are zero
            role = blocks.role_for(name, plan.new)
            zero = plan.depth_operator == "zero" and role is not None and role.writer
            grown[name] = torch.zeros_like(init) if zero else init.clone()
        else:
            grown[name] = grow_tensor(name, state[source], plan, maps, noise_std, generator, init)
    return grown


def widen(
    model: nn.Module,
    new_model_config: ModelConfig,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    options: GrowthOptions | None = None,
) -> nn.Module:
    """The grown module: computes the same function as ``model`` (fp32, dropout off) to ~1e-6 (but for
    ``depth_operator=stack``). Ramped layers come with their gate at m = 0 (``set_depth_gate``); raise it
    to 1 (``DepthRamp`` does in a run) and fold it (``fold_depth_gate``). ``options.noise_std`` and
    ``options.seed`` are ``grow_state``'s: here ``noise_std`` and ``generator``."""
    from growth.model import build_model
    from growth.model.transformer import set_depth_gate

    plan = plan_growth(model.config, new_model_config, options)
    with torch.random.fork_rng():
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        grown = build_model(plan.new)
    fresh = {k: v for k, v in grown.state_dict().items()}
    state = grow_state_dict(model.state_dict(), plan, fresh, noise_std, generator)
    grown.load_state_dict(state, strict=True)
    for index in plan.ramp_layers:
        set_depth_gate(grown.layers, index, 0.0)
    return grown
