"""Attention logit scale (``model.attention_scale``): plain 1/sqrt(d), or entropy-invariant log-n.

log-n (Su 2021, "从熵不变性看Attention的Scale操作"; used by GAU-alpha): logits are multiplied by
log(n) / log(base) on top of 1/sqrt(d), where n is the number of keys the query row can see. At
n = base it equals the plain scale. ``min_keys`` clamps n from below (bert4keras uses 16) so short
rows do not get a vanishing scale. Folded into q so fused SDPA kernels still apply.

Each registered scale maps (key counts, base, min_keys) to a per-row factor on top of 1/sqrt(d),
or None when there is none (so callers skip the multiply, and sqrt stays bit-identical).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from growth.registry import Registry

ScaleFactor = Callable[[torch.Tensor, int, int], torch.Tensor | None]
ATTENTION_SCALES: Registry[ScaleFactor] = Registry("model.attention_scale")


@ATTENTION_SCALES.register("sqrt")
def sqrt_factor(key_counts: torch.Tensor, base: int, min_keys: int = 1) -> None:
    """1/sqrt(d) alone, which the attention kernel applies itself."""
    return None


@ATTENTION_SCALES.register("logn")
def logn_factor(key_counts: torch.Tensor, base: int, min_keys: int = 1) -> torch.Tensor:
    """log(max(n, min_keys)) / log(base), per query row."""
    return torch.log(key_counts.clamp(min=max(min_keys, 1))) / math.log(base)


def scale_factor(kind: str, key_counts: torch.Tensor, base: int, min_keys: int) -> torch.Tensor | None:
    return ATTENTION_SCALES.get(kind)(key_counts, base, min_keys)


def scale_queries(
    q: torch.Tensor, kind: str, key_counts: torch.Tensor, base: int, min_keys: int
) -> torch.Tensor:
    """Fold the per-row factor into q (shape (B, H, T, d)); identity when the scale has none."""
    factor = scale_factor(kind, key_counts, base, min_keys)
    return q if factor is None else q * factor.to(q.dtype)
