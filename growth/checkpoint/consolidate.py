"""Full fp32 weights from a DeepSpeed engine, one tensor at a time.

Under ZeRO-3 every parameter is partitioned across ranks; saving gathers *one parameter* at a time
(a collective: every rank walks the same list) and only rank 0 keeps a CPU copy, which is written
and dropped before the next gather. Peak memory of a save is one parameter, not the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from growth.checkpoint.safetensors_io import TensorSpec, write_streaming
from growth.distributed import World
from growth.distributed.deepspeed_adapter import full_shape, gathered, is_partitioned


def _saved_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float32 if tensor.is_floating_point() else tensor.dtype


def state_items(
    module: nn.Module, extra: Mapping[str, torch.Tensor] | None = None
) -> list[tuple[str, torch.Tensor]]:
    """(name, parameter or buffer) in ``state_dict`` order, tied weights under each of their names;
    ``extra`` adds tensors that live outside the engine (e.g. an LM head a sentence encoder leaves out)."""
    return [*module.state_dict(keep_vars=True).items(), *(extra or {}).items()]


def specs_of(items: list[tuple[str, torch.Tensor]]) -> list[TensorSpec]:
    return [(name, full_shape(t), _saved_dtype(t)) for name, t in items]


def gathered_tensors(
    items: list[tuple[str, torch.Tensor]], world: World, every_rank: bool = False
) -> Iterator[torch.Tensor | None]:
    """Each tensor whole, fp32, on CPU on rank 0 (None elsewhere, unless ``every_rank``), gathering
    one at a time."""
    for _, tensor in items:
        context = gathered([tensor]) if is_partitioned(tensor) else contextlib.nullcontext()
        with context:
            keep = world.is_main or every_rank
            yield tensor.detach().to("cpu", _saved_dtype(tensor)).clone() if keep else None


def write_consolidated(
    module: nn.Module, path: Path, world: World, extra: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Collective: the module's full weights to one safetensors file, written by rank 0."""
    items = state_items(module, extra)
    write_streaming(path, specs_of(items), gathered_tensors(items, world))


def consolidated_state_dict(
    engine, world: World | None = None, every_rank: bool = False
) -> dict[str, torch.Tensor]:
    """All full fp32 weights in memory on rank 0 ({} on other ranks unless ``every_rank``);
    collective under ZeRO-3. For growing inside a run, tests and small models; saving streams instead."""
    import torch.distributed as dist

    world = world or World(
        dist.get_rank() if dist.is_initialized() else 0,
        0,
        dist.get_world_size() if dist.is_initialized() else 1,
    )
    items = state_items(engine.module)
    tensors = list(gathered_tensors(items, world, every_rank))
    return {name: t for (name, _), t in zip(items, tensors)} if world.is_main or every_rank else {}
