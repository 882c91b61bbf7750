"""Checkpoints: DeepSpeed state plus run state, published atomically through ``latest``.

    <out_dir>/checkpoints/<tag>/        DeepSpeed files (model, ZeRO partitions, optimizer, scheduler)
        run_state.json                  step, tokens seen, FLOPs, sampler position, world size, ZeRO stage
        rng_rank<r>.pt                  each rank's RNG states (dropout masks replay exactly)
        ema.pt                          full fp32 EMA weights (any world size can load them)
        model.safetensors, config.yaml  consolidated weights + the config that built them
        complete                        written last
    <out_dir>/checkpoints/latest        the tag of the newest *complete* checkpoint

A save killed half-way leaves ``latest`` on the previous checkpoint. Resuming at another world size
with ZeRO 1-3 goes through DeepSpeed's universal checkpoint (``ds_to_universal``), made on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from growth.config import ConfigError
from growth.train.distributed import World, barrier

LATEST = "latest"
COMPLETE = "complete"


@dataclass
class RunState:
    step: int = 0
    tokens_seen: int = 0
    flops_seen: float = 0.0
    skipped_steps: int = 0
    sampler: dict[str, int] = field(default_factory=dict)
    world_size: int = 1
    zero_stage: int = 0
    growth_events: list[dict[str, Any]] = field(default_factory=list)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def consolidated_state_dict(engine) -> dict[str, torch.Tensor]:
    """Full fp32 weights on every rank (gathered under ZeRO-3); tied weights appear under each name."""
    import deepspeed

    module = engine.module
    gathered = (deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
                if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())
    with gathered:
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(engine, root: Path, state: RunState, config_yaml: str, world: World, ema=None) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder."""
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

    tag = tag_for(state.step)
    folder = root / tag
    engine.save_checkpoint(str(root), tag=tag, client_state={UNIVERSAL_CHECKPOINT_INFO: {}}, save_latest=False)
    _torch_save_atomic(rng_state(), folder / f"rng_rank{world.rank}.pt")
    ema_state = ema.state_dict() if ema is not None else None  # collective under ZeRO-3
    weights = consolidated_state_dict(engine)  # collective under ZeRO-3
    if world.is_main:
        if ema_state is not None:
            _torch_save_atomic(ema_state, folder / "ema.pt")
        tmp = folder / f"model.safetensors.tmp{os.getpid()}"
        save_file(_untie(weights), str(tmp))
        tmp.replace(folder / "model.safetensors")
        _write_atomic(folder / "config.yaml", config_yaml.encode())
        _write_atomic(folder / "run_state.json", json.dumps(asdict(state), indent=2).encode())
    barrier()
    if world.is_main:
        _write_atomic(folder / COMPLETE, b"ok\n")
        _write_atomic(root / LATEST, tag.encode())
    barrier()
    return folder


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: give every entry its own."""
    return {k: v.contiguous().clone() for k, v in weights.items()}


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (None if there is none yet)."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / COMPLETE).is_file():
        raise ConfigError(f"{pointer} names {folder.name}, which is incomplete; point it at a complete checkpoint")
    return folder


def resolve_checkpoint(path: Path, what: str = "checkpoint") -> Path:
    """A run dir, its ``checkpoints/`` dir (-> the latest complete one), or one checkpoint folder."""
    for candidate in (path, path / "checkpoints"):
        if (candidate / LATEST).is_file():
            return latest_checkpoint(candidate)
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file():
        return path
    raise ConfigError(f"{what}={path} is not a checkpoint (no checkpoints/latest, or model.safetensors + config.yaml)")


def read_run_state(folder: Path) -> RunState:
    return RunState(**json.loads((folder / "run_state.json").read_text()))


def needs_universal(state: RunState, world: World) -> bool:
    """ZeRO 1-3 shard optimizer state by rank: another world size must load a universal checkpoint."""
    return state.zero_stage > 0 and state.world_size != world.size


def ensure_universal(folder: Path, world: World) -> Path:
    """Convert ``folder`` with ``ds_to_universal`` once (rank 0), return the universal folder."""
    universal = folder.with_name(folder.name + "_universal")
    if world.is_main and not (universal / COMPLETE).is_file():
        result = subprocess.run(
            [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(folder),
             "--output_folder", str(universal), "--num_extract_workers", "1", "--num_merge_workers", "1"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"ds_to_universal could not convert {folder}: {last}")
        _write_atomic(universal / COMPLETE, b"ok\n")
    barrier()
    return universal


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
    return load_file(str(folder / "model.safetensors"))
