"""Rotary position embedding (RoFormer, Su et al. 2021), half-split layout.

Dimension pairs (i, i + d_rot/2) are rotated by angle m * theta_i with theta_i = base^(-2i / d_rot)
(the GPT-NeoX / LLaMA layout, so a Llama export needs no permutation). Only the first ``rope_dim``
dimensions of each head rotate (partial rotary); the rest pass through. Angles are computed in fp32.

``model.rope_scaling`` rescales the frequencies theta_i (``ROPE_SCALINGS``): ``none``, or ``llama3`` (Llama 3.1:
wavelengths longer than original_max_len / low_freq_factor are divided by ``factor``, shorter than
original_max_len / high_freq_factor are kept, a smooth ramp in between; transformers' ``llama3`` rope type).
Decoding with a key/value cache rotates new tokens at positions ``offset .. offset + T - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from growth.model.config import ModelConfig
from growth.registry import Registry


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to tensors shaped (..., T, head_dim), positions 0..T-1."""

    def __init__(
        self,
        head_dim: int,
        rope_dim: int = 0,
        base: float = 10000.0,
        max_seq_len: int = 256,
        scaling: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.head_dim = head_dim
        self.rope_dim = rope_dim or head_dim
        self.base = base
        self.scaling = scaling
        self.register_buffer("inv_freq", self.frequencies(), persistent=False)
        self._build_cache(max_seq_len)

    def frequencies(self) -> torch.Tensor:
        """theta_i = base^(-2i / d_rot) (in float64, rounded to fp32), then rescaled by ``scaling`` in fp32 as
        transformers does."""
        inv_freq = (
            self.base ** (-torch.arange(0, self.rope_dim, 2, dtype=torch.float64) / self.rope_dim)
        ).float()
        return self.scaling(inv_freq) if self.scaling is not None else inv_freq

    def reset_buffers(self) -> None:
        """Recompute the (non-persistent) frequency and angle tables in place, e.g. after a model was built on
        the meta device and its buffers only allocated (``transformers``' ``from_pretrained``)."""
        self.inv_freq = self.frequencies().to(self.inv_freq.device)
        self._build_cache(self.cos_cached.shape[0])

    def _build_cache(self, length: int) -> None:
        positions = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq)  # (T, rope_dim/2), fp32
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def cos_sin(self, length: int, dtype: torch.dtype, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        end = offset + length
        if end > self.cos_cached.shape[0]:
            self._build_cache(max(end, 2 * self.cos_cached.shape[0]))
        return self.cos_cached[offset:end].to(dtype), self.sin_cached[offset:end].to(dtype)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` (..., T, head_dim) at positions ``offset .. offset + T - 1``."""
        cos, sin = self.cos_sin(x.shape[-2], x.dtype, offset)
        if self.rope_dim == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rotated, passed = x[..., : self.rope_dim], x[..., self.rope_dim :]
        return torch.cat((rotated * cos + rotate_half(rotated) * sin, passed), dim=-1)


TABLE_POSITIONS = 4096

# ``model.position``: each entry builds the position encoding of one attention head of ``dim``
# dimensions, or returns None for none.
POSITIONS: Registry = Registry("model.position")


# ``model.rope_scaling``: each entry maps the config to a function rescaling the fp32 frequencies, or None.
ROPE_SCALINGS: Registry[Callable[[ModelConfig], Callable[[torch.Tensor], torch.Tensor] | None]] = Registry(
    "model.rope_scaling"
)


@ROPE_SCALINGS.register("none")
def no_scaling(config: ModelConfig) -> None:
    return None


@ROPE_SCALINGS.register("llama3")
def llama3_scaling(config: ModelConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Llama 3.1's frequency scaling (transformers ``_compute_llama3_parameters``, the same fp32 operations)."""
    factor, low, high = config.rope_scaling_factor, config.rope_low_freq_factor, config.rope_high_freq_factor
    old_len = config.rope_original_max_len

    def scale(inv_freq: torch.Tensor) -> torch.Tensor:
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, smoothed, scaled)

    return scale


@POSITIONS.register("rope")
def rotary(dim: int, config: ModelConfig) -> RotaryEmbedding:
    # The angle tables start at most TABLE_POSITIONS long and grow on demand (an imported model may declare
    # 128k positions: a full table per layer would cost GBs).
    return RotaryEmbedding(
        dim,
        config.rope_dim,
        config.rope_base,
        min(config.max_seq_len, TABLE_POSITIONS),
        ROPE_SCALINGS.get(config.rope_scaling)(config),
    )


@POSITIONS.register("none")
def no_position(dim: int, config: ModelConfig) -> None:
    """No position signal (NoPE): a causal mask still orders tokens; a bidirectional model sees a bag."""
    return None
