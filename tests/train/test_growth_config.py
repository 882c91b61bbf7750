"""``train.growth`` and ``train.lr_schedule`` without ranks: the stages' models, every refusal at
config time, and the LR schedules against transformers' at sample steps."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_wsd_schedule,
)

from growth.config import ConfigError, load_config
from growth.train.growth_schedule import model_at, stage_models
from growth.train.schedule import build_scheduler
from tests.support.growth_jobs import STAGES


def test_stage_models_follow_the_schedule():
    small = load_config(
        overrides=[
            "model.d_model=32",
            "model.n_heads=2",
            "model.head_dim=16",
            "model.d_ff=64",
            "model.n_layers=2",
            "train.max_steps=8",
            STAGES,
        ]
    )
    models = stage_models(small)
    assert [(m.d_model, m.n_layers, m.n_heads, m.d_ff) for m in models] == [
        (32, 2, 2, 64),
        (64, 2, 4, 128),
        (64, 4, 4, 128),
    ]
    assert [(model_at(small, s).d_model, model_at(small, s).n_layers) for s in (0, 3, 4, 5, 6)] == [
        (32, 2),
        (32, 2),
        (64, 2),
        (64, 2),
        (64, 4),
    ]


@pytest.mark.parametrize(
    "stages, message",
    [
        (
            "[{at_step: 5, model: {n_layers: 8}}, {at_step: 3, model: {d_model: 256, n_heads: 8, d_ff: 768}}]",
            r"train.growth\[1\].at_step=3 must be after the previous stage \(5\)",
        ),
        (
            "[{at_step: 300, model: {n_layers: 8}}]",
            r"train.growth\[0\].at_step=300 must be .* before train.max_steps \(300\)",
        ),
        (
            "[{at_step: 10, model: {residual: post}}]",
            r"train.growth\[0\].model.residual is fixed across growth",
        ),
        ("[{at_step: 10, model: {colour: 3}}]", r"train.growth\[0\].model.colour is not a model field"),
        ("[{at_step: 10, model: {}}]", r"train.growth\[0\].model is empty"),
        (
            "[{at_step: 10, model: {n_layers: 8}, optimizer: fresh}]",
            r"train.growth\[0\].optimizer must be one of grown \| reset",
        ),
        ("[{at_step: 10, model: {n_layers: 8}, noise_std: -1}]", r"train.growth\[0\].noise_std must be >= 0"),
        (
            "[{at_step: 10, model: {n_layers: 8}, rewarmup: 5}]",
            r"unknown key train.growth\[0\].rewarmup; did you mean train.growth\[0\].rewarmup_steps",
        ),
    ],
)
def test_bad_stages_are_refused_at_config_time(stages, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"train.growth={stages}"])


@pytest.mark.parametrize(
    "stages, message",
    [
        ("[{at_step: 10, model: {n_layers: 2}}]", r"train.growth\[0\].model: .*n_layers"),  # shrinking
        (
            "[{at_step: 10, model: {d_model: 192, n_heads: 4}}]",
            r"train.growth\[0\].model: ",
        ),  # heads x head_dim != d_model
        (
            "[{at_step: 10, model: {n_layers: 8}}, {at_step: 20, model: {d_model: 100}}]",
            r"train.growth\[1\].model: ",
        ),
    ],
)
def test_stages_the_operators_cannot_make_exact_are_refused(stages, message):
    with pytest.raises(ConfigError, match=message):
        stage_models(load_config(overrides=[f"train.growth={stages}"]))


def test_contrastive_runs_do_not_grow():
    with pytest.raises(ConfigError, match="contrastive fine-tuning does not grow"):
        load_config(
            overrides=["contrastive.objective=simcse", "train.growth=[{at_step: 10, model: {n_layers: 8}}]"]
        )


def library_lrs(kind: str, steps: list[int], lr: float = 1e-3) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    if kind == "cosine":
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 10, 100, min_lr_rate=0.1)
    elif kind == "wsd":
        scheduler = get_wsd_schedule(
            optimizer, num_warmup_steps=10, num_decay_steps=25, num_training_steps=100, min_lr_ratio=0.1
        )
    else:
        scheduler = get_constant_schedule_with_warmup(optimizer, 10)
    values = []
    for step in range(max(steps) + 1):
        if step in steps:
            values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


SAMPLE_STEPS = [0, 1, 5, 10, 30, 60, 74, 75, 76, 90, 99, 100]


@pytest.mark.parametrize("kind", ["cosine", "wsd", "constant"])
def test_schedules_equal_the_library_at_sample_steps_from_any_start(kind):
    """The schedule positioned at a step (a growth rebuilds the optimizer there) gives the library's LR."""
    train = load_config(
        overrides=[
            f"train.lr_schedule={kind}",
            "train.max_steps=100",
            "train.warmup_steps=10",
            "train.decay_fraction=0.25",
            "train.min_lr_ratio=0.1",
            "train.lr=1e-3",
        ]
    ).train
    expected = library_lrs(kind, SAMPLE_STEPS)
    for start in SAMPLE_STEPS:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
        scheduler = build_scheduler(optimizer, train, start=start)
        got = []
        for step in range(start, max(SAMPLE_STEPS) + 1):
            if step in SAMPLE_STEPS:
                got.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        assert got == pytest.approx(expected[SAMPLE_STEPS.index(start) :], rel=1e-12, abs=1e-15), start
    if kind == "wsd":  # stable at the peak until the last 25% decays
        assert expected[SAMPLE_STEPS.index(74)] == pytest.approx(1e-3) and expected[-1] == pytest.approx(1e-4)


def test_rewarmup_ramps_from_zero_to_the_scheduled_lr():
    train = load_config(
        overrides=["train.lr_schedule=constant", "train.warmup_steps=0", "train.lr=1e-3"]
    ).train
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = build_scheduler(optimizer, train, start=40, rewarmup=(40, 4))
    lrs = []
    for _ in range(6):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
