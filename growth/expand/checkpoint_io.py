"""Read what growth needs from any checkpoint the trainer writes; write a grown checkpoint.

Reading goes through ``growth/checkpoint/``: weights lazily from the consolidated
``model.safetensors``, EMA from ``ema.safetensors``, Adam moments by parameter name.

A grown checkpoint is a folder that ``train.init_from`` (and ``--config DIR/config.yaml``) continue
from: model.safetensors, config.yaml, run_state.json, ema.safetensors, optimizer_state.pt,
tokenizer.model, expand_report.json. It is written under a temporary name and renamed, and never
over an existing one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError

from growth import checkpoint as ckpt
from growth.checkpoint.ema_file import EMA_FILE
from growth.checkpoint.moments import GROWN_MOMENTS
from growth.config import Config, config_from_dict
from growth.distributed.deepspeed_adapter import Moments
from growth.errors import ConfigError


@dataclass
class SourceCheckpoint:
    folder: Path
    config: Config
    weights: Mapping[str, torch.Tensor]
    ema: dict | None
    moments: Moments | None
    run_state: ckpt.RunState
    tokenizer: Path | None


def read_source(path: Path) -> SourceCheckpoint:
    folder = ckpt.resolve_checkpoint(path, "--from")
    try:
        config = config_from_dict(yaml.safe_load((folder / ckpt.CONFIG).read_text()))
        weights = ckpt.LazyWeights(folder / ckpt.WEIGHTS)
        ema = ckpt.read_ema(folder)
    except (OSError, SafetensorError, yaml.YAMLError, AttributeError) as err:
        raise ConfigError(
            f"--from {folder}: unreadable checkpoint ({type(err).__name__}: {str(err)[:120]})"
        ) from None
    run_state = ckpt.run_state_or_empty(folder)
    tokenizer = next(
        (p for p in (folder / ckpt.TOKENIZER, folder.parent.parent / ckpt.TOKENIZER) if p.is_file()), None
    )
    return SourceCheckpoint(
        folder, config, weights, ema, ckpt.read_moments(folder, run_state), run_state, tokenizer
    )


def write_grown(
    out: Path,
    config: Config,
    weights: dict[str, torch.Tensor],
    ema: dict | None,
    moments: Moments | None,
    run_state: ckpt.RunState,
    tokenizer: Path | None,
    report: dict,
) -> Path:
    """Write the grown checkpoint folder atomically (temporary name, then rename)."""
    if out.exists():
        raise ConfigError(f"--out {out} already exists; choose a new folder (nothing was overwritten)")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ckpt.save_safetensors_streaming(weights, tmp / ckpt.WEIGHTS)
        config.train.init_from = str(out.resolve())
        config.train.resume = "auto"
        config.save(tmp / ckpt.CONFIG)
        (tmp / ckpt.RUN_STATE).write_text(run_state.to_json())
        if ema is not None:
            metadata = {"decay": repr(float(ema["decay"])), "updates": str(int(ema["updates"]))}
            ckpt.save_safetensors_streaming(ema["weights"], tmp / EMA_FILE, metadata)
        if moments is not None:
            torch.save(moments, tmp / GROWN_MOMENTS)
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / ckpt.TOKENIZER)
        (tmp / "expand_report.json").write_text(json.dumps(report, indent=2))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
