"""What a run directory holds, and how to find the checkpoint to read.

    <out_dir>/checkpoints/<tag>/        DeepSpeed files (model, ZeRO partitions, optimizer, scheduler)
        run_state.json                  step, tokens seen, FLOPs, data position, world size, ZeRO stage
        rng_rank<r>.pt                  each rank's RNG states (dropout masks replay exactly)
        ema.safetensors                 full fp32 EMA weights (any world size can load them)
        model.safetensors, config.yaml  consolidated weights + the config that built them
        complete                        written last
    <out_dir>/checkpoints/latest        the tag of the newest *complete* checkpoint
    <out_dir>/tokenizer.model           the run's tokenizer

A save killed half-way leaves ``latest`` on the previous checkpoint. ``complete`` holds the
manifest of every file of the checkpoint (size and CRC-32, ``verify.py``). A run continues from the
newest complete checkpoint (``resume_checkpoint``), so checkpoints found without ``latest`` are
continued from, never overwritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from growth.config import run_folders
from growth.errors import CheckpointError

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
    """The run state of a checkpoint; a missing or damaged ``run_state.json`` is a one-line error."""
    path = folder / RUN_STATE
    try:
        return RunState(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is damaged; {without_it(folder)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(
            f"{path} is unreadable ({type(err).__name__}: {str(err)[:80]}): the checkpoint is damaged; "
            f"{without_it(folder)}"
        ) from None


TAG = re.compile(r"step_(\d{8,})")


def step_folders(root: Path) -> list[Path]:
    """The ``step_*`` checkpoint folders under ``root`` (complete or not), oldest first."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if TAG.fullmatch(p.name) and p.is_dir()), key=lambda p: int(p.name[5:])
    )


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def complete_folders(root: Path) -> list[Path]:
    return [folder for folder in step_folders(root) if is_complete(folder)]


def without_it(folder: Path) -> str:
    """How to go on without a damaged checkpoint ``folder``."""
    earlier = (
        [f for f in complete_folders(folder.parent) if int(f.name[5:]) < int(folder.name[5:])]
        if TAG.fullmatch(folder.name)
        else []
    )
    if earlier:
        return (
            f"move {folder} out of {folder.parent} to continue from {earlier[-1].name}, the complete checkpoint "
            f"before it, or restore the file"
        )
    return f"restore the file, or move {folder} away and start again"


def read_latest(root: Path) -> str | None:
    """The tag ``checkpoints/latest`` names (None without the file); a damaged pointer is a one-line error."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    raw = pointer.read_bytes()
    try:
        tag = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        tag = None
    if tag is None or not tag or "/" in tag or not all(c.isprintable() for c in tag):
        newest = complete_folders(root)
        hint = f" (the newest complete one is {newest[-1].name})" if newest else ""
        raise CheckpointError(
            f"{pointer} is damaged (it holds {raw[:16]!r}, not a checkpoint tag); write the tag of a "
            f"complete checkpoint into it{hint}, or remove it to continue from the newest complete one"
        )
    return tag


def run_state_or_empty(folder: Path) -> RunState:
    """A checkpoint's run state, or a fresh one for a bare weights folder (e.g. an imported model)."""
    return read_run_state(folder) if (folder / RUN_STATE).is_file() else RunState()


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` names (None if there is none yet); it must be complete."""
    tag = read_latest(root)
    if tag is None:
        return None
    folder = root / tag
    if not is_complete(folder):
        state = "is missing" if not folder.exists() else "is incomplete"
        newest = complete_folders(root)
        hint = f" (the newest complete one is {newest[-1].name})" if newest else ""
        raise CheckpointError(
            f"{root / LATEST} names {folder.name}, which {state}; point it at a complete checkpoint{hint}"
        )
    return folder


def resume_checkpoint(root: Path) -> tuple[Path | None, str]:
    """The checkpoint a run in ``root`` continues from, and a note when that is not what ``latest``
    says: the newest complete ``step_*`` folder, whether or not ``latest`` names it (a run killed
    between writing ``complete`` and ``latest``, or a checkpoint folder copied into a new run)."""
    named = latest_checkpoint(root)
    complete = complete_folders(root)
    if not complete:
        return named, ""
    newest = complete[-1]
    if named is None:
        return newest, f"no {root / LATEST}: continuing from the newest complete checkpoint, {newest.name}"
    if TAG.fullmatch(named.name) and int(named.name[5:]) < int(newest.name[5:]):
        return newest, (
            f"{root / LATEST} names {named.name}, but {newest.name} is complete and newer: continuing from "
            f"{newest.name} (move it out of {root} to go back to {named.name})"
        )
    return named, ""


def resolve_checkpoint(path: Path, what: str = "checkpoint") -> Path:
    """A run dir, its ``checkpoints/`` dir (-> the newest complete checkpoint, as a resume takes it),
    or one checkpoint folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / LATEST).is_file() or complete_folders(candidate):
            return resume_checkpoint(candidate)[0]
    if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return path
    raise CheckpointError(
        f"{what}={path} is not a checkpoint (no checkpoints/latest, or {WEIGHTS} + {CONFIG})"
    )


def run_tokenizer(path: Path) -> Path | None:
    """The ``tokenizer.model`` of the run a checkpoint belongs to (a run dir keeps it at its top)."""
    return next(
        (folder / TOKENIZER for folder in run_folders(Path(path)) if (folder / TOKENIZER).is_file()), None
    )
