"""Residual connections around a sublayer G (``model.residual``): Pre-LN, Post-LN and DeepNorm.

    pre:       x + G(LN(x))
    post:      LN(x + G(x))
    deepnorm:  LN(alpha * x + G(x))          (Wang et al. 2022, "DeepNet", Eq. 1)

alpha multiplies the skip path, not G. For an N-layer encoder-only or decoder-only stack,
alpha = (2N)^(1/4) and the init gain on the value path is beta = (8N)^(-1/4) (DeepNet, Table 1).
N counts attention+FFN pairs: a GAU layer is a single sublayer, so a GAU stack of L layers has
N = L / 2 (the same number of residual branches, 2N = L).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from growth.model.config import ModelConfig
from growth.model.layer_kind import layer_kind
from growth.model.norm import build_norm
from growth.registry import Registry

RESIDUALS: Registry[type[Residual]] = Registry("model.residual")


def deepnorm_constants(n_layers: float) -> tuple[float, float]:
    """(alpha, beta) for a decoder-only or encoder-only stack of N layers."""
    return (2.0 * n_layers) ** 0.25, (8.0 * n_layers) ** -0.25


def deepnorm_depth(config: ModelConfig) -> float:
    """DeepNet's N: attention+FFN pairs, i.e. residual branches / 2 (two GAU layers make one pair)."""
    return config.n_layers * layer_kind(config).residual_branches / 2


class Residual(nn.Module):
    """A sublayer with its norm, dropout and skip path; subclasses say how they combine."""

    # True when a norm follows every residual add. Then the stack needs no final norm, and a layer
    # whose branch is zero is not the identity (so depth growth cannot be function-preserving).
    norm_after_add = True

    def __init__(self, sublayer: nn.Module, config: ModelConfig, alpha: float = 1.0):
        super().__init__()
        self.norm = build_norm(config.norm, config.d_model, config.norm_eps)
        self.sublayer = sublayer
        self.dropout = nn.Dropout(config.dropout)
        # Stored with the checkpoint: growth in depth changes N but must not change alpha silently.
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32))

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward; build one with build_residual")

    def reset_sublayer(self, config: ModelConfig) -> None:
        """GPT-2 scaled init: the weights that write into the stream get N(0, init_std / sqrt(2L))."""
        for name, linear in self._linears():
            if name in self.sublayer.writers:
                nn.init.normal_(linear.weight, std=config.init_std / math.sqrt(2 * config.n_layers))

    def _linears(self) -> list[tuple[str, nn.Linear]]:
        return [(n, m) for n, m in self.sublayer.named_children() if isinstance(m, nn.Linear)]


@RESIDUALS.register("pre")
class PreNormResidual(Residual):
    norm_after_add = False

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x + self.dropout(self.sublayer(self.norm(x), *args))


@RESIDUALS.register("post")
class PostNormResidual(Residual):
    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.norm(x + self.dropout(self.sublayer(x, *args)))


@RESIDUALS.register("deepnorm")
class DeepNormResidual(Residual):
    def __init__(self, sublayer: nn.Module, config: ModelConfig):
        super().__init__(sublayer, config, alpha=deepnorm_constants(deepnorm_depth(config))[0])

    def reset_sublayer(self, config: ModelConfig) -> None:
        """Xavier-normal with gain beta on the value path and 1 on q/k (DeepNet, Sec. 3)."""
        beta = deepnorm_constants(deepnorm_depth(config))[1]
        for name, linear in self._linears():
            nn.init.xavier_normal_(linear.weight, gain=beta if name in self.sublayer.value_path else 1.0)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.norm(x * self.alpha.to(x.dtype) + self.dropout(self.sublayer(x, *args)))


def build_residual(sublayer: nn.Module, config: ModelConfig) -> Residual:
    """``sublayer`` wrapped in the residual kind ``model.residual`` names."""
    return RESIDUALS.get(config.residual)(sublayer, config)
