"""Which keys each query may see: causal structure, padding, and the per-row key count n.

``attention_mask`` is (B, T) with 1 for real tokens and 0 for padding. The count n_i of keys row i
sees (causal: real tokens among 0..i; bidirectional: all real tokens) drives the log-n scale and the
relu^2 normalisation, so padding never changes what a real token computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from growth.registry import Registry


@dataclass
class Visibility:
    allowed: torch.Tensor | None  # (B, 1, T, T) bool, or None: plain causal / full attention
    key_counts: torch.Tensor  # (B or 1, 1, T, 1) float: keys visible from each query row
    key_real: torch.Tensor | None  # (B, T) bool, or None when nothing is padded
    causal: bool
    # Decoding with a key/value cache (growth/model/hf_model.py): the queries sit at positions offset.., and
    # ``cache.update(k, v)`` appends this layer's new keys/values and returns all of them.
    offset: int = 0
    cache: Any = None


@dataclass(frozen=True)
class Objective:
    """What the model side of a token objective needs: whether row i may see keys after i."""

    causal: bool


# ``model.objective`` (the data side - targets and masking - lives in growth/data/batches.py).
OBJECTIVES: Registry[Objective] = Registry("model.objective")
OBJECTIVES.register("clm")(Objective(causal=True))
OBJECTIVES.register("mlm")(Objective(causal=False))


def visibility(
    attention_mask: torch.Tensor | None, length: int, causal: bool, device: torch.device
) -> Visibility:
    if attention_mask is None:
        counts = (
            torch.arange(1, length + 1, device=device, dtype=torch.float32)
            if causal
            else torch.full((length,), float(length), device=device)
        )
        return Visibility(None, counts.view(1, 1, length, 1), None, causal)
    key_real = attention_mask.to(device=device, dtype=torch.bool)
    allowed = key_real[:, None, None, :].expand(-1, 1, length, -1)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    # A padded query row may see no key at all; let it see itself (n = 1) so softmax and the relu^2
    # normaliser stay finite. Real rows always see themselves already: nothing they compute changes.
    counts = allowed.sum(-1, keepdim=True).float().clamp(min=1.0)
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
    return Visibility(allowed, counts, key_real, causal)
