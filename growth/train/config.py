"""The ``train`` section: the optimizer, schedule, checkpoints and growth stages of a run."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any

from growth.errors import ConfigError
from growth.expand.options import OPERATOR_CHOICES, GrowthOptions
from growth.model.config import ModelConfig, fields_with_role, model_field_role
from growth.schema import coerce, require_positive

# train.resume, train.precision, train.lr_schedule: plain options (a code path, not a component).
OPTIONS: dict[str, tuple[str, ...]] = {
    "train.resume": ("auto", "none"),
    "train.precision": ("fp32", "bf16"),
    "train.lr_schedule": ("cosine", "wsd", "constant"),
}


@dataclass(kw_only=True)
class GrowthStage(GrowthOptions):
    """One growth inside a run (``train.growth``; docs/growth_operators.md "Grow inside one run"): the
    operators of ``GrowthOptions`` (declared once there; tools/expand.py flags of the same names) plus when
    to grow and to what."""

    # grow after this optimizer step of the whole run; auto: when the small model's loss falls more slowly per
    # FLOP than auto_law predicts for the grown model (growth/train/auto_growth.py; the last stage only)
    at_step: int | str
    model: dict[str, Any] = field(default_factory=dict)  # the growable fields that change, e.g. {n_layers: 8}
    rewarmup_steps: int = 0  # ramp the LR from 0 to the scheduled value over this many steps after growing
    # at_step: auto (growth/train/auto_growth.py): L(N, D) as [E, A, alpha, B, beta] (tools/bench_growth.py fits
    # it), the evaluations the small model's slope is fitted on, and the step to grow at the latest (0: none)
    auto_law: list[float] = field(default_factory=list)
    auto_window: int = 3
    auto_latest: int = 0

    def __post_init__(self) -> None:
        """Not GrowthOptions' checks: a stage is checked by ``validate_train``, whose messages name the key
        (``train.growth[0].noise ...``); ``GrowthOptions.of(stage)`` checks the operators again when it grows."""


@dataclass
class TrainConfig:
    name: str = "default"
    out_dir: str = ""  # empty: runs/<name>
    max_steps: int = 300
    micro_batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    save_interval: int = 100
    save_steps: list[int] = field(
        default_factory=list
    )  # also save after these steps (e.g. where decay branches start)
    keep_checkpoints: int = (
        0  # keep the newest N complete checkpoints (older ones deleted once a newer is complete); 0: all
    )
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 10
    resume: str = "auto"  # auto (continue from the latest checkpoint in out_dir) | none
    init_from: str = ""  # start from another checkpoint's weights (after growth)
    zero_stage: int = 0
    deepspeed_config: str = ""  # a DeepSpeed JSON; overrides zero_stage when set
    precision: str = "fp32"  # fp32 | bf16
    seed: int = 1234
    ema_decay: float = 0.0  # 0 disables EMA
    ema_warmup: bool = False  # decay_t = min(ema_decay, (1 + t) / (10 + t))
    max_bad_steps: int = 5  # stop after this many consecutive non-finite (skipped) steps
    lr_schedule: str = (
        "cosine"  # cosine (warmup + cosine to min_lr_ratio) | wsd (warmup-stable-decay) | constant
    )
    decay_fraction: float = 0.2  # wsd: the final share of max_steps that decays to min_lr_ratio
    growth: list[GrowthStage] = field(default_factory=list)  # growth stages applied in order inside the run
    continue_schedule: bool = (
        False  # with init_from: continue the source's step count and LR schedule position
    )
    compile: bool = (
        False  # torch.compile the model under the DeepSpeed engine (engine.compile(); growth/train/engine.py)
    )
    # R-Drop (Liang et al. 2021): each example runs twice under independent dropout; alpha weighs the
    # symmetric KL between the two passes (growth/objectives/rdrop.py; docs/rdrop.md). 0: off.
    rdrop_alpha: float = 0.0
    # Sampled text in TensorBoard's text tab and the log (growth/train/callbacks/samples.py): every N steps and
    # right before and after each growth stage; 0: off. Each prompt is continued on rank 0 with its own seed.
    sample_interval: int = 0
    sample_prompts: list[str] = field(default_factory=lambda: ["ROMEO:"])  # "" starts a new document


def validate_train(t: TrainConfig) -> None:
    """Reject impossible values with a one-line message naming the key (``train.growth[i].<field>``)."""
    for dotted, allowed in OPTIONS.items():
        value = getattr(t, dotted.split(".")[1])
        if value not in allowed:
            raise ConfigError(f"{dotted} must be one of {' | '.join(allowed)}, got {value!r}")
    require_positive("train", t, "max_steps", "micro_batch_size", "grad_accum", "lr")
    require_positive(
        "train", t, "save_interval", "eval_interval", "eval_batches", "log_interval", "max_bad_steps"
    )
    if any(not 0 < step <= t.max_steps for step in t.save_steps):
        raise ConfigError(
            f"train.save_steps must lie in [1, train.max_steps={t.max_steps}], got {t.save_steps}"
        )
    if t.keep_checkpoints < 0:
        raise ConfigError(
            f"train.keep_checkpoints must be >= 0 (0 keeps every checkpoint), got {t.keep_checkpoints}"
        )
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    if t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage must be 0, 1, 2 or 3, got {t.zero_stage}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0 disables EMA), got {t.ema_decay}")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if not 0.0 < t.decay_fraction <= 1.0:
        raise ConfigError(f"train.decay_fraction must be in (0, 1], got {t.decay_fraction}")
    previous = 0
    for index, stage in enumerate(t.growth):
        key = f"train.growth[{index}]"
        if stage.at_step == "auto":
            _validate_auto_stage(key, stage, index == len(t.growth) - 1, t.max_steps)
        _validate_stage(key, stage, previous, t.max_steps)
        previous = stage.at_step


def _validate_auto_stage(key: str, stage: GrowthStage, last: bool, max_steps: int) -> None:
    if not last:
        raise ConfigError(
            f"{key}.at_step=auto: only the last stage may choose its own step (the others follow it)"
        )
    if len(stage.auto_law) != 5 or not all(math.isfinite(v) and v >= 0 for v in stage.auto_law):
        raise ConfigError(
            f"{key}.auto_law must be L(N, D)'s [E, A, alpha, B, beta], 5 numbers >= 0 "
            f"(tools/bench_growth.py prints them), got {stage.auto_law}"
        )
    if stage.auto_law[2] <= 0 or stage.auto_law[4] <= 0:
        raise ConfigError(f"{key}.auto_law: alpha and beta must be > 0, got {stage.auto_law}")
    if stage.auto_window < 2:
        raise ConfigError(
            f"{key}.auto_window must be >= 2 evaluations (a slope needs two), got {stage.auto_window}"
        )
    if not 0 <= stage.auto_latest < max_steps:
        raise ConfigError(
            f"{key}.auto_latest must be in [0, train.max_steps={max_steps}) (0: no deadline), got {stage.auto_latest}"
        )


def _validate_stage(key: str, stage: GrowthStage, previous: int | str, max_steps: int) -> None:
    """What can be checked without the growth operators (the builder checks each stage against them)."""
    if isinstance(stage.at_step, str) and stage.at_step != "auto":
        raise ConfigError(f"{key}.at_step must be a step number or auto, got {stage.at_step!r}")
    if stage.at_step != "auto" and not previous < stage.at_step < max_steps:
        raise ConfigError(
            f"{key}.at_step={stage.at_step} must be after the previous stage ({previous}) and before "
            f"train.max_steps ({max_steps})"
        )
    if not stage.model:
        raise ConfigError(f"{key}.model is empty; give the growable fields that change, e.g. {{n_layers: 8}}")
    growable, hints = fields_with_role("growable"), typing.get_type_hints(ModelConfig)
    for name, value in stage.model.items():
        if name not in growable:
            what = "not a model field" if name not in hints else f"{model_field_role(name)} across growth"
            raise ConfigError(f"{key}.model.{name} is {what}; growable fields are {', '.join(growable)}")
        stage.model[name] = coerce(f"{key}.model.{name}", value, hints[name], key, from_text=False)
    if not stage.noise_std >= 0:
        raise ConfigError(f"{key}.noise_std must be >= 0 (0: no symmetry breaking), got {stage.noise_std}")
    if stage.rewarmup_steps < 0:
        raise ConfigError(f"{key}.rewarmup_steps must be >= 0, got {stage.rewarmup_steps}")
    for name, allowed in OPERATOR_CHOICES.items():
        if getattr(stage, name) not in allowed:
            raise ConfigError(
                f"{key}.{name} must be one of {' | '.join(allowed)}, got {getattr(stage, name)!r}"
            )
    if stage.ramp_steps < 1:
        raise ConfigError(
            f"{key}.ramp_steps must be >= 1 (the gate rises over that many steps), got {stage.ramp_steps}"
        )


def validate_sampling(t: TrainConfig, model_objective: str, contrastive_objective: str) -> None:
    """Samples need a causal language model to sample from."""
    if t.sample_interval < 0:
        raise ConfigError(f"train.sample_interval must be >= 0 (0: no samples), got {t.sample_interval}")
    if not t.sample_interval:
        return
    if model_objective != "clm" or contrastive_objective != "none":
        what = (
            f"model.objective={model_objective}"
            if model_objective != "clm"
            else f"contrastive.objective={contrastive_objective}"
        )
        raise ConfigError(
            f"train.sample_interval={t.sample_interval}: {what} trains no causal language model to sample "
            "from; set train.sample_interval=0"
        )
    if not t.sample_prompts:
        raise ConfigError(
            'train.sample_prompts is empty; give at least one prompt ("" starts a new document)'
        )
