"""``train.init_from``: start a run from another checkpoint's weights — typically a grown one.

Weights must match the run's model exactly (same shapes, and the same model config up to the fields
that are free to change, ``growth/config.py`` field roles; the grown checkpoint's own
``config.yaml`` is the one to train with). A grown checkpoint also brings its EMA weights, its grown
Adam moments (set into any ZeRO stage through ``deepspeed_adapter.set_adam_moments``), the tokens
and FLOPs seen so far, its growth events and the data position of the small run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from growth import checkpoint as ckpt
from growth.checkpoint.moments import GROWN_MOMENTS
from growth.distributed.deepspeed_adapter import set_adam_moments
from growth.errors import ConfigError
from growth.model.config import ModelConfig, model_config_from_dict, model_differences


def load_init_weights(model: torch.nn.Module, source: str) -> tuple[Path, ckpt.RunState]:
    folder = ckpt.resolve_checkpoint(Path(source), "train.init_from")
    saved: ModelConfig = model_config_from_dict(yaml.safe_load((folder / ckpt.CONFIG).read_text())["model"])
    weights = ckpt.load_weights(folder)
    for name, tensor in model.state_dict().items():
        if name not in weights or weights[name].shape != tensor.shape:
            got = tuple(weights[name].shape) if name in weights else "missing"
            raise ConfigError(
                f"train.init_from={source}: {name} is {got} there but {tuple(tensor.shape)} here (its model has "
                f"d_model={saved.d_model}, n_layers={saved.n_layers}); grow it with tools/expand.py first"
            )
    for name, theirs, mine in model_differences(saved, model.config, ("fixed", "growable")):
        raise ConfigError(
            f"train.init_from={source} was built with model.{name}={theirs!r}, this run has "
            f"{mine!r}; train with --config {folder}/config.yaml"
        )
    model.load_state_dict({k: weights[k] for k in model.state_dict()}, strict=True)
    return folder, ckpt.run_state_or_empty(folder)


def load_init_training_state(engine, ema, folder: Path) -> None:
    """EMA weights and grown Adam moments, when the checkpoint carries them."""
    saved_ema = ckpt.read_ema(folder)
    if ema is not None and saved_ema is not None:
        ema.load_state_dict(saved_ema)
    if (folder / GROWN_MOMENTS).is_file():
        set_adam_moments(engine, torch.load(folder / GROWN_MOMENTS, weights_only=False))
