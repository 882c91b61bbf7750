"""Save and load a run checkpoint (layout in ``layout.py``), published atomically through ``latest``.

Saving is collective (every rank calls it): DeepSpeed writes its own files (per-rank ZeRO
partitions), each rank its RNG state, then rank 0 streams the consolidated weights and the EMA
(gathered one tensor at a time under ZeRO-3), the config and the run state; ``complete`` and then
``latest`` are written last, so a save killed half-way leaves ``latest`` on the previous checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from growth.checkpoint.atomic import torch_save_atomic, write_atomic
from growth.checkpoint.consolidate import write_consolidated
from growth.checkpoint.ema_file import AveragedWeights, write_ema
from growth.checkpoint.layout import COMPLETE, CONFIG, LATEST, RUN_STATE, WEIGHTS, RunState, tag_for
from growth.checkpoint.moments import PARAM_NAMES
from growth.checkpoint.rng import rng_state, set_rng_state
from growth.checkpoint.universal import ensure_universal
from growth.distributed import World, barrier
from growth.distributed.deepspeed_adapter import universal_checkpoint_info, zero0_parameter_names


def save_checkpoint(engine, root: Path, state: RunState, config_yaml: str, world: World,
                    ema: AveragedWeights | None = None, extra_weights: Mapping[str, torch.Tensor] | None = None,
                    before_publish: Callable[[Path], None] | None = None) -> Path:
    """Collective. ``extra_weights``: tensors outside the engine that belong in ``model.safetensors``;
    ``before_publish(folder)`` runs when every file is written, before ``complete`` and ``latest``."""
    tag = tag_for(state.step)
    folder = root / tag
    client_state = universal_checkpoint_info()
    if engine.zero_optimization_stage() == 0:
        client_state[PARAM_NAMES] = zero0_parameter_names(engine)
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    torch_save_atomic(rng_state(), folder / f"rng_rank{world.rank}.pt")
    if ema is not None:
        write_ema(ema, folder)
    write_consolidated(engine.module, folder / WEIGHTS, world, extra_weights)
    if world.is_main:
        write_atomic(folder / CONFIG, config_yaml.encode())
        write_atomic(folder / RUN_STATE, state.to_json().encode())
        if before_publish is not None:
            before_publish(folder)
    barrier()
    if world.is_main:
        write_atomic(folder / COMPLETE, b"ok\n")
        write_atomic(root / LATEST, tag.encode())
    barrier()
    return folder


def load_training_state(engine, folder: Path, world: World, universal: bool) -> None:
    """Load DeepSpeed state (weights, optimizer, scheduler) and this rank's RNG state."""
    load_folder = ensure_universal(folder, world) if universal else folder
    path, _ = engine.load_checkpoint(str(load_folder.parent), tag=load_folder.name, load_module_strict=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {load_folder}")
    rng_file = folder / f"rng_rank{world.rank}.pt"
    if rng_file.is_file() and not universal:
        set_rng_state(torch.load(rng_file, weights_only=False))


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS))
