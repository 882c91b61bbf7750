"""What a task plugs into the loop (OLMo-core's TrainModule; torchtitan's train spec).

A ``TrainModule`` owns the network the engine wraps, its data and its position in it. The
``Trainer`` asks it for a step's micro-batches and runs ``train_batch``; evaluation and saving are
callbacks that ask it for metrics and state. Two implementations: ``TokenLMModule`` (CLM/MLM,
``lm_module.py``) and ``ContrastiveModule`` (SimCSE/InfoNCE/CoSENT, ``contrastive_module.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class StepResult:
    loss: float  # the global batch loss of the step (all ranks)
    tokens: int  # tokens the step consumed (all ranks)
    flops: float  # training FLOPs of the step (all ranks)
    applied: bool  # False: non-finite somewhere, the update was skipped on every rank


@runtime_checkable
class TrainModule(Protocol):
    network: nn.Module  # what ``deepspeed.initialize`` wraps (its parameters are the optimizer's)

    def micro_batches(self) -> list[Batch]:
        """This rank's micro-batches of the next optimizer step; the data position moves past them."""

    def train_batch(self, engine, micro_batches: list[Batch]) -> StepResult:
        """Forward/backward every micro-batch and step the engine (it updates at the boundary)."""

    def eval_metrics(self, engine) -> dict[str, float]:
        """Validation scalars by TensorBoard tag (collective: every rank calls it)."""

    def extra_weights(self) -> Mapping[str, torch.Tensor]:
        """Tensors outside the engine that belong in the saved model (e.g. an LM head left out)."""

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-able state, e.g. the sampler position."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
