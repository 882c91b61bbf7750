"""One LR schedule for the whole run, whatever grows inside it.

The shapes come from transformers (warmup + cosine with a floor, warmup-stable-decay, constant); the
position is the run's applied optimizer step, so a growth stage, which builds a new optimizer,
continues the schedule instead of restarting it (staged training's "equivalent step", Shen et al.
2022). ``rewarmup_steps`` after a growth ramps linearly from 0 to the scheduled LR. A resume
recomputes the shape from the config, so a larger ``train.max_steps`` stretches the rest of the run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_wsd_schedule,
)

from growth.train.config import TrainConfig

Factor = Callable[[int], float]


def schedule_shape(train: TrainConfig) -> Factor:
    """LR multiplier at an applied step of the whole run, as transformers computes it."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    if train.lr_schedule == "cosine":
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            probe, train.warmup_steps, train.max_steps, min_lr_rate=train.min_lr_ratio
        )
    elif train.lr_schedule == "wsd":
        scheduler = get_wsd_schedule(
            probe,
            num_warmup_steps=train.warmup_steps,
            num_decay_steps=round(train.decay_fraction * train.max_steps),
            num_training_steps=train.max_steps,
            min_lr_ratio=train.min_lr_ratio,
        )
    else:
        scheduler = get_constant_schedule_with_warmup(probe, train.warmup_steps)
    return scheduler.lr_lambdas[0]


def rewarmed(shape: Factor, start: int, steps: int) -> Factor:
    """``shape`` ramped from 0 over ``steps`` applied steps beginning at ``start`` (a growth)."""
    if steps <= 0:
        return shape
    return lambda step: shape(step) * min(1.0, (step - start + 1) / steps) if step >= start else shape(step)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, start: int = 0, rewarmup: tuple[int, int] = (0, 0)
) -> LambdaLR:
    """The run's schedule on ``optimizer``, positioned at applied step ``start``;
    ``rewarmup = (growth step, steps)``."""
    factor = rewarmed(schedule_shape(train), *rewarmup)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    # last_epoch = start - 1: LambdaLR's first step() (inside its constructor) lands on ``start``.
    return LambdaLR(optimizer, factor, last_epoch=start - 1)
