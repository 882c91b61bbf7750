"""Rotary position embedding (RoFormer, Su et al. 2021), half-split layout.

Dimension pairs (i, i + d_rot/2) are rotated by angle m * theta_i with theta_i = base^(-2i / d_rot)
(the GPT-NeoX / LLaMA layout, so a Llama export needs no permutation). Only the first ``rope_dim``
dimensions of each head rotate (partial rotary); the rest pass through. Angles are computed in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from growth.config import ModelConfig
from growth.registry import Registry


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to tensors shaped (..., T, head_dim), positions 0..T-1."""

    def __init__(self, head_dim: int, rope_dim: int = 0, base: float = 10000.0, max_seq_len: int = 256):
        super().__init__()
        self.head_dim = head_dim
        self.rope_dim = rope_dim or head_dim
        self.base = base
        inv_freq = base ** (-torch.arange(0, self.rope_dim, 2, dtype=torch.float64) / self.rope_dim)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self._build_cache(max_seq_len)

    def _build_cache(self, length: int) -> None:
        positions = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq)  # (T, rope_dim/2), fp32
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def cos_sin(self, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if length > self.cos_cached.shape[0]:
            self._build_cache(max(length, 2 * self.cos_cached.shape[0]))
        return self.cos_cached[:length].to(dtype), self.sin_cached[:length].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos_sin(x.shape[-2], x.dtype)
        if self.rope_dim == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rotated, passed = x[..., : self.rope_dim], x[..., self.rope_dim :]
        return torch.cat((rotated * cos + rotate_half(rotated) * sin, passed), dim=-1)


# ``model.position``: each entry builds the position encoding of one attention head of ``dim``
# dimensions, or returns None for none.
POSITIONS: Registry = Registry("model.position")


@POSITIONS.register("rope")
def rotary(dim: int, config: ModelConfig) -> RotaryEmbedding:
    return RotaryEmbedding(dim, config.rope_dim, config.rope_base, config.max_seq_len)


@POSITIONS.register("none")
def no_position(dim: int, config: ModelConfig) -> None:
    """No position signal (NoPE): a causal mask still orders tokens; a bidirectional model sees a bag."""
    return None
