"""Growth operators: exact function over block combinations x shapes, symmetry breaking, Adam state."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from growth.config import choices, fields_with_role
from growth.expand import GrowthError, plan_growth, widen
from growth.expand.axes import cyclic_map, tiled_map, zero_sum_noise
from growth.expand.optimizer_state import grow_optimizer_state
from growth.expand.width import DERIVED, SIZES
from growth.model import build_model
from tests.conftest import tiny_model_config

LAYERS = {
    "gelu": ("model.layer=transformer", "model.ffn=gelu"),
    "swiglu": ("model.layer=transformer", "model.ffn=swiglu", "model.attention_scale=logn"),
    "gau": ("model.layer=gau", "model.gau_attention=softmax", "model.gau_expansion=64"),
    "gau-relu2": ("model.layer=gau", "model.gau_attention=relu2", "model.gau_expansion=64"),
    "flash": (
        "model.layer=gau",
        "model.chunk_size=8",
        "model.gau_expansion=64",
        "model.attention_scale=logn",
    ),
    "flash-relu2": (
        "model.layer=gau",
        "model.chunk_size=8",
        "model.gau_attention=relu2",
        "model.gau_expansion=64",
    ),
}
SHAPES = {
    "2x": (
        "model.d_model=64",
        "model.n_heads=8",
        "model.d_ff=96",
        "model.gau_expansion=128",
        "model.gau_key_size=32",
    ),
    "3x": ("model.d_model=96", "model.n_heads=12"),
    "non-multiple": ("model.d_model=40", "model.n_heads=5", "model.d_ff=60"),
    "ffn-only": ("model.d_ff=80",),
    "gau-e-s-only": ("model.gau_expansion=96", "model.gau_key_size=24"),
    "depth-2x": ("model.n_layers=4",),
    "depth-2x-and-2x": ("model.n_layers=4", "model.d_model=64", "model.n_heads=8"),
}
RESIDUALS = ("pre", "post", "deepnorm")
NORMS = ("layernorm", "rmsnorm")


def cases():
    """Every layer kind x residual x norm x shape; tie/position/objective rotate through the grid."""
    for index, (layer, residual, norm, shape) in enumerate(
        itertools.product(LAYERS, RESIDUALS, NORMS, SHAPES)
    ):
        if shape == "ffn-only" and layer.startswith(("gau", "flash")):
            continue
        if shape == "gau-e-s-only" and layer in ("gelu", "swiglu"):
            continue
        extra = (
            f"model.tie_embeddings={'true' if index % 2 else 'false'}",
            f"model.position={'none' if index % 5 == 3 else 'rope'}",
            f"model.objective={'mlm' if index % 3 == 1 else 'clm'}",
        )
        yield pytest.param(
            layer, residual, norm, shape, extra, id=f"{layer}-{residual}-{norm}-{shape}-{index}"
        )


def lively(model):
    """GAU scale/offsets at N(0, 0.02) make attention ~uniform at width 32; O(1) values exercise it."""
    for name, param in model.named_parameters():
        if name.endswith((".gamma", ".beta")):
            torch.nn.init.normal_(param, std=1.0)
    return model


def source_and_target(layer, residual, norm, shape, extra):
    flags = (*LAYERS[layer], f"model.residual={residual}", f"model.norm={norm}", *extra)
    small = lively(build_model(tiny_model_config(*flags, "model.init_std=0.1"))).eval()
    return small, tiny_model_config(*flags, *SHAPES[shape])


@pytest.mark.parametrize("layer, residual, norm, shape, extra", list(cases()))
def test_growth_preserves_the_function(layer, residual, norm, shape, extra):
    small, target = source_and_target(layer, residual, norm, shape, extra)
    # Post-LN / DeepNorm depth: ramped layers at m = 0 (depth_operator=auto; tests/expand/test_growth_operators.py)
    refused = shape == "non-multiple" and norm == "layernorm"
    if refused:
        with pytest.raises(GrowthError):
            plan_growth(small.config, target)
        return
    grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0)).eval()
    ids = torch.randint(0, target.vocab_size, (2, 19))
    mask = torch.ones(2, 19)
    mask[1, 13:] = 0
    with torch.no_grad():
        reference, logits = small(ids, mask), grown(ids, mask)
    scale = reference.abs().max().item()
    assert (logits - reference).abs().max().item() <= 1e-5 * max(1.0, scale)
    assert grown.num_params() > small.num_params()


def test_zero_sum_noise_sums_to_zero_per_group():
    axis_map = cyclic_map(5, 13)
    noise = zero_sum_noise((7, 13), 1, axis_map, 0.3, torch.Generator().manual_seed(1))
    sums = torch.zeros(7, 5).index_add_(1, axis_map.src, noise)
    assert sums.abs().max() < 1e-6 and noise.std() > 0.1
    stream = tiled_map(4, 11)  # two copies, three residue channels
    noise = zero_sum_noise((3, 11), 1, stream, 0.3, None)
    assert torch.all(noise[:, 8:] == 0) and (noise[:, :4] + noise[:, 4:8]).abs().max() < 1e-6


def embedding_copy_gap(model, width: int) -> float:
    weight = model.embed.weight
    return (weight[:, :width] - weight[:, width : 2 * width]).abs().max().item()


@pytest.mark.parametrize("noise_std, diverges", [(0.0, False), (0.02, True)])
def test_noise_is_what_breaks_the_symmetry(noise_std, diverges):
    """Dropout 0, 2x width, 10 AdamW steps: without noise the copies stay identical forever (a small
    model in disguise); with zero-sum noise they drift apart."""
    small = build_model(tiny_model_config("model.init_std=0.1"))
    grown = widen(
        small,
        tiny_model_config("model.d_model=64", "model.n_heads=8", "model.d_ff=96"),
        noise_std=noise_std,
        generator=torch.Generator().manual_seed(0),
    )
    optimizer = torch.optim.AdamW(grown.parameters(), lr=3e-3)
    ids = torch.randint(0, 97, (4, 17))
    assert embedding_copy_gap(grown, 32) == 0.0
    for _ in range(10):
        logits = grown(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    gap = embedding_copy_gap(grown, 32)
    assert (gap > 1e-3) if diverges else (gap == 0.0), gap


def adam_state(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}


def test_grown_adam_state_gives_each_copy_its_sources_update():
    """Moments follow the gradient map: after 3 steps of the small model, one more Adam step of the
    grown model (noise 0) moves every copied element by exactly the small model's update of its source."""
    old = tiny_model_config("model.init_std=0.1", "model.ffn=gelu")
    small = build_model(old)
    ids = torch.randint(0, 97, (4, 17))

    def step(model, optimizer):
        logits = model(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()

    hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.0)
    optimizer = torch.optim.AdamW(small.parameters(), **hyper)
    for _ in range(3):
        step(small, optimizer)
    target = tiny_model_config(
        "model.init_std=0.1", "model.ffn=gelu", "model.d_model=64", "model.n_heads=8", "model.d_ff=80"
    )
    grown = widen(small, target)
    plan = plan_growth(old, target)
    grown_optimizer = torch.optim.AdamW(grown.parameters(), **hyper)
    moments = grow_optimizer_state(
        adam_state(small, optimizer), plan, [n for n, _ in grown.named_parameters()]
    )
    for name, param in grown.named_parameters():
        grown_optimizer.state[param] = moments[name]

    before_small = {n: p.detach().clone() for n, p in small.named_parameters()}
    before_grown = {n: p.detach().clone() for n, p in grown.named_parameters()}
    step(small, optimizer)
    step(grown, grown_optimizer)
    small_update = {n: p.detach() - before_small[n] for n, p in small.named_parameters()}
    mapped = {n: p.detach() - before_grown[n] for n, p in grown.named_parameters()}
    from growth.expand.axes import remap
    from growth.expand.blocks import axis_maps, rule_for

    maps = axis_maps(old, plan.new)
    worst = 0.0
    for name, update in small_update.items():
        expected = update
        for axis, map_name, _ in rule_for(name, plan.new) or [(0, "stream", "copy")]:
            expected = remap(expected, axis, maps[map_name], "copy")
        worst = max(worst, (mapped[name] - expected).abs().max().item())
    assert worst <= 1e-6, worst
    assert max(u.abs().max().item() for u in small_update.values()) > 1e-3


