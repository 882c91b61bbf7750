"""How each block is widened: for every parameter, which axis follows which map, and how.

Notation (docs/design.md Sec. 4): d -> D, k = D // d, r = D - k*d. The residual stream of the wide model
is [h; h; ...; h; 0_r]. Weights that *write* the stream copy their rows (``copy``); weights that
*read* it divide their columns by k, plus zero-sum noise (``divide``). Inner widths follow the same
two roles: a layer that produces neurons/heads copies them, the layer that consumes them divides.

    block         parameter            axis 0 (rows)          axis 1 (columns)
    embedding     embed.weight         vocab (kept)           stream: copy
    LM head       head.proj.weight     vocab (kept)           stream: divide       (untied only)
    attention     q/k/v_proj           heads: copy            stream: divide       (head_dim kept)
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
"""

from __future__ import annotations

import math
import re

import torch

from growth.config import ModelConfig
from growth.expand.axes import AxisMap, cyclic_map, grouped_map, tiled_map

# (pattern on the parameter name, [(axis, map name, role), ...])
RULES: list[tuple[str, list[tuple[int, str, str]]]] = [
    (r"embed\.weight$", [(1, "stream", "copy")]),
    (r"head\.proj\.weight$", [(1, "stream", "divide")]),
    (r"attention\.sublayer\.[qkv]_proj\.weight$", [(0, "heads", "copy"), (1, "stream", "divide")]),
    (r"attention\.sublayer\.o_proj\.weight$", [(0, "stream", "copy"), (1, "heads", "divide")]),
    (r"ffn\.sublayer\.(gate|up)_proj\.weight$", [(0, "ffn", "copy"), (1, "stream", "divide")]),
    (r"ffn\.sublayer\.down_proj\.weight$", [(0, "stream", "copy"), (1, "ffn", "divide")]),
    (r"gau\.sublayer\.[uv]_proj\.weight$", [(0, "gau_e", "copy"), (1, "stream", "divide")]),
    (r"gau\.sublayer\.z_proj\.weight$", [(0, "gau_s", "copy"), (1, "stream", "divide")]),
    (r"gau\.sublayer\.o_proj\.weight$", [(0, "stream", "copy"), (1, "gau_e", "divide")]),
]
NORM = re.compile(r"(norm|final_norm)\.(weight|bias)$")
SCALE_OFFSET = re.compile(r"gau\.sublayer\.(gamma|beta)$")
SCALAR_BUFFER = re.compile(r"\.alpha$")  # DeepNorm's alpha: a constant of the checkpoint, kept as is


def axis_maps(old: ModelConfig, new: ModelConfig) -> dict[str, AxisMap]:
    return {
        "stream": tiled_map(old.d_model, new.d_model),
        "heads": grouped_map(old.n_heads, new.n_heads, old.head_dim),
        "ffn": cyclic_map(old.d_ff, new.d_ff),
        "gau_e": cyclic_map(old.gau_expansion, new.gau_expansion),
        "gau_s": cyclic_map(old.gau_key_size, new.gau_key_size),
    }


def rule_for(name: str) -> list[tuple[int, str, str]] | None:
    for pattern, axes in RULES:
        if re.search(pattern, name):
            return axes
    return None


def stream_norm_factor(old: ModelConfig, new: ModelConfig) -> float:
    """sqrt(k d / D): the RMS of [h; ...; h; 0_r] is sqrt(kd/D) times h's, so gamma is scaled by it
    (and eps by kd/D, in the config) to give every copy exactly the small model's output."""
    k = new.d_model // old.d_model
    return math.sqrt(k * old.d_model / new.d_model)


def norm_vector(value: torch.Tensor, is_gain: bool, stream: AxisMap, factor: float) -> torch.Tensor:
    """LayerNorm/RMSNorm gain (or LayerNorm bias) on the stream: tiled, scaled by ``factor`` for r > 0.
    Residue channels carry 0 in and give 0 out; their gain starts at the copies' mean so they can learn."""
    tiled = value.index_select(0, stream.src.clamp(min=0)).double()
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
