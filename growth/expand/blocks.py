"""How each block is widened: for every parameter, which axis follows which map, and how.

Notation (docs/design.md Sec. 4): d -> D, k = D // d, r = D - k*d. The residual stream of the wide model
is [h; h; ...; h; 0_r]. Weights that *write* the stream copy their rows (``copy``); weights that
*read* it divide their columns by k, plus zero-sum noise (``divide``). Inner widths follow the same
two roles: a layer that produces neurons/heads copies them, the layer that consumes them divides.

    block         parameter            axis 0 (rows)          axis 1 (columns)
    embedding     embed.weight         vocab (kept)           stream: copy
    LM head       head.proj.weight     vocab (kept)           stream: divide       (untied only)
    attention     q/k/v_proj           heads: copy            stream: divide       (head_dim kept)
                  k/v_proj (GQA)       kv heads: copy         stream: divide       (query group size kept)
                  q/k/v_proj.bias      (kv) heads: copy
                  o_proj               stream: copy           heads: divide
    FFN           gate/up_proj         neurons: copy          stream: divide       (SwiGLU: one map)
                  down_proj            stream: copy           neurons: divide
    GAU           u/v_proj             expansion e: copy      stream: divide
                  z_proj               key size s: copy       stream: divide
                  o_proj               stream: copy           expansion e: divide
                  gamma, beta          (q, k[, q_lin, k_lin]) key size s: new dims 0, see ``gau_scale_offset``
    norms         *.norm.*, final_norm stream, see ``norm_vector``

Heads keep head_dim (so 1/sqrt(d_h) and RoPE frequencies are untouched) and their number grows with
the width. Any map here is exact; the stream is exact for every D >= d with RMSNorm and for integer
multiples with LayerNorm (see ``norm_vector``).

The other operators use the same rows with other maps or factors (``GrowthOptions``, docs/design.md Sec. 4):

    operator             what changes in the table above                                      exact
    head size d_h -> d_h' heads: old dims kept, new dims empty; q x sqrt(d_h'/d_h)            yes
                          (``query_key_factor``); new k/v rows from the grown init (``Role.fresh``:
                          q is 0 there, o_proj reads 0 there); rope_dim pinned to the old rotated width
    interleaved (Su)      every map repeats in place (x1 x1 x2 x2 ...); the stream holds h/sqrt(k):  yes, where
                          writers x 1/sqrt(k), readers x sqrt(k)/k, norms gamma, beta / sqrt(k),     allowed
                          eps / k; heads fixed, d_h x k, q and k x k^(-1/4); refused with RoPE      (``su_refusal``)
    lemon split           a divide axis multiplies by shares alpha, (1-alpha)/(c-1), ...          yes, any alpha
    relative noise        noise std x the weight's RMS, zero-sum per group                        yes
    depth zero / ramp /   ``width.py``: layer sources; new layers zero-writer / gated / copied      yes / at m=0 / no
    stack
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from growth.expand.axes import (
    AxisMap,
    cyclic_map,
    extended_groups,
    grouped_map,
    interleaved_groups,
    interleaved_map,
    lemon_shares,
    su_stream,
    tiled_map,
)
from growth.model.config import ModelConfig
from growth.model.layer_kind import layer_kind

NORM = re.compile(r"(norm|final_norm)\.(weight|bias)$")
SCALAR_BUFFER = re.compile(r"\.alpha$")  # DeepNorm's alpha: a constant of the checkpoint, kept as is
LAYER_PREFIX = re.compile(r"^layers\.\d+\.")
Rule = list[tuple[int, str, str]]  # [(axis, map name, copy | divide), ...]
STEM_RULES: dict[str, Rule] = {
    "embed.weight": [(1, "stream", "copy")],
    "head.proj.weight": [(1, "stream", "divide")],
}


@dataclass(frozen=True)
class Role:
    """What growth does to one parameter of a layer, from its sublayer's declarations (``layer_kind.py``)."""

    rule: Rule | None = None  # the axes of a linear weight or bias
    writer: bool = False  # writes the residual stream: zero in an identity layer (depth_operator=zero)
    query_key: str = ""  # "q" | "k": head-size growth keeps q.k / sqrt(d_h) (``query_key_factor``)
    fresh: bool = False  # head-size growth: new rows from the grown model's own init, so
    # the new q.k and value dimensions can learn (q's new rows are 0, o_proj's new columns are 0)
    scale_offset: bool = False  # GAU's gamma/beta over the key size (``gau_scale_offset``)
    kept: bool = False  # a buffer copied as it is (Performer's random features)


