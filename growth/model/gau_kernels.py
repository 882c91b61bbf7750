"""GAU attention kernels by name (``model.gau_attention``), each in its dense and FLASH in-chunk form.

  relu2:    A_ij = relu(q_i.k_j / sqrt(s))^2 / n   (the paper; n = keys row i sees, or c in a chunk)
  softmax:  A_i = softmax(lambda_i * q_i.K^T / sqrt(s))   (GAU-alpha; lambda from model.attention_scale)

A kernel is one registered class with both forms, so dense GAU (``gau.py``) and FLASH (``flash.py``)
can never disagree about which kernels exist.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from growth.model.attention_scale import scale_factor, scale_queries
from growth.model.mask import Visibility
from growth.registry import Registry


class GAUKernel(Protocol):
    @staticmethod
    def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: Visibility,
              scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        """A V for one head: q, k (B, T, s), v (B, T, e) -> (B, T, e)."""

    @staticmethod
    def in_chunk(scores: torch.Tensor, visible: torch.Tensor, counts: torch.Tensor, chunk_size: int,
                 scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        """Weights (B, G, c, c) from scaled logits, the visible keys and each row's visible-key count."""


GAU_KERNELS: Registry[type[GAUKernel]] = Registry("model.gau_attention")


@GAU_KERNELS.register("relu2")
class Relu2Kernel:
    # No logit scale beyond 1/sqrt(s): config validation refuses relu2 with attention_scale=logn.

    @staticmethod
    def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: Visibility,
              scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        length = q.shape[1]
        if vis.allowed is not None:
            allowed = vis.allowed.squeeze(1)
        elif vis.causal:
            allowed = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        else:
            allowed = None
        weights = F.relu(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).square()
        if allowed is not None:
            # Zero masked scores *before* they meet V, so no future token is summed in.
            weights = weights.masked_fill(~allowed, 0.0)
        return (weights / vis.key_counts.squeeze(1).to(weights.dtype)) @ v

    @staticmethod
    def in_chunk(scores: torch.Tensor, visible: torch.Tensor, counts: torch.Tensor, chunk_size: int,
                 scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        return F.relu(scores).square().masked_fill(~visible, 0.0) / chunk_size


@GAU_KERNELS.register("softmax")
class SoftmaxKernel:
    @staticmethod
    def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, vis: Visibility,
              scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        q = scale_queries(q.unsqueeze(1), scale_kind, vis.key_counts, logn_base, logn_min_keys)
        out = F.scaled_dot_product_attention(
            q, k.unsqueeze(1), v.unsqueeze(1),
            attn_mask=vis.allowed,
            is_causal=vis.causal and vis.allowed is None,
            scale=1.0 / math.sqrt(q.shape[-1]),
        )
        return out.squeeze(1)

    @staticmethod
    def in_chunk(scores: torch.Tensor, visible: torch.Tensor, counts: torch.Tensor, chunk_size: int,
                 scale_kind: str, logn_base: int, logn_min_keys: int) -> torch.Tensor:
        factor = scale_factor(scale_kind, counts, logn_base, logn_min_keys)
        if factor is not None:
            scores = scores * factor.to(scores.dtype)
        # A padded query row may see no key: let it see itself (real rows already do).
        visible = visible | torch.eye(chunk_size, dtype=torch.bool, device=scores.device)
        return scores.masked_fill(~visible, float("-inf")).softmax(-1)
