"""Blocks open models need: grouped-query / multi-query attention, q/k/v biases, Llama-3 RoPE scaling; their
growth rules (exact), and cached decoding equal to the full forward."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from growth.config import ConfigError
from growth.expand import GrowthError, plan_growth, widen
from growth.expand.optimizer_state import grow_optimizer_state
from growth.model import build_model
from tests.conftest import tiny_model_config

ATTENTION = {
    "gqa": ("model.n_kv_heads=2",),
    "mqa": ("model.n_kv_heads=1",),
    "gqa-bias": ("model.n_kv_heads=2", "model.qkv_bias=true"),
    "mha-bias": ("model.qkv_bias=true",),
}
SHARED = list(
    itertools.product(
        ["pre", "post", "deepnorm"], ["layernorm", "rmsnorm"], ["rope", "none"], ["sqrt", "logn"]
    )
)


def lively_biases(model, std: float = 0.3):
    """Biases start at 0; give them values so a wrong growth or attention rule shows."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") and "norm" not in name:
                param.normal_(std=std)
    return model


def cases():
    for index, (attention, (residual, norm, position, scale)) in enumerate(
        itertools.product(ATTENTION, SHARED)
    ):
        flags = (
            *ATTENTION[attention],
            f"model.residual={residual}",
            f"model.norm={norm}",
            f"model.position={position}",
            f"model.attention_scale={scale}",
            f"model.objective={'mlm' if index % 3 == 1 else 'clm'}",
            f"model.ffn={'gelu' if index % 2 else 'swiglu'}",
        )
        yield pytest.param(flags, id=f"{attention}-{residual}-{norm}-{position}-{scale}-{index}")


@pytest.mark.parametrize("flags", list(cases()))
def test_grouped_attention_every_combination(flags):
    """Builds; finite forward/backward; causal rows see no later token; padding changes no real token."""
    config = tiny_model_config(*flags, "model.init_std=0.2")
    model = lively_biases(build_model(config)).eval()
    ids = torch.randint(0, config.vocab_size, (2, 21))
    logits = model(ids)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        changed = ids.clone()
        changed[:, 12:] = torch.randint(0, config.vocab_size, (2, 9))
        moved = (model(changed)[:, :12] - logits[:, :12]).abs().max().item()
        assert (moved <= 1e-5) if config.objective == "clm" else (moved > 1e-4)
        padded = torch.cat([ids, torch.zeros(2, 6, dtype=ids.dtype)], dim=1)
        mask = torch.cat([torch.ones(2, 21), torch.zeros(2, 6)], dim=1)
        assert (model(padded, mask)[:, :21] - logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_attention_equals_heads_sharing_copied_keys_and_values(kv_heads):
    """GQA with g = H / G is MHA whose key/value heads are each repeated for their g query heads."""
    gqa = lively_biases(
        build_model(
            tiny_model_config(f"model.n_kv_heads={kv_heads}", "model.qkv_bias=true", "model.init_std=0.2")
        )
    ).eval()
    mha = build_model(tiny_model_config("model.qkv_bias=true")).eval()
    group, head_dim = 4 // kv_heads, gqa.config.head_dim
    state = gqa.state_dict()
    for name in list(state):
        if ".k_proj." in name or ".v_proj." in name:
            blocks = state[name].unflatten(0, (kv_heads, head_dim))
            state[name] = blocks.repeat_interleave(group, dim=0).flatten(0, 1)
    mha.load_state_dict(state)
    ids = torch.randint(0, 97, (2, 15))
    assert (gqa(ids) - mha(ids)).abs().max().item() <= 1e-5
    assert gqa.num_params() < mha.num_params()


def test_flops_count_the_smaller_key_value_projections():
    mha, gqa = tiny_model_config(), tiny_model_config("model.n_kv_heads=1")
    saved = 2 * mha.n_layers * mha.d_model * (mha.n_heads - 1) * mha.head_dim  # k and v: 4 heads -> 1
    assert build_model(mha).flops_per_token(16) - build_model(gqa).flops_per_token(16) == pytest.approx(
        6 * saved
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (("model.n_kv_heads=3",), "model.n_kv_heads must divide model.n_heads (4), got 3"),
        (("model.n_kv_heads=8",), "model.n_kv_heads must divide model.n_heads (4), got 8"),
        (
            ("model.rope_scaling=llama3", "model.rope_high_freq_factor=0.5"),
            "model.rope_high_freq_factor (0.5) must be >",
        ),
        (("model.rope_scaling=yarn",), "model.rope_scaling must be one of none | llama3, got 'yarn'"),
    ],
)
def test_bad_attention_settings_are_refused(flags, message):
    with pytest.raises(ConfigError) as err:
        tiny_model_config(*flags)
    assert message in str(err.value)


