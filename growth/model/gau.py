"""Gated attention unit (Hua et al. 2022, "Transformer Quality in Linear Time", Sec. 2).

From X (T x d):  U = silu(X W_u), V = silu(X W_v) in R^{T x e},  Z = silu(X W_z) in R^{T x s},
Q = gamma_q * Z + beta_q,  K = gamma_k * Z + beta_k  (per-dimension scale/offset),
O = (U * A V) W_o.  One GAU layer replaces attention + FFN.

Two attention kernels A (``gau_kernels.py``, one registration each):
  relu2:    A_ij = relu(q_i.k_j / sqrt(s))^2 / n_i            (the paper; n_i = keys row i sees)
  softmax:  A_i = softmax(lambda_i * q_i.K^T / sqrt(s))          (GAU-alpha; lambda = log-n or 1)
Per-row n_i (not the padded length) keeps causal rows prefix-only and padding inert.
With ``chunk_size`` > 0 the attention is FLASH's mixed-chunk form (see ``flash.py``): then Z gets
four scale/offsets (Q_quad, K_quad, Q_lin, K_lin) instead of two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from growth.errors import ConfigError
from growth.model.config import ModelConfig
from growth.model.flash import mixed_chunk_attention, mixed_chunk_flops
from growth.model.gau_kernels import GAU_KERNELS
from growth.model.layer_kind import LAYERS, LayerKind, require_positive
from growth.model.mask import OBJECTIVES, Visibility
from growth.model.residual import build_residual
from growth.model.rope import POSITIONS


def gau_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    vis: Visibility,
    kernel: str,
    scale_kind: str = "sqrt",
    logn_base: int = 512,
    logn_min_keys: int = 1,
) -> torch.Tensor:
    """Single-head GAU attention A V for q, k (B, T, s) and v (B, T, e), kernel by name (gau_kernels.py)."""
    return GAU_KERNELS.get(kernel).dense(q, k, v, vis, scale_kind, logn_base, logn_min_keys)


class GatedAttentionUnit(nn.Module):
    value_path = ("u_proj", "v_proj", "o_proj")
    writers = ("o_proj",)
    # Growth (growth/expand/blocks.py): e and s copied cyclically; gamma/beta grow over s (new dims 0).
    growth_axes = {"u_proj": "gau_e", "v_proj": "gau_e", "z_proj": "gau_s", "o_proj": "gau_e"}
    scale_offsets = ("gamma", "beta")

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, e, s = config.d_model, config.gau_expansion, config.gau_key_size
        self.u_proj = nn.Linear(d, e, bias=False)
        self.v_proj = nn.Linear(d, e, bias=False)
        self.z_proj = nn.Linear(d, s, bias=False)
        self.o_proj = nn.Linear(e, d, bias=False)
        n_scale_offsets = 4 if config.chunk_size else 2  # (q, k) or FLASH's (q_quad, k_quad, q_lin, k_lin)
        self.gamma = nn.Parameter(torch.empty(n_scale_offsets, s))
        self.beta = nn.Parameter(torch.zeros(n_scale_offsets, s))
        self.rope = POSITIONS.get(config.position)(s, config)  # RoPE on the shared key size s
        self.kernel, self.chunk_size = config.gau_attention, config.chunk_size
        self.scale_kind = config.attention_scale
        self.logn_base, self.logn_min_keys = config.logn_base, config.logn_min_keys
        self.init_std = config.init_std
        self.reset_scale_offset()

    def reset_scale_offset(self) -> None:
        nn.init.normal_(self.gamma, std=self.init_std)
        nn.init.zeros_(self.beta)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        u, v, z = F.silu(self.u_proj(x)), F.silu(self.v_proj(x)), F.silu(self.z_proj(x))
        queries_keys = z.unsqueeze(1) * self.gamma[:, None, :] + self.beta[:, None, :]  # (B, h, T, s)
        if self.rope is not None:
            queries_keys = self.rope(queries_keys)
        scale = dict(scale_kind=self.scale_kind, logn_base=self.logn_base, logn_min_keys=self.logn_min_keys)
        if self.chunk_size:
            attended = mixed_chunk_attention(
                *queries_keys.unbind(1), v, vis, self.chunk_size, self.kernel, **scale
            )
        else:
            q, k = queries_keys.unbind(1)
            attended = gau_attention(q, k, v, vis, self.kernel, **scale)
        return self.o_proj(u * attended)


@LAYERS.register("gau")
class GAUBlock(LayerKind):
    residual_branches = 1  # one GAU replaces attention + FFN
    sizes = ("gau_expansion", "gau_key_size")
    rope_width_field = "gau_key_size"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gau = build_residual(GatedAttentionUnit(config), config)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        return self.gau(x, vis)

    @classmethod
    def sublayers(cls, config: ModelConfig) -> dict[str, type[nn.Module]]:
        return {"gau": GatedAttentionUnit}

    @classmethod
    def validate(cls, m: ModelConfig) -> None:
        require_positive(m, "gau_expansion", "gau_key_size")
        if m.attention != "softmax":
            raise ConfigError(
                f"model.attention={m.attention} applies to model.layer=transformer; a GAU layer picks its "
                "kernel with model.gau_attention"
            )
        if m.gau_attention == "relu2" and m.attention_scale == "logn":
            raise ConfigError(
                "model.attention_scale=logn only applies to softmax attention; "
                "use model.gau_attention=softmax (GAU-alpha) or model.attention_scale=sqrt"
            )

    @classmethod
    def matmul_params(cls, config: ModelConfig) -> int:
        return 3 * config.d_model * config.gau_expansion + config.d_model * config.gau_key_size

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        e, s, c = config.gau_expansion, config.gau_key_size, config.chunk_size
        if c:  # FLASH (flash.py: a causal stack skips the first chunk's empty context)
            return mixed_chunk_flops(seq_len, c, s, e, OBJECTIVES.get(config.objective).causal)
        return 6.0 * seq_len * (s + e)

    @classmethod
    def growth_notes(cls, old: ModelConfig, new: ModelConfig, interleaved: bool) -> list[str]:
        notes = []
        if new.gau_expansion != old.gau_expansion:
            notes.append(f"gau expansion e {old.gau_expansion} -> {new.gau_expansion}")
        if new.gau_key_size != old.gau_key_size:
            notes.append(
                f"gau key size s {old.gau_key_size} -> {new.gau_key_size} (new dims gamma = beta = 0)"
            )
        return notes
