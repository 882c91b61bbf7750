"""``train.init_from``: start a run from another checkpoint's weights — typically a grown one.

Weights must match the run's model exactly (same shapes and the same model config up to dropout and
init; the grown checkpoint's own ``config.yaml`` is the one to train with). A grown checkpoint also
brings its EMA weights, its grown Adam moments (set into any ZeRO stage through DeepSpeed's
``safe_set_full_optimizer_state``), the tokens and FLOPs seen so far and its growth events.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from growth.config import ConfigError, ModelConfig, model_config_from_dict
from growth.train import checkpoint as ckpt

FREE_TO_DIFFER = ("dropout", "init_std")


def load_init_weights(model: torch.nn.Module, source: str) -> tuple[Path, ckpt.RunState]:
    folder = ckpt.resolve_checkpoint(Path(source), "train.init_from")
    saved: ModelConfig = model_config_from_dict(yaml.safe_load((folder / "config.yaml").read_text())["model"])
    weights = ckpt.load_weights(folder)
    for name, tensor in model.state_dict().items():
        if name not in weights or weights[name].shape != tensor.shape:
            got = tuple(weights[name].shape) if name in weights else "missing"
            raise ConfigError(
                f"train.init_from={source}: {name} is {got} there but {tuple(tensor.shape)} here (its model has "
                f"d_model={saved.d_model}, n_layers={saved.n_layers}); grow it with tools/expand.py first"
            )
    for field in dataclasses.fields(saved):
        mine, theirs = getattr(model.config, field.name), getattr(saved, field.name)
        if field.name not in FREE_TO_DIFFER and mine != theirs:
            raise ConfigError(f"train.init_from={source} was built with model.{field.name}={theirs!r}, this run has "
                              f"{mine!r}; train with --config {folder}/config.yaml")
    model.load_state_dict({k: weights[k] for k in model.state_dict()}, strict=True)
    state = ckpt.read_run_state(folder) if (folder / "run_state.json").is_file() else ckpt.RunState()
    return folder, state


def load_init_training_state(engine, ema, folder: Path) -> None:
    """EMA weights and grown Adam moments, when the checkpoint carries them."""
    if ema is not None and (folder / "ema.pt").is_file():
        ema.load_state_dict(torch.load(folder / "ema.pt", weights_only=False))
    if (folder / "optimizer_state.pt").is_file():
        set_adam_moments(engine, torch.load(folder / "optimizer_state.pt", weights_only=False))


def set_adam_moments(engine, moments: dict[str, dict[str, torch.Tensor]]) -> None:
    """Per-parameter exp_avg/exp_avg_sq and the step, into whatever optimizer DeepSpeed built.
    Parameters without an entry (identity layers) start at zero moments with the same step."""
    from deepspeed.utils import safe_set_full_optimizer_state

    step = float(next(iter(moments.values()))["step"]) if moments else 0.0
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # the torch AdamW inside ZeRO wrappers
    # torch creates Adam state lazily at the first step; create it now. ZeRO-3 swaps its flat fp32
    # partitions into the param groups only during step(), so they are listed separately.
    flats = [p for group in base.param_groups for p in group["params"]]
    flats += list(getattr(engine.optimizer, "fp32_partitioned_groups_flat", []))
    for flat in flats:
        if not base.state[flat]:
            base.state[flat] = {"step": torch.tensor(step), "exp_avg": torch.zeros_like(flat),
                                "exp_avg_sq": torch.zeros_like(flat)}
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:  # ZeRO 1/2 and the bf16 optimizer map parameters onto that state lazily too
        link()
    for name, param in engine.module.named_parameters():
        shape = tuple(getattr(param, "ds_shape", param.shape))
        entry = moments.get(name) or {k: torch.zeros(shape) for k in ("exp_avg", "exp_avg_sq")}
        if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
            for key in ("exp_avg", "exp_avg_sq"):
                safe_set_full_optimizer_state(param, entry[key].to(param.device, torch.float32), key)
        else:  # ZeRO 0 in fp32: torch's optimizer holds per-parameter state directly
            base.state[param] = {"step": torch.tensor(step), "exp_avg": entry["exp_avg"].to(param).clone(),
                                 "exp_avg_sq": entry["exp_avg_sq"].to(param).clone()}
    for state in base.state.values():
        state["step"] = torch.tensor(step) if torch.is_tensor(state.get("step")) else step
