"""Position-wise feed-forward networks: GELU MLP and SwiGLU (Shazeer 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from growth.model.config import ModelConfig
from growth.registry import Registry

FFNS: Registry[type[nn.Module]] = Registry("model.ffn")


@FFNS.register("gelu")
class GeluFFN(nn.Module):
    matrices = 2  # d x d_ff matrices per layer (FLOP accounting)
    value_path = ("up_proj", "down_proj")
    writers = ("down_proj",)
    growth_axes = {"up_proj": "ffn", "down_proj": "ffn"}  # neurons copied, read / copies (expand/blocks.py)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


@FFNS.register("swiglu")
class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up share the neuron index (growth copies them together)."""

    matrices = 3
    value_path = ("gate_proj", "up_proj", "down_proj")
    writers = ("down_proj",)
    growth_axes = {"gate_proj": "ffn", "up_proj": "ffn", "down_proj": "ffn"}

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def build_ffn(config: ModelConfig) -> nn.Module:
    """The FFN ``model.ffn`` names; its ``value_path``/``writers`` drive DeepNorm and scaled init."""
    return FFNS.get(config.ffn)(config)
