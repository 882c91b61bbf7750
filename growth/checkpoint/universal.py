"""World-size changes: ZeRO 1-3 shard optimizer state by rank, so another world size loads a
DeepSpeed universal checkpoint, converted once next to the original (``<tag>_universal/``)."""

from __future__ import annotations

from pathlib import Path

from growth.checkpoint.atomic import write_atomic
from growth.checkpoint.layout import COMPLETE, RunState
from growth.distributed import World, barrier
from growth.distributed.deepspeed_adapter import convert_to_universal
from growth.errors import CheckpointError


def needs_universal(state: RunState, world: World) -> bool:
    return state.zero_stage > 0 and state.world_size != world.size


def ensure_universal(folder: Path, world: World) -> Path:
    """Convert ``folder`` once (rank 0; collective over ``world``), return the universal folder."""
    universal = folder.with_name(folder.name + "_universal")
    if world.is_main and not (universal / COMPLETE).is_file():
        error = convert_to_universal(folder, universal)
        if error is not None:
            raise CheckpointError(f"ds_to_universal could not convert {folder}: {error}")
        write_atomic(universal / COMPLETE, b"ok\n")
    if world.size > 1:  # a reader passing a world of one (tools/expand.py) is not a collective
        barrier()
    return universal
