"""What a run directory holds, and how to find the checkpoint to read.

    <out_dir>/checkpoints/<tag>/        DeepSpeed files (model, ZeRO partitions, optimizer, scheduler)
        run_state.json                  step, tokens seen, FLOPs, data position, world size, ZeRO stage
        rng_rank<r>.pt                  each rank's RNG states (dropout masks replay exactly)
        ema.safetensors                 full fp32 EMA weights (any world size can load them)
        model.safetensors, config.yaml  consolidated weights + the config that built them
        complete                        written last
    <out_dir>/checkpoints/latest        the tag of the newest *complete* checkpoint
    <out_dir>/tokenizer.model           the run's tokenizer

A save killed half-way leaves ``latest`` on the previous checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from growth.config import ConfigError, run_folders

LATEST = "latest"
COMPLETE = "complete"
RUN_STATE = "run_state.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer.model"


@dataclass
class RunState:
    step: int = 0
    tokens_seen: int = 0
    flops_seen: float = 0.0
    skipped_steps: int = 0
    sampler: dict[str, int] = field(default_factory=dict)  # the TrainModule's data position
    world_size: int = 1
    zero_stage: int = 0
    growth_events: list[dict[str, Any]] = field(default_factory=list)
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # stateful callbacks by name

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def read_run_state(folder: Path) -> RunState:
    return RunState(**json.loads((folder / RUN_STATE).read_text()))


def run_state_or_empty(folder: Path) -> RunState:
    """A checkpoint's run state, or a fresh one for a bare weights folder (e.g. an imported model)."""
    return read_run_state(folder) if (folder / RUN_STATE).is_file() else RunState()


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
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / LATEST).is_file():
            return latest_checkpoint(candidate)
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return path
    raise ConfigError(f"{what}={path} is not a checkpoint (no checkpoints/latest, or {WEIGHTS} + {CONFIG})")


def run_tokenizer(path: Path) -> Path | None:
    """The ``tokenizer.model`` of the run a checkpoint belongs to (a run dir keeps it at its top)."""
    return next((folder / TOKENIZER for folder in run_folders(Path(path)) if (folder / TOKENIZER).is_file()), None)
