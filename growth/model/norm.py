"""Normalisation layers chosen by name (``model.norm``): LayerNorm or RMSNorm (torch's own kernels)."""

from __future__ import annotations

from torch import nn

from growth.registry import Registry

# Each entry builds ``norm(dim, eps=eps)``.
NORMS: Registry[type[nn.Module]] = Registry("model.norm")
NORMS.register("layernorm")(nn.LayerNorm)
NORMS.register("rmsnorm")(nn.RMSNorm)


def build_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return NORMS.get(kind)(dim, eps=eps)