@pytest.mark.parametrize(
    "change, message",
    [
        (("model.d_model=16", "model.n_heads=2"), "model.d_model=16 is smaller than the source's 32"),
        (("model.vocab_size=101",), "model.vocab_size changes from 97 to 101"),
        (("model.layer=gau",), "model.layer changes from 'transformer' to 'gau'"),
        (("model.head_dim=16", "model.n_heads=2"), "model.n_heads=2 is smaller than the source's 4"),
    ],
)
def test_impossible_growth_is_refused(change, message):
    with pytest.raises(GrowthError, match=None) as err:
        plan_growth(tiny_model_config(), tiny_model_config(*change))
    assert message in str(err.value)


def test_non_multiple_rmsnorm_adjusts_eps_and_layernorm_is_refused():
    plan = plan_growth(tiny_model_config(), tiny_model_config("model.d_model=40", "model.n_heads=5"))
    assert plan.new.norm_eps == pytest.approx(1e-5 * 32 / 40)
    with pytest.raises(GrowthError, match="only exact with model.norm=rmsnorm"):
        plan_growth(
            tiny_model_config("model.norm=layernorm"),
            tiny_model_config("model.norm=layernorm", "model.d_model=40", "model.n_heads=5"),
        )


def changed_value(config, name):
    """Another value of the same type for a field (a different registered kind for component keys)."""
    value = getattr(config, name)
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return next(c for c in choices(f"model.{name}") if c != value)
    return value + 1


