"""EMA weights on disk: ``ema.safetensors``, full fp32 tensors by parameter name, written one tensor
at a time; decay and update count in the header's metadata. ``ema.pt`` (older checkpoints) still reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from growth.checkpoint.safetensors_io import LazyWeights, TensorSpec, write_streaming

EMA_FILE = "ema.safetensors"
LEGACY_EMA_FILE = "ema.pt"


class AveragedWeights(Protocol):
    decay: float
    updates: int

    def specs(self) -> list[TensorSpec]: ...
    def full_tensors(self) -> Iterator[torch.Tensor | None]: ...


def write_ema(ema: AveragedWeights, folder: Path) -> None:
    """Collective under ZeRO-3 (every rank walks the gathers); rank 0 writes."""
    metadata = {"decay": repr(ema.decay), "updates": str(ema.updates)}
    write_streaming(folder / EMA_FILE, ema.specs(), ema.full_tensors(), metadata)


def has_ema(folder: Path) -> bool:
    return (folder / EMA_FILE).is_file() or (folder / LEGACY_EMA_FILE).is_file()


def read_ema(folder: Path) -> dict[str, Any] | None:
    """{"decay", "updates", "weights": name -> tensor (loaded lazily)} or None without EMA."""
    if (folder / EMA_FILE).is_file():
        weights = LazyWeights(folder / EMA_FILE)
        return {
            "decay": float(weights.metadata["decay"]),
            "updates": int(weights.metadata["updates"]),
            "weights": weights,
        }
    if (folder / LEGACY_EMA_FILE).is_file():
        return torch.load(folder / LEGACY_EMA_FILE, weights_only=False)
    return None
