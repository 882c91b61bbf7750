"""Run checkpoints, below train/, expand/ and eval/ (docs/design.md Sec. 1): layout and lookup,
atomic publishing, streaming safetensors, consolidated weights gathered one tensor at a time,
EMA files, RNG states, Adam moments by parameter name, universal conversion."""

from growth.checkpoint.consolidate import consolidated_state_dict, write_consolidated
from growth.checkpoint.ema_file import has_ema, read_ema
from growth.checkpoint.layout import (
    COMPLETE, CONFIG, LATEST, RUN_STATE, TOKENIZER, WEIGHTS, RunState, latest_checkpoint, read_run_state,
    resolve_checkpoint, run_state_or_empty, run_tokenizer, tag_for,
)
from growth.checkpoint.moments import read_moments
from growth.checkpoint.run_checkpoint import load_training_state, load_weights, save_checkpoint
from growth.checkpoint.safetensors_io import LazyWeights, save_safetensors_streaming
from growth.checkpoint.universal import ensure_universal, needs_universal

__all__ = [
    "COMPLETE", "CONFIG", "LATEST", "RUN_STATE", "TOKENIZER", "WEIGHTS", "LazyWeights", "RunState",
    "consolidated_state_dict", "ensure_universal", "has_ema", "latest_checkpoint", "load_training_state",
    "load_weights", "needs_universal", "read_ema", "read_moments", "read_run_state", "resolve_checkpoint",
    "run_state_or_empty", "run_tokenizer", "save_checkpoint", "save_safetensors_streaming", "tag_for",
    "write_consolidated",
]