def test_llama3_frequencies_equal_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    parameters = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    hf = LlamaConfig(
        hidden_size=512,
        num_attention_heads=4,
        head_dim=128,
        max_position_embeddings=256,
        rope_parameters=parameters,
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf)
    config = tiny_model_config(
        "model.d_model=512",
        "model.head_dim=128",
        "model.rope_base=500000",
        "model.rope_scaling=llama3",
        "model.rope_original_max_len=64",
    )
    ours = build_model(config).layers[0].attention.sublayer.rope.inv_freq
    plain = (
        build_model(tiny_model_config("model.d_model=512", "model.head_dim=128", "model.rope_base=500000"))
        .layers[0]
        .attention.sublayer.rope.inv_freq
    )
    assert torch.allclose(ours, expected, rtol=1e-6, atol=0)
    assert not torch.allclose(ours, plain, rtol=1e-3)  # the scaling does act on these frequencies


# -- growth -------------------------------------------------------------------------------------------------
GROW_SHAPES = {
    "2x": ("model.d_model=64", "model.n_heads=8", "model.d_ff=96"),
    "3x": ("model.d_model=96", "model.n_heads=12"),
    "depth-2x": ("model.n_layers=4",),
    "depth-and-width-2x": ("model.n_layers=4", "model.d_model=64", "model.n_heads=8"),
}


def growth_cases():
    for index, (attention, residual, norm, shape) in enumerate(
        itertools.product(ATTENTION, ["pre", "post", "deepnorm"], ["layernorm", "rmsnorm"], GROW_SHAPES)
    ):
        if shape.startswith("depth") and residual != "pre":
            continue
        extra = (
            f"model.tie_embeddings={'true' if index % 2 else 'false'}",
            f"model.attention_scale={'logn' if index % 3 == 0 else 'sqrt'}",
            f"model.rope_scaling={'llama3' if index % 4 == 1 else 'none'}",
            "model.rope_original_max_len=16",
        )
        yield pytest.param(
            attention, residual, norm, shape, extra, id=f"{attention}-{residual}-{norm}-{shape}-{index}"
        )


