"""The DeepSpeed engine: config (ZeRO stage, precision, batch sizes), AdamW, warmup + cosine.

The optimizer is torch's AdamW (so nothing JIT-compiles on CPU); at ZeRO 0 in fp32 it is
``SkippingAdamW`` (``growth/distributed/deepspeed_adapter.py``), which skips a step whose gradients
are non-finite, the same thing DeepSpeed's ZeRO optimizers do for stages 1-3. The
schedule (``schedule.py``: cosine, WSD or constant from transformers) is positioned by the run's
applied steps; DeepSpeed steps it only on applied steps and saves it in checkpoints. On CUDA AdamW
is torch's fused kernel. ``train.compile``: ``engine.compile()`` (the model's forward compiled in
place, parameter names unchanged), each layer gathered as one ZeRO-3 leaf so it compiles as one graph.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from growth.distributed import deepspeed_adapter
from growth.distributed.deepspeed_adapter import SkippingAdamW, zero_stage
from growth.errors import ConfigError
from growth.model.layer_kind import LAYERS
from growth.train.config import TrainConfig
from growth.train.schedule import build_scheduler


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; norms, GAU scale/offsets and DeepNorm constants are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(train: TrainConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    if train.deepspeed_config:
        path = Path(train.deepspeed_config)
        if not path.is_file():
            raise ConfigError(
                f"train.deepspeed_config={path} does not exist; see configs/deepspeed/ for examples"
            )
        try:
            ds = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"train.deepspeed_config={path} is not valid JSON: {err}") from None
    else:
        ds = {"zero_optimization": {"stage": train.zero_stage}}
    _check_shape(ds, train)
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_optimization.stage={stage} in {train.deepspeed_config}: use 0, 1, 2 or 3")
    if stage == 3:
        # EMA swaps weights through each rank's partition; persistent (unpartitioned) params would
        # bypass it, so every parameter is partitioned.
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    ds.update(
        train_micro_batch_size_per_gpu=train.micro_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        train_batch_size=train.micro_batch_size * train.grad_accum * world_size,
        gradient_clipping=train.grad_clip,
        # check_grad_overflow: skip non-finite steps in bf16 too (fp32 ZeRO does it by default).
        bf16={"enabled": train.precision == "bf16", "check_grad_overflow": True},
    )
    ds.setdefault("steps_per_print", 10**9)
    if load_universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    return ds


def _check_shape(ds: Any, train: TrainConfig) -> None:
    """A DeepSpeed JSON is an object whose ``zero_optimization`` is an object; fp16/bf16 need a GPU."""
    where = f"train.deepspeed_config={train.deepspeed_config}"
    if not isinstance(ds, dict):
        raise ConfigError(
            f'{where} must hold a JSON object (e.g. {{"zero_optimization": {{"stage": 2}}}}), '
            f"got a {type(ds).__name__}; see configs/deepspeed/"
        )
    if not isinstance(ds.get("zero_optimization", {}), dict):
        raise ConfigError(
            f'{where}: zero_optimization must be an object such as {{"stage": 2}}, got '
            f"{ds['zero_optimization']!r}"
        )
    if not torch.cuda.is_available():
        if isinstance(ds.get("fp16"), dict) and ds["fp16"].get("enabled"):
            raise ConfigError(
                f"{where} enables fp16, which needs a GPU (none is available); remove the fp16 section"
            )
        if train.precision == "bf16":
            raise ConfigError(
                "train.precision=bf16 needs a GPU (none is available); use train.precision=fp32"
            )


def build_engine(
    model: nn.Module,
    train: TrainConfig,
    ds_config: dict[str, Any],
    schedule_start: int = 0,
    rewarmup: tuple[int, int] = (0, 0),
):
    """deepspeed.initialize with torch AdamW and the run's LR schedule at applied step
    ``schedule_start`` (``schedule.py``); returns the engine."""
    groups, hyper = param_groups(model, train.weight_decay), adamw_settings(train)
    if zero_stage(ds_config) == 0 and not ds_config["bf16"]["enabled"]:
        # Plain fp32 DeepSpeed neither skips non-finite steps nor reports the grad norm: we do both.
        optimizer = SkippingAdamW(groups, max_grad_norm=ds_config["gradient_clipping"], **hyper)
        ds_config = {**ds_config, "gradient_clipping": 0.0}
    else:
        # ZeRO 1-3 and the bf16 optimizer clip, skip and report themselves (and want stock AdamW).
        optimizer = torch.optim.AdamW(groups, **hyper)
    scheduler = build_scheduler(optimizer, train, schedule_start, rewarmup)
    if train.compile:
        check_compile_available()
        if zero_stage(ds_config) == 3:
            # ZeRO-3 gathers parameters in hooks that torch.compile may not trace (a graph break at
            # every submodule); gathering per layer instead keeps each layer one graph.
            deepspeed_adapter.set_zero3_leaf_modules(model, [LAYERS.get(name) for name in LAYERS.names()])
    engine = deepspeed_adapter.initialize(model, optimizer, scheduler, ds_config)
    if train.compile:
        torch._dynamo.reset()  # a new engine (e.g. after a growth stage): its own recompile budget
        # DeepSpeed's engine.compile() calls module.compile(): the module's forward is compiled in
        # place, so engine.module and its state-dict names stay the model's own (no _orig_mod.).
        engine.compile()
    return engine


def adamw_settings(train: TrainConfig) -> dict[str, Any]:
    """torch AdamW's settings; on CUDA its fused kernel (one launch for every parameter)."""
    return dict(
        lr=train.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if torch.cuda.is_available() else {})
    )


def check_compile_available() -> None:
    """train.compile=true needs torch.compile's backend here: a C++ compiler on CPU, Triton on CUDA."""
    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError(
            f"train.compile=true: torch.compile is not supported with torch {torch.__version__} on "
            "this Python; use train.compile=false"
        )
    if torch.cuda.is_available():
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(
                "train.compile=true on a GPU needs Triton (pip install triton); or use train.compile=false"
            )
    elif not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++", "c++") if c):
        raise ConfigError(
            "train.compile=true on CPU needs a C++ compiler for torch's inductor (install g++ or set "
            "CXX); or use train.compile=false"
        )
