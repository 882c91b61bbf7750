"""Composable Transformer blocks; ``build_model(model_config)`` is the entry point."""

from __future__ import annotations

from growth.config import ModelConfig
from growth.model.transformer import GrowthLM


def build_model(config: ModelConfig) -> GrowthLM:
    """Build the model a ``ModelConfig`` describes (validate it first: ``growth.config.validate``)."""
    return GrowthLM(config)


__all__ = ["GrowthLM", "build_model"]
