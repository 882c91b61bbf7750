"""FLASH mixed-chunk attention (Hua et al. 2022, Sec. 3.2): quadratic inside chunks, linear across.

The sequence is split into G chunks of c tokens (zero-padded to a multiple of c; padded keys are
masked out, so real tokens are unaffected). For query i in chunk g:

    quad_i = sum_{j in g, j visible}  A(q_quad_i, k_quad_j) v_j      (GAU kernel, causal in-chunk)
    lin_i  = q_lin_i . (1/c) sum_{h in H(g)} sum_{j in h} k_lin_j^T v_j
    H(g)   = chunks before g (causal: an *exclusive* cumulative sum) | all chunks (bidirectional)

and the unit outputs quad + lin. Both parts are normalised by the chunk size c (the paper's
pseudo-code), so the cost per token is O(c * (s + e) + s * e): linear in sequence length.

Causal, the first chunk's context is empty and the last chunk's k_lin^T v sum is never read, so
neither is computed: the linear part costs (G - 1) / G of the bidirectional one (half at G = 2).
Without padding no mask tensor is built at all (the causal in-chunk mask is one c x c triangle).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from growth.model.gau_kernels import GAU_KERNELS
from growth.model.mask import Visibility


def exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """y_g = sum_{h < g} x_h along ``dim`` (shifted, not cumsum - x: that would cancel catastrophically).
    The causal linear part computes the same sums as ``x[:-1].cumsum()`` without the zero first entry."""
    summed = x.cumsum(dim).narrow(dim, 0, x.shape[dim] - 1)
    return torch.cat((torch.zeros_like(x.narrow(dim, 0, 1)), summed), dim=dim)


def _chunked(x: torch.Tensor, pad: int, chunk: int) -> torch.Tensor:
    """(B, T, ...) -> (B, G, c, ...) with ``pad`` zero rows appended."""
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
    return x.view(x.shape[0], -1, chunk, *x.shape[2:])


def _in_chunk_visibility(
    key_real: torch.Tensor | None, chunk: int, causal: bool, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Which keys each row sees inside its chunk ((c, c) or (B, G, c, c) bool, None: all) and how many
    ((c, 1) or (B, G, c, 1) float, for log-n). With padding, a row that sees no key sees itself, so a
    softmax stays finite (only padded rows are affected; their outputs are cut or ignored)."""
    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=device).tril() if causal else None
    if key_real is None:  # nothing padded: the triangle alone, counts 1..c (causal) or c
        counts = (
            torch.arange(1, chunk + 1, device=device, dtype=torch.float32)
            if causal
            else torch.full((chunk,), float(chunk), device=device)
        ).unsqueeze(-1)
        return tril, counts
    visible = key_real.unsqueeze(-2)  # (B, G, 1, c)
    if causal:
        visible = visible & tril
    counts = (key_real.cumsum(-1) if causal else key_real.sum(-1, keepdim=True)).unsqueeze(-1).float()
    visible = visible | torch.eye(chunk, dtype=torch.bool, device=device)
    return visible, counts


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
    batch, length, _ = q_quad.shape
    pad = (-length) % chunk_size
    key_real = None  # (B, G, c) bool, only when a key is padding (the mask's, or the last chunk's fill)
    if vis.key_real is not None or pad:
        real = (
            vis.key_real
            if vis.key_real is not None
            else torch.ones(batch, length, dtype=torch.bool, device=v.device)
        )
        key_real = _chunked(real.unsqueeze(-1), pad, chunk_size).squeeze(-1)
    q_quad, k_quad, q_lin, k_lin, v = (
        _chunked(t, pad, chunk_size) for t in (q_quad, k_quad, q_lin, k_lin, v)
    )

    # Quadratic attention within each chunk, with the GAU kernel ``model.gau_attention`` names.
    visible, counts = _in_chunk_visibility(key_real, chunk_size, vis.causal, v.device)
    quadratic = GAU_KERNELS.get(kernel).in_chunk(
        q_quad, k_quad, v, visible, counts, chunk_size, scale_kind, logn_base, logn_min_keys
    )

    # Linear attention across chunks: (1/c) k_lin^T v summed over the chunks each chunk sees. The 1/c
    # and the padding mask go on k_lin (s wide), not on the (s x e) sums.
    k_lin = (
        k_lin * (1.0 / chunk_size)
        if key_real is None
        else k_lin * (key_real.unsqueeze(-1) / chunk_size).to(k_lin.dtype)
    )
    groups = q_lin.shape[1]
    if not vis.causal:
        context = k_lin.flatten(1, 2).transpose(-1, -2) @ v.flatten(1, 2)  # (B, s, e): every chunk
        out = quadratic + q_lin @ context.unsqueeze(1)
    elif groups > 1:
        # Chunk g >= 1 sees chunks 0..g-1: an inclusive cumsum of the per-chunk sums of chunks 0..G-2.
        context = (k_lin[:, :-1].transpose(-1, -2) @ v[:, :-1]).cumsum(1)  # (B, G-1, s, e)
        out = torch.cat((quadratic[:, :1], quadratic[:, 1:] + q_lin[:, 1:] @ context), dim=1)
    else:
        out = quadratic  # one causal chunk: nothing before it
    out = out.flatten(1, 2)
    return out[:, :length] if pad else out


def mixed_chunk_flops(seq_len: int, chunk_size: int, key_size: int, expansion: int, causal: bool) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) of the attention inside a FLASH unit:
    6 c (s + e) for the in-chunk part, 12 s e for the linear part, of which a causal stack computes
    (G - 1) / G (no context for the first chunk, no sum of the last)."""
    groups = -(-seq_len // chunk_size)
    linear = 12.0 * key_size * expansion * ((groups - 1) / groups if causal else 1.0)
    return 6.0 * chunk_size * (key_size + expansion) + linear
