"""Residual connections around a sublayer G: Pre-LN, Post-LN and DeepNorm.

    pre:       x + G(LN(x))
    post:      LN(x + G(x))
    deepnorm:  LN(alpha * x + G(x))          (Wang et al. 2022, "DeepNet", Eq. 1)

alpha multiplies the skip path, not G. For an N-layer encoder-only or decoder-only stack,
alpha = (2N)^(1/4) and the init gain on the value path is beta = (8N)^(-1/4) (DeepNet, Table 1).
N counts attention+FFN pairs: a GAU layer is a single sublayer, so a GAU stack of L layers has
N = L / 2 (the same number of residual branches, 2N = L).
"""

from __future__ import annotations

import torch
from torch import nn

from growth.config import ModelConfig
from growth.model.norm import build_norm


def deepnorm_constants(n_layers: float) -> tuple[float, float]:
    """(alpha, beta) for a decoder-only or encoder-only stack of N layers."""
    return (2.0 * n_layers) ** 0.25, (8.0 * n_layers) ** -0.25


def deepnorm_depth(config: ModelConfig) -> float:
    """DeepNet's N: attention+FFN pairs; two GAU layers make one pair."""
    return config.n_layers / 2 if config.layer == "gau" else float(config.n_layers)


class Residual(nn.Module):
    def __init__(self, sublayer: nn.Module, config: ModelConfig):
        super().__init__()
        self.kind = config.residual
        self.norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.sublayer = sublayer
        self.dropout = nn.Dropout(config.dropout)
        alpha = deepnorm_constants(deepnorm_depth(config))[0] if self.kind == "deepnorm" else 1.0
        # Stored with the checkpoint: growth in depth changes N but must not change alpha silently.
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32))

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.kind == "pre":
            return x + self.dropout(self.sublayer(self.norm(x), *args))
        branch = self.dropout(self.sublayer(x, *args))
        skip = x if self.kind == "post" else x * self.alpha.to(x.dtype)
        return self.norm(skip + branch)
