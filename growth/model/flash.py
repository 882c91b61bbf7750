"""FLASH mixed-chunk attention (Hua et al. 2022, Sec. 3.2): quadratic inside chunks, linear across.

The sequence is split into G chunks of c tokens (zero-padded to a multiple of c; padded keys are
masked out, so real tokens are unaffected). For query i in chunk g:

    quad_i = sum_{j in g, j visible}  A(q_quad_i, k_quad_j) v_j      (GAU kernel, causal in-chunk)
    lin_i  = q_lin_i . (1/c) sum_{h in H(g)} sum_{j in h} k_lin_j^T v_j
    H(g)   = chunks before g (causal: an *exclusive* cumulative sum) | all chunks (bidirectional)

and the unit outputs quad + lin. Both parts are normalised by the chunk size c (the paper's
pseudo-code), so the cost per token is O(c * (s + e) + s * e): linear in sequence length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from growth.model.gau_kernels import GAU_KERNELS
from growth.model.mask import Visibility


def exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """y_g = sum_{h < g} x_h along ``dim`` (shifted, not cumsum - x: that would cancel catastrophically)."""
    summed = x.cumsum(dim).narrow(dim, 0, x.shape[dim] - 1)
    return torch.cat((torch.zeros_like(x.narrow(dim, 0, 1)), summed), dim=dim)


def _chunked(x: torch.Tensor, pad: int, chunk: int) -> torch.Tensor:
    """(B, T, ...) -> (B, G, c, ...) with ``pad`` zero rows appended."""
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
    return x.view(x.shape[0], -1, chunk, *x.shape[2:])


def mixed_chunk_attention(
    q_quad: torch.Tensor,
    k_quad: torch.Tensor,
    q_lin: torch.Tensor,
    k_lin: torch.Tensor,
    v: torch.Tensor,
    vis: Visibility,
    chunk_size: int,
    kernel: str,
    scale_kind: str = "sqrt",
    logn_base: int = 512,
    logn_min_keys: int = 1,
) -> torch.Tensor:
    """Queries/keys (B, T, s), values (B, T, e) -> (B, T, e)."""
    batch, length, key_size = q_quad.shape
    pad = (-length) % chunk_size
    key_real = vis.key_real if vis.key_real is not None else torch.ones(
        batch, length, dtype=torch.bool, device=v.device
    )
    key_real = _chunked(key_real.unsqueeze(-1), pad, chunk_size).squeeze(-1)  # (B, G, c); pads False
    q_quad, k_quad, q_lin, k_lin, v = (_chunked(t, pad, chunk_size) for t in (q_quad, k_quad, q_lin, k_lin, v))

    # Quadratic attention within each chunk, with the GAU kernel ``model.gau_attention`` names.
    local = key_real.unsqueeze(-2)  # (B, G, 1, c): keys that are real
    if vis.causal:
        local = local & torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=v.device).tril()
    # Keys each row sees in its chunk (for log-n), from the (B, G, c) flags, not the (c x c) mask.
    counts = (key_real.cumsum(-1) if vis.causal else key_real.sum(-1, keepdim=True)).unsqueeze(-1).float()
    scores = q_quad @ k_quad.transpose(-1, -2) / math.sqrt(key_size)  # (B, G, c, c)
    weights = GAU_KERNELS.get(kernel).in_chunk(scores, local, counts, chunk_size, scale_kind, logn_base, logn_min_keys)
    quadratic = weights @ v

    # Linear attention across chunks: per-chunk sums of k_lin^T v, then an (exclusive) prefix sum.
    k_lin = k_lin * key_real.unsqueeze(-1).to(k_lin.dtype)
    chunk_kv = k_lin.transpose(-1, -2) @ v / chunk_size  # (B, G, s, e)
    if vis.causal:
        context = exclusive_cumsum(chunk_kv, dim=1)
    else:
        context = chunk_kv.sum(dim=1, keepdim=True)
    linear = q_lin @ context

    out = (quadratic + linear).flatten(1, 2)
    return out[:, :length]