def layer_roles(config: ModelConfig) -> dict[str, Role]:
    """{name inside a layer (e.g. ``attention.sublayer.q_proj.weight``): Role}, derived from each sublayer's
    ``growth_axes`` and ``writers``: a writer copies the stream on its rows and divides its inner axis, a
    reader copies its inner axis and divides the stream (the table above)."""
    roles = {}
    for branch, sublayer in layer_kind(config).sublayers(config).items():
        prefix = f"{branch}.sublayer."
        for child, axis in sublayer.growth_axes.items():
            writer = child in sublayer.writers
            rule = (
                [(0, "stream", "copy"), (1, axis, "divide")]
                if writer
                else [(0, axis, "copy"), (1, "stream", "divide")]
            )
            extra = dict(query_key=getattr(sublayer, "query_key", {}).get(child, ""))
            roles[f"{prefix}{child}.weight"] = Role(
                rule, writer, fresh=child in getattr(sublayer, "fresh_rows", ()), **extra
            )
            if not writer:  # biases (model.qkv_bias) follow their rows
                roles[f"{prefix}{child}.bias"] = Role([(0, axis, "copy")], **extra)
        for name in getattr(sublayer, "scale_offsets", ()):
            roles[prefix + name] = Role(scale_offset=True)
        for name in getattr(sublayer, "kept", ()):
            roles[prefix + name] = Role(kept=True)
        for name, rule in getattr(sublayer, "growth_tensors", {}).items():
            roles[prefix + name] = Role(rule)
    return roles


def rule_for(name: str, config: ModelConfig) -> Rule | None:
    """The axes of a linear weight or bias (None for everything else)."""
    role = role_for(name, config)
    return role.rule if role is not None else None


def role_for(name: str, config: ModelConfig) -> Role | None:
    """The growth role of a model tensor (None for norms and DeepNorm's alpha, handled by name)."""
    if name in STEM_RULES:
        return Role(STEM_RULES[name])
    return layer_roles(config).get(LAYER_PREFIX.sub("", name))


def axis_maps(old: ModelConfig, new: ModelConfig, options=None) -> dict[str, AxisMap]:
    """The map of every axis kind; ``options`` (``GrowthOptions``) picks the width operator and the split."""
    if options is not None and options.width_operator == "interleaved":
        maps = su_axis_maps(old, new)
    else:
        maps = {
            "stream": tiled_map(old.d_model, new.d_model),
            "heads": head_map(old.n_heads, new.n_heads, old.head_dim, new.head_dim),
            # the same cyclic copy over groups: query head j -> j mod H, its group j // g -> (j // g) mod (H / g)
            "kv_heads": head_map(
                old.n_kv_heads or old.n_heads, new.n_kv_heads or new.n_heads, old.head_dim, new.head_dim
            ),
            "ffn": cyclic_map(old.d_ff, new.d_ff),
            "gau_e": cyclic_map(old.gau_expansion, new.gau_expansion),
            "gau_s": cyclic_map(old.gau_key_size, new.gau_key_size),
            "head_index": cyclic_map(old.n_heads, new.n_heads),  # one entry per head (Nystrom's conv)
        }
    if options is not None and options.split == "lemon":
        maps = {name: lemon_shares(m, options.split_alpha) for name, m in maps.items()}
    return maps


def head_map(heads: int, new_heads: int, head_dim: int, new_head_dim: int) -> AxisMap:
    """Heads copied cyclically; a larger head_dim keeps the old dimensions first and starts the new ones empty."""
    if new_head_dim == head_dim:
        return grouped_map(heads, new_heads, head_dim)
    return extended_groups(heads, new_heads, head_dim, new_head_dim)


def su_axis_maps(old: ModelConfig, new: ModelConfig) -> dict[str, AxisMap]:
    """Su's interleaved operator ("我们可以无损放大一个Transformer模型吗（一）"): each channel repeated k times
    in place, the stream scaled by 1/sqrt(k) (norm-preserving); heads keep their number and grow in size,
    each dimension repeated inside its own head. Inner axes hold plain repeats, so a first FFN layer reads the
    stream with W/sqrt(k) and its activation sees the old pre-activations exactly (Su's FFN rule, any
    activation); the second writes with W/(m sqrt(k)). ``su_refusal`` says where this is not exact."""
    heads_dim = (old.head_dim, new.head_dim)
    return {
        "stream": su_stream(interleaved_map(old.d_model, new.d_model)),
        "heads": interleaved_groups(old.n_heads, *heads_dim),
        "kv_heads": interleaved_groups(old.n_kv_heads or old.n_heads, *heads_dim),
        "ffn": interleaved_map(old.d_ff, new.d_ff),
        "gau_e": cyclic_map(old.gau_expansion, new.gau_expansion),
        "gau_s": cyclic_map(old.gau_key_size, new.gau_key_size),
        "head_index": cyclic_map(old.n_heads, new.n_heads),
    }


