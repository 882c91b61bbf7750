"""Save and load a run checkpoint (layout in ``layout.py``), published atomically through ``latest``.

Saving is collective (every rank calls it): DeepSpeed writes its own files (per-rank ZeRO
partitions), each rank its RNG state, then rank 0 streams the consolidated weights and the EMA
(gathered one tensor at a time under ZeRO-3), the config and the run state; ``complete`` (the
manifest of every file, ``verify.py``) and then ``latest`` are written last, so a save killed
half-way leaves ``latest`` on the previous checkpoint.

A complete checkpoint is never overwritten; an incomplete folder at the same tag (what a killed save
leaves) is removed first, and a save that fails (a full disk) removes its incomplete folder.
``keep`` > 0 keeps the newest ``keep`` complete checkpoints, deleting older ones only once the new
one is complete and published.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from growth.checkpoint.atomic import torch_save_atomic, write_atomic
from growth.checkpoint.consolidate import write_consolidated
from growth.checkpoint.ema_file import AveragedWeights, write_ema
from growth.checkpoint.layout import (
    COMPLETE,
    CONFIG,
    LATEST,
    RUN_STATE,
    WEIGHTS,
    RunState,
    complete_folders,
    is_complete,
    read_latest,
    read_run_state,
    step_folders,
    tag_for,
    without_it,
)
from growth.checkpoint.moments import PARAM_NAMES
from growth.checkpoint.rng import rng_state, set_rng_state
from growth.checkpoint.universal import ensure_universal
from growth.checkpoint.verify import manifest
from growth.distributed import World, barrier, run_on_main
from growth.distributed.deepspeed_adapter import universal_checkpoint_info, zero0_parameter_names
from growth.errors import CheckpointError


def save_checkpoint(
    engine,
    root: Path,
    state: RunState,
    config_yaml: str,
    world: World,
    ema: AveragedWeights | None = None,
    extra_weights: Mapping[str, torch.Tensor] | None = None,
    before_publish: Callable[[Path], None] | None = None,
    keep: int = 0,
    keep_steps: Collection[int] = (),
) -> Path:
    """Collective. ``extra_weights``: tensors outside the engine that belong in ``model.safetensors``;
    ``before_publish(folder)`` runs when every file is written, before ``complete`` and ``latest``;
    ``keep`` > 0: afterwards, delete all but the newest ``keep`` complete checkpoints and those of
    ``keep_steps`` (the growth points)."""
    tag = tag_for(state.step)
    folder = root / tag
    run_on_main(world, lambda: _make_room(folder))
    try:
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
            write_atomic(folder / COMPLETE, manifest(folder))
            write_atomic(root / LATEST, tag.encode())
        barrier()
    except Exception as err:
        full = _disk_full(root, err)
        if world.is_main and not is_complete(folder):
            shutil.rmtree(
                folder, ignore_errors=True
            )  # what a failed save wrote (and the space a full disk needs)
        if full and not isinstance(err, OSError):  # torch.save reports a short write as a RuntimeError
            first = (str(err).splitlines() or [""])[0][:120]
            raise OSError(
                errno.ENOSPC, f"No space left on device ({type(err).__name__}: {first})", str(folder)
            ) from None
        raise
    if world.is_main and keep > 0:
        prune_checkpoints(root, keep, keep_steps)
    return folder


def _disk_full(root: Path, err: Exception) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(root).free < (1 << 20) or "unexpected pos" in str(err)
    except OSError:
        return False


def _make_room(folder: Path) -> None:
    """Rank 0, before a save: never write into a complete checkpoint; clear what a killed save left."""
    if is_complete(folder):
        raise CheckpointError(
            f"{folder} is a complete checkpoint already; refusing to overwrite it (move it away, "
            "or continue from it with train.resume=auto)"
        )
    if folder.exists():
        shutil.rmtree(folder)


def prune_checkpoints(root: Path, keep: int, keep_steps: Collection[int] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints (never the one ``latest`` names, nor one
    of ``keep_steps``: the small model of a growth stage, which a user can go back to), each
    with its universal conversion; ``complete`` goes first, so a deletion cut short leaves a folder
    that is never taken for a checkpoint, and the next prune removes it with any other incomplete
    folder older than the newest complete one (no resume writes there: a save at its step would replace
    it). Returns what was deleted, oldest first."""
    latest = read_latest(root)
    complete = complete_folders(root)
    kept = {tag_for(step) for step in keep_steps} | {latest}
    doomed = [folder for folder in complete[:-keep] if folder.name not in kept]
    newest = int(complete[-1].name[5:]) if complete else -1
    doomed += [
        folder for folder in step_folders(root) if not is_complete(folder) and int(folder.name[5:]) < newest
    ]
    doomed.sort(key=lambda folder: int(folder.name[5:]))
    for folder in doomed:
        (folder / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.with_name(folder.name + "_universal"), ignore_errors=True)
    return doomed


def load_training_state(engine, folder: Path, world: World, universal: bool) -> None:
    """Load DeepSpeed state (weights, optimizer, scheduler) and this rank's RNG state (required when
    the world size is the one the checkpoint was saved by). Failures are one-line ConfigErrors."""
    load_folder = ensure_universal(folder, world) if universal else folder
    try:
        path, _ = engine.load_checkpoint(
            str(load_folder.parent), tag=load_folder.name, load_module_strict=True
        )
    except Exception as err:  # noqa: BLE001 - DeepSpeed's errors for damaged files are tracebacks
        first = (str(err).splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"DeepSpeed could not load {load_folder} ({type(err).__name__}: {first}); {without_it(folder)}"
        ) from None
    if path is None:
        raise CheckpointError(f"DeepSpeed found no checkpoint in {load_folder}; {without_it(folder)}")
    if universal or read_run_state(folder).world_size != world.size:
        return  # another world size: each rank's dropout stream starts from the run's seed instead
    rng_file = folder / f"rng_rank{world.rank}.pt"
    if not rng_file.is_file():
        raise CheckpointError(
            f"{rng_file} is missing (rank {world.rank}'s RNG state, without which dropout does not "
            f"replay exactly); {without_it(folder)}"
        )
    try:
        saved = torch.load(rng_file, weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"{rng_file} is unreadable ({type(err).__name__}); {without_it(folder)}"
        ) from None
    set_rng_state(saved)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS))
