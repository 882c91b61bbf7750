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
    def dense(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        vis: Visibility,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
        """A V for one head: q, k (B, T, s), v (B, T, e) -> (B, T, e)."""

    @staticmethod
    def in_chunk(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        visible: torch.Tensor | None,
        counts: torch.Tensor,
        chunk_size: int,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
        """A V inside each chunk: q, k (B, G, c, s), v (B, G, c, e) -> (B, G, c, e). ``visible``: None
        (every key), the (c, c) causal triangle (nothing padded), or a (B, G, c, c) mask; ``counts``:
        each row's visible keys, (c, 1) or (B, G, c, 1)."""


GAU_KERNELS: Registry[type[GAUKernel]] = Registry("model.gau_attention")


@GAU_KERNELS.register("relu2")
class Relu2Kernel:
    # No logit scale beyond 1/sqrt(s): config validation refuses relu2 with attention_scale=logn.

    @staticmethod
    def dense(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        vis: Visibility,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
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
    def in_chunk(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        visible: torch.Tensor | None,
        counts: torch.Tensor,
        chunk_size: int,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
        # relu(q.k / sqrt(s))^2 / c = relu((q / sqrt(s c)).k)^2: both scales on q (c x s), not on scores (c x c).
        weights = F.relu((q * (1.0 / math.sqrt(q.shape[-1] * chunk_size))) @ k.transpose(-1, -2)).square()
        if visible is not None:
            weights = weights.masked_fill(~visible, 0.0)
        return weights @ v


@GAU_KERNELS.register("softmax")
class SoftmaxKernel:
    @staticmethod
    def dense(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        vis: Visibility,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
        q = scale_queries(q.unsqueeze(1), scale_kind, vis.key_counts, logn_base, logn_min_keys)
        scale = 1.0 / math.sqrt(q.shape[-1])
        if q.is_cuda:  # SDPA's fused kernels (memory-efficient, cuDNN) take e != s
            out = F.scaled_dot_product_attention(
                q,
                k.unsqueeze(1),
                v.unsqueeze(1),
                attn_mask=vis.allowed,
                is_causal=vis.causal and vis.allowed is None,
                scale=scale,
            )
            return out.squeeze(1)
        # On CPU, SDPA with e != s falls back to its math kernel, which is slower than this.
        scores = (q.squeeze(1) * scale) @ k.transpose(-1, -2)  # (B, T, T)
        if vis.allowed is not None:
            scores = scores.masked_fill(~vis.allowed.squeeze(1), float("-inf"))
        elif vis.causal:
            length = q.shape[-2]
            scores = scores.masked_fill(
                ~torch.ones(length, length, dtype=torch.bool, device=q.device).tril(), float("-inf")
            )
        return scores.softmax(-1) @ v

    @staticmethod
    def in_chunk(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        visible: torch.Tensor | None,
        counts: torch.Tensor,
        chunk_size: int,
        scale_kind: str,
        logn_base: int,
        logn_min_keys: int,
    ) -> torch.Tensor:
        # lambda_i (log-n, from the keys row i sees in its chunk) and 1/sqrt(s) both folded into q.
        factor = scale_factor(scale_kind, counts, logn_base, logn_min_keys)
        scale = 1.0 / math.sqrt(q.shape[-1])
        q = q * scale if factor is None else q * (factor * scale).to(q.dtype)
        triangle = visible is not None and visible.dim() == 2
        if q.is_cuda:
            # SDPA's fused kernels (memory-efficient, cuDNN) take e != s; chunks are its heads.
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if triangle else visible, is_causal=triangle, scale=1.0
            )
        # On CPU, SDPA with e != s falls back to its math kernel, which is slower than this.
        scores = q @ k.transpose(-1, -2)
        if visible is not None:
            scores = scores.masked_fill(~visible, float("-inf"))
        return scores.softmax(-1) @ v