def su_refusal(old: ModelConfig, new: ModelConfig) -> str | None:
    """Why the interleaved operator is not exact (or not offered) for this growth, or None."""
    if not layer_kind(old).interleaved_growth:
        return (
            f"width_operator=interleaved is derived for attention + FFN layers (Su); model.layer={old.layer} "
            "grows with width_operator=tiled"
        )
    if new.d_model % old.d_model:
        return (
            f"width_operator=interleaved repeats each channel k times: model.d_model {old.d_model} -> "
            f"{new.d_model} is not an integer multiple; use width_operator=tiled"
        )
    if new.n_heads != old.n_heads:
        return (
            f"width_operator=interleaved keeps the head count and grows each head (Su): model.n_heads must stay "
            f"{old.n_heads}, got {new.n_heads} (head_dim {old.head_dim} -> {new.d_model // old.n_heads}); use "
            "width_operator=tiled to add heads"
        )
    if old.position == "rope":
        return (
            "width_operator=interleaved is not exact with model.position=rope: repeating a rotated dimension in "
            "place gives the copies other frequencies (Su: with RoPE it is 'basically impossible' to enlarge "
            "losslessly); use width_operator=tiled, which keeps every head's RoPE"
        )
    if new.d_ff % old.d_ff:
        return (
            f"width_operator=interleaved repeats FFN neurons in place: model.d_ff {old.d_ff} -> {new.d_ff} is not "
            "an integer multiple"
        )
    return None


def query_key_factor(role: Role, old: ModelConfig, new: ModelConfig, width_operator: str = "tiled") -> float:
    """head_dim d -> d' must keep q.k / sqrt(d). Tiled (old dims kept, new ones 0 in q): q x sqrt(d'/d).
    Interleaved (every dim repeated r = d'/d times, so q.k x r): q and k x r^(-1/4) each (Su's choice)."""
    if not role.query_key or new.head_dim == old.head_dim:
        return 1.0
    ratio = new.head_dim / old.head_dim
    if width_operator == "interleaved":
        return ratio**-0.25
    return math.sqrt(ratio) if role.query_key == "q" else 1.0


def stream_norm_factor(old: ModelConfig, new: ModelConfig) -> float:
    """sqrt(k d / D): the RMS of [h; ...; h; 0_r] is sqrt(kd/D) times h's, so gamma is scaled by it
    (and eps by kd/D, in the config) to give every copy exactly the small model's output."""
    k = new.d_model // old.d_model
    return math.sqrt(k * old.d_model / new.d_model)


def norm_vector(value: torch.Tensor, is_gain: bool, stream: AxisMap, factor: float) -> torch.Tensor:
    """LayerNorm/RMSNorm gain (or LayerNorm bias) on the stream: tiled, scaled by ``factor`` for r > 0.
    Residue channels carry 0 in and give 0 out; their gain starts at the copies' mean so they can learn."""
    tiled = value.index_select(0, stream.src.clamp(min=0)).double()
    if stream.write_scale != 1.0:  # Su's interleaved stream h/sqrt(k): gamma and beta / sqrt(k) (eps / k)
        tiled = tiled * stream.write_scale
    if is_gain:
        tiled = tiled * factor
        fill = tiled[stream.src >= 0].mean() if (stream.src < 0).any() else 0.0
    else:
        fill = 0.0
    return torch.where(stream.src >= 0, tiled, torch.as_tensor(fill, dtype=torch.float64)).to(value.dtype)


def gau_scale_offset(value: torch.Tensor, old: ModelConfig, new: ModelConfig) -> torch.Tensor:
    """gamma/beta (rows q, k[, q_lin, k_lin]) over key size s -> s': new dimensions are 0, so they add
    nothing to q.k. The (quadratic) query row is scaled by sqrt(s'/s) so q.k / sqrt(s') is unchanged;
    FLASH's linear part has no 1/sqrt(s) and keeps its rows. RoPE keeps the old frequencies because the
    grown config rotates only the old dimensions (``rope_dim``)."""
    out = torch.zeros(value.shape[0], new.gau_key_size, dtype=value.dtype)
    out[:, : old.gau_key_size] = value
    out[0] *= math.sqrt(new.gau_key_size / old.gau_key_size)
    return out
