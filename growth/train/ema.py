"""Exponential moving average of the weights (Polyak averaging), correct under ZeRO-3.

    ema <- d * ema + (1 - d) * theta     once per *applied* optimizer step (not per micro-batch)

Kept in fp32 (a bf16 EMA with d = 0.9999 rounds every update away). Optional warmup
d_t = min(d, (1 + t) / (10 + t)). Each rank averages the parameter data it owns: the full tensor
under ZeRO 0-2, its own partition (``ds_tensor``) under ZeRO-3. So nothing is gathered and written
back per step (a public EMA that gathers under ZeRO-3 without ``modifier_rank`` loses every
update). For saving, partitions are all-gathered into full fp32 tensors, so an EMA file loads at
any world size. Only rank 0 keeps a full tensor, one at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from growth.distributed.deepspeed_adapter import (
    full_numel,
    full_shape,
    is_partitioned,
    local_data,
    partition_numel,
)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.shadow = {name: local_data(p).detach().float().clone() for name, p in self.params.items()}
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for name, param in self.params.items():
            self.shadow[name].lerp_(local_data(param).float(), weight)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """Evaluate with EMA weights; the trained weights come back bit-exactly afterwards."""
        backup = {name: local_data(p).clone() for name, p in self.params.items()}
        for name, param in self.params.items():
            local_data(param).copy_(self.shadow[name])
        try:
            yield
        finally:
            for name, param in self.params.items():
                local_data(param).copy_(backup[name])

    def _full(self, name: str, every_rank: bool = False) -> torch.Tensor | None:
        """One full fp32 tensor on rank 0 (None elsewhere unless ``every_rank``); an all-gather under
        ZeRO-3 (collective)."""
        param, local = self.params[name], self.shadow[name]
        keep = every_rank or _rank() == 0
        if not is_partitioned(param):
            return local.clone() if keep else None
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        return torch.cat(parts)[: full_numel(param)].view(full_shape(param)) if keep else None

    def specs(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(name, full_shape(p), torch.float32) for name, p in self.params.items()]

    def full_tensors(self) -> Iterator[torch.Tensor | None]:
        """Full tensors in ``specs`` order, one at a time (for a streaming save; collective)."""
        for name in self.params:
            yield self._full(name)

    def state_dict(self) -> dict:
        """Full fp32 EMA weights on every rank (to grow them); collective under ZeRO-3."""
        return {
            "decay": self.decay,
            "updates": self.updates,
            "weights": {n: self._full(n, every_rank=True) for n in self.params},
        }

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for name, param in self.params.items():
            full = state["weights"][name].float()
            if is_partitioned(param):
                size = partition_numel(param)
                flat = torch.nn.functional.pad(
                    full.flatten(), (0, size * dist.get_world_size() - full.numel())
                )
                self.shadow[name].copy_(flat[dist.get_rank() * size : (dist.get_rank() + 1) * size])
            else:
                self.shadow[name].copy_(full)
