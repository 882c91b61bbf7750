"""Multi-head self-attention with RoPE and optional log-n scaling, on torch SDPA kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from growth.config import ModelConfig
from growth.model.attention_scale import scale_queries
from growth.model.mask import Visibility
from growth.model.rope import POSITIONS


class MultiHeadAttention(nn.Module):
    # Weights on the value path: DeepNorm scales their init by beta (Wang et al. 2022, Sec. 3).
    value_path = ("v_proj", "o_proj")
    # Weights that write into the residual stream: the GPT-2 scaled init applies to these.
    writers = ("o_proj",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        inner = config.n_heads * config.head_dim
        self.q_proj = nn.Linear(config.d_model, inner, bias=False)
        self.k_proj = nn.Linear(config.d_model, inner, bias=False)
        self.v_proj = nn.Linear(config.d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.d_model, bias=False)
        self.rope = POSITIONS.get(config.position)(config.head_dim, config)
        self.scale_kind = config.attention_scale
        self.logn_base, self.logn_min_keys = config.logn_base, config.logn_min_keys

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        q = scale_queries(q, self.scale_kind, vis.key_counts, self.logn_base, self.logn_min_keys)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=vis.allowed,
            is_causal=vis.causal and vis.allowed is None,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return self.o_proj(out.transpose(1, 2).flatten(2))