@pytest.mark.parametrize("attention, residual, norm, shape, extra", list(growth_cases()))
def test_growth_of_grouped_attention_is_exact(attention, residual, norm, shape, extra):
    flags = (*ATTENTION[attention], f"model.residual={residual}", f"model.norm={norm}", *extra)
    small = lively_biases(build_model(tiny_model_config(*flags, "model.init_std=0.1"))).eval()
    target = tiny_model_config(
        *flags, *GROW_SHAPES[shape]
    )  # carries the source's n_kv_heads: the plan derives it
    grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0)).eval()
    group = small.config.n_heads // (small.config.n_kv_heads or small.config.n_heads)
    assert grown.config.n_heads // (grown.config.n_kv_heads or grown.config.n_heads) == group
    ids = torch.randint(0, 97, (2, 19))
    mask = torch.ones(2, 19)
    mask[1, 13:] = 0
    with torch.no_grad():
        reference, logits = small(ids, mask), grown(ids, mask)
    assert (logits - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


def test_key_value_heads_follow_their_query_groups():
    """Query head j of the grown model copies head j mod H; its key/value head is (j // g) mod (H / g)."""
    small = lively_biases(build_model(tiny_model_config("model.n_kv_heads=2", "model.qkv_bias=true")))
    grown = widen(
        small,
        tiny_model_config(
            "model.n_kv_heads=2", "model.qkv_bias=true", "model.d_model=96", "model.n_heads=12"
        ),
    )
    assert grown.config.n_kv_heads == 6
    d_h = small.config.head_dim
    old, new = small.layers[0].attention.sublayer, grown.layers[0].attention.sublayer
    for j in range(12):
        kv_new, kv_old = j // 2, (j % 4) // 2
        assert kv_old == kv_new % 2
        assert torch.equal(
            new.k_proj.bias[kv_new * d_h : (kv_new + 1) * d_h],
            old.k_proj.bias[kv_old * d_h : (kv_old + 1) * d_h],
        )
        assert torch.equal(
            new.q_proj.bias[j * d_h : (j + 1) * d_h], old.q_proj.bias[(j % 4) * d_h : (j % 4 + 1) * d_h]
        )


@pytest.mark.parametrize(
    "old, target, message",
    [
        (
            ("model.n_kv_heads=2",),
            ("model.n_kv_heads=1", "model.d_model=40", "model.n_heads=5"),
            "model.n_heads=5 is not a multiple of the query group size 2",
        ),
        (
            ("model.n_kv_heads=2",),
            ("model.n_kv_heads=8", "model.d_model=64", "model.n_heads=8"),
            "model.n_kv_heads=8 changes the query group size from 2; growth keeps it (set model.n_kv_heads=4)",
        ),
        (
            (),
            ("model.n_kv_heads=2", "model.d_model=64", "model.n_heads=8"),
            "model.n_kv_heads=2 changes the query group size from 1; growth keeps it (set model.n_kv_heads=0)",
        ),
        ((), ("model.qkv_bias=true",), "model.qkv_bias changes from False to True"),
        ((), ("model.rope_scaling=llama3",), "model.rope_scaling changes from 'none' to 'llama3'"),
    ],
)
def test_growth_that_would_regroup_heads_is_refused(old, target, message):
    with pytest.raises(GrowthError) as err:
        plan_growth(tiny_model_config(*old), tiny_model_config(*target))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_grown_adam_moments_of_grouped_attention_give_each_copy_its_sources_update():
    """As test_expand's test for MHA: one Adam step of the grown model (noise 0) moves each copy of a q/k/v
    weight or bias by exactly its source's update."""
    flags = ("model.init_std=0.1", "model.n_kv_heads=2", "model.qkv_bias=true")
    old = tiny_model_config(*flags)
    small = lively_biases(build_model(old), 0.1)
    ids = torch.randint(0, 97, (4, 17))

    def step(model, optimizer):
        torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()

    hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.0)
    optimizer = torch.optim.AdamW(small.parameters(), **hyper)
    for _ in range(3):
        step(small, optimizer)
    target = tiny_model_config(*flags, "model.d_model=64", "model.n_heads=8", "model.d_ff=80")
    grown, plan = widen(small, target), plan_growth(old, target)
    names = {id(p): n for n, p in small.named_parameters()}
    moments = grow_optimizer_state(
        {names[id(p)]: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()},
        plan,
        [n for n, _ in grown.named_parameters()],
    )
    grown_optimizer = torch.optim.AdamW(grown.parameters(), **hyper)
    for name, param in grown.named_parameters():
        grown_optimizer.state[param] = moments[name]
    before_small = {n: p.detach().clone() for n, p in small.named_parameters()}
    before_grown = {n: p.detach().clone() for n, p in grown.named_parameters()}
    step(small, optimizer)
    step(grown, grown_optimizer)
    from growth.expand.axes import remap
    from growth.expand.blocks import axis_maps, rule_for

    maps = axis_maps(old, plan.new)
    worst = 0.0
    for name, param in small.named_parameters():
        expected = param.detach() - before_small[name]
        for axis, map_name, _ in rule_for(name, plan.new) or [(0, "stream", "copy")]:
            expected = remap(expected, axis, maps[map_name], "copy")
        worst = max(
            worst,
            (dict(grown.named_parameters())[name].detach() - before_grown[name] - expected)
            .abs()
            .max()
            .item(),
        )
    assert worst <= 1e-6, worst


# -- cached decoding ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags",
    [
        ("model.n_kv_heads=2", "model.qkv_bias=true"),
        ("model.attention_scale=logn",),
        ("model.residual=post", "model.norm=layernorm", "model.n_kv_heads=1"),
        ("model.position=none", "model.ffn=gelu"),
        ("model.rope_dim=4",),
    ],
)
def test_cached_decoding_equals_the_full_forward(flags):
    """Feeding a sequence in pieces through the key/value cache gives the full forward's logits (log-n counts
    the cached keys; RoPE rotates new tokens at their positions), also with left padding."""
    from transformers import DynamicCache

    from growth.model.hf_model import GrowthForCausalLM, GrowthHFConfig

    config = tiny_model_config(*flags, "model.init_std=0.2")
    hf = GrowthForCausalLM(GrowthHFConfig(growth=dataclasses.asdict(config))).eval()
    lively_biases(hf.model)
    ids = torch.randint(0, 97, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        full = hf.model(ids, mask)
        cache, pieces = DynamicCache(config=hf.config), []
        for start, end in ((0, 6), (6, 7), (7, 10), (10, 13)):
            pieces.append(hf(ids[:, start:end], attention_mask=mask[:, :end], cache=cache).logits)
    real = mask.bool()
    assert (torch.cat(pieces, 1) - full)[real].abs().max().item() <= 1e-5
