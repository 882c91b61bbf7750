"""Run checkpoints, below train/, expand/ and eval/ (docs/design.md Sec. 1): layout and lookup,
atomic publishing, streaming safetensors, consolidated weights gathered one tensor at a time,
EMA files, RNG states, Adam moments by parameter name, universal conversion."""

from growth.checkpoint.consolidate import consolidated_state_dict, write_consolidated
from growth.checkpoint.ema_file import has_ema, read_ema
from growth.checkpoint.layout import (
    COMPLETE,
    CONFIG,
    LATEST,
    RUN_STATE,
    TOKENIZER,
    WEIGHTS,
    RunState,
    complete_folders,
    latest_checkpoint,
    read_run_state,
    resolve_checkpoint,
    resume_checkpoint,
    run_state_or_empty,
    run_tokenizer,
    step_folders,
    tag_for,
)
from growth.checkpoint.moments import read_moments
from growth.checkpoint.run_checkpoint import (
    load_training_state,
    load_weights,
    prune_checkpoints,
    save_checkpoint,
)
from growth.checkpoint.run_lock import RunDirInUse, lock_run_dir, release_all, release_run_dir
from growth.checkpoint.safetensors_io import LazyWeights, save_safetensors_streaming
from growth.checkpoint.universal import ensure_universal, needs_universal
from growth.checkpoint.verify import non_finite_weights, verify_checkpoint

__all__ = [
    "COMPLETE",
    "CONFIG",
    "LATEST",
    "RUN_STATE",
    "TOKENIZER",
    "WEIGHTS",
    "LazyWeights",
    "RunDirInUse",
    "RunState",
    "complete_folders",
    "consolidated_state_dict",
    "ensure_universal",
    "has_ema",
    "latest_checkpoint",
    "load_training_state",
    "load_weights",
    "lock_run_dir",
    "needs_universal",
    "non_finite_weights",
    "prune_checkpoints",
    "read_ema",
    "read_moments",
    "read_run_state",
    "release_all",
    "release_run_dir",
    "resolve_checkpoint",
    "resume_checkpoint",
    "run_state_or_empty",
    "run_tokenizer",
    "save_checkpoint",
    "save_safetensors_streaming",
    "step_folders",
    "tag_for",
    "verify_checkpoint",
    "write_consolidated",
]