@pytest.mark.parametrize("name", fields_with_role("fixed"))
def test_every_fixed_field_change_is_refused(name):
    old = tiny_model_config()
    target = dataclasses.replace(old, **{name: changed_value(old, name)})
    with pytest.raises(GrowthError) as err:
        plan_growth(old, target)
    assert str(err.value).startswith(f"model.{name} changes from {getattr(old, name)!r} to ")
    assert "\n" not in str(err.value)


def test_growable_fields_are_the_sizes_plus_what_the_plan_derives():
    assert set(SIZES).isdisjoint(DERIVED)
    assert set(SIZES + DERIVED) == set(fields_with_role("growable"))


def test_free_fields_come_from_the_target_and_derived_ones_from_the_plan():
    old = tiny_model_config()
    target = tiny_model_config(
        "model.d_model=64",
        "model.n_heads=8",
        "model.dropout=0.1",
        "model.init_std=0.05",
        "model.norm_eps=1e-3",
    )
    plan = plan_growth(old, target)
    assert (plan.new.dropout, plan.new.init_std) == (0.1, 0.05)
    assert plan.new.norm_eps == old.norm_eps  # an integer multiple keeps the source's eps, whatever was asked


def test_rope_dim_is_kept_unless_the_gau_key_size_grows():
    gau = ("model.layer=gau", "model.gau_expansion=64")
    with pytest.raises(GrowthError, match="model.rope_dim changes from 0 to 8; growth keeps RoPE as is"):
        plan_growth(tiny_model_config(*gau), tiny_model_config(*gau, "model.rope_dim=8"))
    plan = plan_growth(tiny_model_config(*gau), tiny_model_config(*gau, "model.gau_key_size=32"))
    assert plan.new.rope_dim == 16 and any("not rotated" in note for note in plan.notes)
