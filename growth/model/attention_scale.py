"""Attention logit scale: plain 1/sqrt(d), or entropy-invariant log-n scaling.

log-n (Su 2021, "从熵不变性看Attention的Scale操作"; used by GAU-alpha): logits are multiplied by
log(n) / log(base) on top of 1/sqrt(d), where n is the number of keys the query row can see. At
n = base it equals the plain scale. ``min_keys`` clamps n from below (bert4keras uses 16) so short
rows do not get a vanishing scale. Folded into q so fused SDPA kernels still apply.
"""

from __future__ import annotations

import math

import torch


def logn_factor(key_counts: torch.Tensor, base: int, min_keys: int = 1) -> torch.Tensor:
    """log(max(n, min_keys)) / log(base), per query row."""
    return torch.log(key_counts.clamp(min=max(min_keys, 1))) / math.log(base)


def scale_queries(q: torch.Tensor, kind: str, key_counts: torch.Tensor, base: int, min_keys: int) -> torch.Tensor:
    """Fold the per-row log-n factor into q (shape (B, H, T, d)); identity for ``sqrt``."""
    if kind == "sqrt":
        return q
    return q * logn_factor(key_counts, base, min_keys).to(q.dtype)
