"""Multi-head self-attention with RoPE and optional log-n scaling, on torch SDPA kernels.

Grouped-query attention (Ainslie et al. 2023, "GQA"): ``n_kv_heads`` key/value heads, each shared by a group
of n_heads / n_kv_heads consecutive query heads (1: multi-query attention, Shazeer 2019; 0: one per query
head). Optional q/k/v biases (``qkv_bias``, as Qwen2). When the visibility carries a key/value cache
(decoding, ``growth/model/hf_model.py``), new keys are rotated at their positions and appended to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from growth.model.attention_scale import scale_queries
from growth.model.config import ModelConfig
from growth.model.layer_kind import ATTENTIONS, AttentionKind
from growth.model.mask import Visibility
from growth.model.rope import POSITIONS


@ATTENTIONS.register("softmax")
class MultiHeadAttention(AttentionKind):
    # Weights on the value path: DeepNorm scales their init by beta (Wang et al. 2022, Sec. 3).
    value_path = ("v_proj", "o_proj")
    # Weights that write into the residual stream: the GPT-2 scaled init applies to these.
    writers = ("o_proj",)
    # Growth (growth/expand/blocks.py): query heads copied, key/value heads with their query groups (GQA).
    growth_axes = {"q_proj": "heads", "k_proj": "kv_heads", "v_proj": "kv_heads", "o_proj": "heads"}
    # Head-size growth: q is rescaled and starts its new dimensions at 0; k and v take the grown init there.
    query_key = {"q_proj": "q", "k_proj": "k"}
    fresh_rows = ("k_proj", "v_proj")
    grows_head_size = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.n_kv_heads = config.n_kv_heads or config.n_heads
        inner, kv_inner = config.n_heads * config.head_dim, self.n_kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.d_model, inner, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.d_model, kv_inner, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.d_model, kv_inner, bias=config.qkv_bias)
        self.o_proj = nn.Linear(inner, config.d_model, bias=False)
        self.rope = POSITIONS.get(config.position)(config.head_dim, config)
        self.scale_kind = config.attention_scale
        self.logn_base, self.logn_min_keys = config.logn_base, config.logn_min_keys

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        return 12.0 * seq_len * config.n_heads * config.head_dim  # q.k^T and A.v over T keys

    @classmethod
    def supports_kv_cache(cls, config: ModelConfig) -> bool:
        return True  # per-token keys/values (causality is the objective's; hf_model.py checks it)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def expanded_heads(
        self, x: torch.Tensor, vis: Visibility
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated and scaled queries with a key/value head for each of them (GQA groups repeated): the input of
        the attention kinds that attend without a cache (performer.py, nystrom.py)."""
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if self.rope is not None:
            q, k = self.rope(q, vis.offset), self.rope(k, vis.offset)
        q = scale_queries(q, self.scale_kind, vis.key_counts, self.logn_base, self.logn_min_keys)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # GQA: each key/value head serves its query group
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q, k, v

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        q = self._heads(self.q_proj(x), self.n_heads)
        k, v = self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)
        if self.rope is not None:
            q, k = self.rope(q, vis.offset), self.rope(k, vis.offset)
        if vis.cache is not None:
            k, v = vis.cache.update(k, v)  # every key so far: (B, n_kv_heads, offset + T, head_dim)
        q = scale_queries(q, self.scale_kind, vis.key_counts, self.logn_base, self.logn_min_keys)
        out = sdpa(q, k, v, vis, 1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).flatten(2))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: Visibility, scale: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; key/value heads are shared by their query group (GQA)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        # The math and CPU kernels take grouped heads natively (torch >= 2.5: enable_gqa); an explicit repeat
        # would hold n_heads copies of the cache.
        try:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=vis.allowed, is_causal=_is_causal(vis), scale=scale, enable_gqa=True
            )
        except TypeError:  # torch < 2.5
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=vis.allowed, is_causal=_is_causal(vis), scale=scale
    )


def _is_causal(vis: Visibility) -> bool:
    return vis.causal and vis.allowed is None
