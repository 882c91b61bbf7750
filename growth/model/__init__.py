"""Composable Transformer blocks; ``build_model(model_config)`` is the entry point.

Every kind a ``model.*`` string selects is registered by name where it is defined (``growth/registry.py``);
importing this package loads them all.
"""

from __future__ import annotations

# The kinds register themselves on import (growth/model/layer_kind.py); one line per kind's file.
from growth.model import attention, gau, nystrom, performer, transformer_layer  # noqa: F401
from growth.model.config import ModelConfig
from growth.model.transformer import GrowthLM


def build_model(config: ModelConfig) -> GrowthLM:
    """Build the model a ``ModelConfig`` describes (validate it first: ``growth.config.validate``)."""
    return GrowthLM(config)


__all__ = ["GrowthLM", "build_model"]
