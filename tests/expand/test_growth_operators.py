"""The growth operators of issue 12, without ranks: ramped depth for every residual kind, head-size growth,
G_stack, LEMON splits, relative noise, Su's interleaved widening; through ``widen``, ``grow_state`` and
``expand_checkpoint`` (tools/expand.py's function) on checkpoint folders. Rank-spawning runs (the in-run
stage, the CLI): ``test_growth_operators_distributed.py``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from growth import checkpoint as ckpt
from growth.config import Config, load_config
from growth.expand import GrowthError, GrowthOptions, plan_growth, widen
from growth.expand.axes import cyclic_map, lemon_shares, tiled_map
from growth.expand.grow_checkpoint import expand_checkpoint
from growth.expand.grow_state import RAMP_STATE, grow_state
from growth.expand.optimizer_state import grow_optimizer_state
from growth.model import build_model
from growth.model.residual import deepnorm_constants
from growth.model.transformer import depth_gates
from growth.train.callbacks.depth_ramp import DepthRamp
from tests.conftest import tiny_model_config

RESIDUALS = ("pre", "post", "deepnorm")
NORMS = ("layernorm", "rmsnorm")
LAYERS = {
    "swiglu": ("model.layer=transformer", "model.ffn=swiglu"),
    "gelu-logn": ("model.layer=transformer", "model.ffn=gelu", "model.attention_scale=logn"),
    "gau": ("model.layer=gau", "model.gau_expansion=64"),
}
TOLERANCE = 1e-5


def small_model(*flags: str, lively_gau: bool = True):
    model = build_model(tiny_model_config(*flags, "model.init_std=0.1")).eval()
    if lively_gau:  # GAU scale/offsets at N(0, 0.02) make attention ~uniform at width 32
        for name, param in model.named_parameters():
            if name.endswith((".gamma", ".beta")):
                torch.nn.init.normal_(param, std=1.0)
    return model


def probe(vocab: int = 97):
    ids = torch.randint(0, vocab, (2, 19), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 19)
    mask[1, 13:] = 0
    return ids, mask


def max_relative_diff(a, b) -> float:
    ids, mask = probe()
    with torch.no_grad():
        reference, logits = a(ids, mask), b(ids, mask)
    return (logits - reference).abs().max().item() / max(1.0, reference.abs().max().item())


def lm_loss(model, ids):
    logits = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


class FakeTrainer:
    """What DepthRamp uses of a Trainer: the network, the step counter, ``log``."""

    def __init__(self, network, step: int = 0):
        self.module, self.state, self.logged = (
            SimpleNamespace(network=network),
            SimpleNamespace(step=step),
            [],
        )

    def log(self, step, scalars):
        self.logged.append((step, scalars))


# -- 1. ramped depth growth -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, residual, norm, width",
    [
        pytest.param(
            layer, residual, norm, width, id=f"{layer}-{residual}-{norm}-{'2x' if width else 'depth'}"
        )
        for (layer, residual, norm), width in zip(
            itertools.product(LAYERS, RESIDUALS, NORMS), itertools.cycle((False, True))
        )
    ],
)
def test_ramp_is_exact_at_zero_trains_and_folds_into_a_plain_model(layer, residual, norm, width):
    """2 -> 5 layers (and 2x width in every other case): at m = 0 the grown model is the small one (<= 1e-5);
    DepthRamp raises m by 1/R per optimizer step while AdamW trains; after R steps the gates are folded and
    the network equals a plain model built from the same weights (bit for bit)."""
    flags = (*LAYERS[layer], f"model.residual={residual}", f"model.norm={norm}", "model.tie_embeddings=false")
    small = small_model(*flags)
    grow = (
        "model.n_layers=5",
        *(("model.d_model=64", "model.n_heads=8", "model.gau_expansion=128") if width else ()),
    )
    target = tiny_model_config(*flags, *grow)
    options = GrowthOptions(depth_operator="ramp", ramp_steps=4)
    plan = plan_growth(small.config, target, options)
    assert (
        plan.ramp_layers == [i for i, s in enumerate(plan.layer_sources) if s is None]
        and len(plan.ramp_layers) == 3
    )
    grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0), options=options)
    assert max_relative_diff(small, grown.eval()) <= TOLERANCE
    assert set(depth_gates(grown.layers)) == set(plan.ramp_layers)

    trainer, ramp = FakeTrainer(grown.train()), DepthRamp()
    ramp.begin(trainer, plan.ramp_layers, options.ramp_steps)
    writer = next(
        p for n, p in grown.layers[plan.ramp_layers[0]].named_parameters() if n.endswith("o_proj.weight")
    )
    writer_init = writer.detach().clone()
    optimizer = torch.optim.AdamW(grown.parameters(), lr=3e-3)
    ids = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(1))
    seen, losses = [], []
    for _ in range(options.ramp_steps + 2):
        ramp.pre_step(trainer)
        seen.append(sorted(set(depth_gates(grown.layers).values())))
        loss = lm_loss(grown, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        trainer.state.step += 1
        ramp.post_step(trainer, None)
    assert seen == [[0.0], [0.25], [0.5], [0.75], [], []]
    assert [s for _, s in trainer.logged][0]["growth/ramp_m"] == 0.0 and not ramp.active(trainer)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert (writer.detach() - writer_init).abs().max() > 1e-4  # a new layer learned while it was ramped in
    plain = build_model(plan.new)
    plain.load_state_dict(grown.state_dict(), strict=True)
    ids, mask = probe()
    with torch.no_grad():
        assert torch.equal(plain.eval()(ids, mask), grown.eval()(ids, mask))
    assert not any("depth_gate" in name for name in grown.state_dict()) and not depth_gates(grown.layers)


def test_ramp_resumes_exactly_from_its_state():
    """DepthRamp's state (in run_state.json) restores the same m at every step on a freshly built network."""
    flags = ("model.residual=post",)
    small = small_model(*flags)
    target = tiny_model_config(*flags, "model.n_layers=4")
    grown = widen(small, target, options=GrowthOptions(ramp_steps=10))  # auto: ramp for Post-LN
    trainer, ramp = FakeTrainer(grown, step=7), DepthRamp()
    ramp.begin(trainer, [1, 3], 10)
    for _ in range(3):
        ramp.pre_step(trainer)
        trainer.state.step += 1
        ramp.post_step(trainer, None)
    state = json.loads(json.dumps(ramp.state_dict()))  # what the checkpoint holds
    rebuilt = build_model(grown.config)
    rebuilt.load_state_dict(grown.state_dict())
    resumed, other = DepthRamp(), FakeTrainer(rebuilt, step=trainer.state.step)
    resumed.load_state_dict(state)
    resumed.pre_train(other)
    assert (
        depth_gates(rebuilt.layers) == depth_gates(grown.layers) == pytest.approx({1: 0.3, 3: 0.3}, abs=1e-7)
    )
    assert max_relative_diff(grown, rebuilt) == 0.0


def test_ramp_continues_from_an_init_from_checkpoint(tmp_path):
    """A fresh run from a grown folder (or a mid-ramp checkpoint) re-bases the carried ramp on its own step."""
    folder = tmp_path / "grown"
    folder.mkdir()
    state = ckpt.RunState(
        step=40, callbacks={RAMP_STATE: {"ramps": [{"layers": [1], "steps": 10, "start": 36}]}}
    )
    (folder / ckpt.RUN_STATE).write_text(state.to_json())
    (folder / ckpt.CONFIG).write_text("model: {}\n")
    (folder / ckpt.WEIGHTS).write_bytes(b"")
    grown = build_model(tiny_model_config("model.n_layers=2"))
    ramp, trainer = DepthRamp(str(folder)), FakeTrainer(grown, step=0)
    ramp.pre_train(trainer)
    assert ramp.ramps == [{"layers": [1], "steps": 10, "start": -4}] and depth_gates(
        grown.layers
    ) == pytest.approx({1: 0.4})


def test_deepnorm_keeps_the_old_alpha_and_builds_new_layers_for_the_deeper_stack():
    """The choice documented in docs/design.md Sec. 4.9: old layers keep their stored alpha = (2N)^(1/4)
    (exact; rescaling it would need the writers rescaled and is exact only up to eps), new layers are
    layers of the deeper stack (alpha' = (2N')^(1/4), beta' init); the gate makes them exact. 12 -> 48."""
    flags = (
        "model.residual=deepnorm",
        "model.n_layers=12",
        "model.d_model=16",
        "model.n_heads=2",
        "model.d_ff=32",
        "model.vocab_size=61",
    )
    small = build_model(tiny_model_config(*flags, "model.init_std=0.1")).eval()
    target = tiny_model_config(*flags, "model.n_layers=48")
    plan = plan_growth(small.config, target)  # auto: ramp
    assert plan.depth_operator == "ramp" and len(plan.ramp_layers) == 36
    ids = torch.randint(0, 61, (2, 19))
    weights = small.state_dict()
    grown = grow_state(small.config, target, weights, None, None, ids, GrowthOptions(seed=3))
    old_alpha, new_alpha = deepnorm_constants(12)[0], deepnorm_constants(48)[0]
    for index, source in enumerate(plan.layer_sources):
        alpha = grown.weights[f"layers.{index}.attention.alpha"].item()
        assert alpha == pytest.approx(old_alpha if source is not None else new_alpha, rel=1e-6)
    assert grown.report["max_abs_logit_diff"] <= TOLERANCE * max(1.0, grown.report["logit_scale"])
    assert grown.report["ramp_layers"] == plan.ramp_layers and grown.report["function_preserving"]
    # The new layers' value path carries DeepNet's beta for N = 48, not for one layer.
    new = plan.ramp_layers[0]
    std = grown.weights[f"layers.{new}.attention.sublayer.v_proj.weight"].std().item()
    beta = deepnorm_constants(48)[1]
    assert std == pytest.approx(beta * math.sqrt(2 / (16 + 16)), rel=0.2)


@pytest.mark.parametrize("residual", ["post", "deepnorm"])
def test_zero_writer_insertion_is_refused_where_it_is_not_the_identity(residual):
    old = tiny_model_config(f"model.residual={residual}")
    with pytest.raises(
        GrowthError, match=f"depth_operator=zero is not function-preserving with model.residual={residual}"
    ):
        plan_growth(
            old,
            tiny_model_config(f"model.residual={residual}", "model.n_layers=4"),
            GrowthOptions(depth_operator="zero"),
        )
    pre = plan_growth(tiny_model_config(), tiny_model_config("model.n_layers=4"))
    assert (
        pre.depth_operator == "zero" and pre.ramp_layers == []
    )  # Pre-LN keeps zero-writer insertion by default


# -- 2. head-size growth ----------------------------------------------------------------------------
HEAD_CASES = [
    (ffn, scale, position, RESIDUALS[index % 3], NORMS[index % 2])
    for index, (ffn, scale, position) in enumerate(
        itertools.product(("gelu", "swiglu"), ("sqrt", "logn"), ("rope", "rope-partial", "none"))
    )
]


@pytest.mark.parametrize("ffn, scale, position, residual, norm", HEAD_CASES)
def test_head_size_growth_is_exact_and_the_new_dimensions_can_learn(ffn, scale, position, residual, norm):
    """head_dim 8 -> 16 with d_model = n_heads x head_dim (and 8 -> 12 with twice the heads): new q dims 0,
    q x sqrt(d'/d), new k/v dims from the init, o_proj's new columns 0, rope_dim pinned to the old width."""
    flags = [
        f"model.ffn={ffn}",
        f"model.attention_scale={scale}",
        f"model.residual={residual}",
        f"model.norm={norm}",
        "model.position=" + ("none" if position == "none" else "rope"),
    ]
    if position == "rope-partial":
        flags.append("model.rope_dim=4")
    small = small_model(*flags)
    for grow in (
        ("model.d_model=64", "model.head_dim=16"),
        ("model.d_model=96", "model.n_heads=8", "model.head_dim=12"),
    ):
        target = tiny_model_config(
            *flags, *grow, *(("model.rope_dim=4",) if position == "rope-partial" else ())
        )
        plan = plan_growth(small.config, target)
        if position != "none":
            assert plan.new.rope_dim == (4 if position == "rope-partial" else 8)
        grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0))
        assert max_relative_diff(small, grown.eval()) <= TOLERANCE
    attention = grown.layers[0].attention.sublayer
    new_rows = torch.arange(96).view(8, 12)[:, 8:].flatten()
    assert (
        attention.q_proj.weight[new_rows].abs().max() == 0
        and attention.k_proj.weight[new_rows].abs().min() > 0
    )
    assert (
        attention.o_proj.weight[:, new_rows].abs().max() == 0
        and attention.v_proj.weight[new_rows].abs().max() > 0
    )
    lm_loss(grown.train(), torch.randint(0, 97, (2, 17))).backward()
    assert attention.q_proj.weight.grad[new_rows].abs().max() > 0  # q's new dims read k's: they learn
    assert attention.o_proj.weight.grad[:, new_rows].abs().max() > 0  # o reads v's new dims: they learn


def test_head_size_growth_moments_and_operators():
    old, target = tiny_model_config(), tiny_model_config("model.d_model=64", "model.head_dim=16")
    plan = plan_growth(old, target)
    small = build_model(old)
    moments = {
        n: {"exp_avg": torch.ones_like(p), "exp_avg_sq": torch.ones_like(p), "step": torch.tensor(3.0)}
        for n, p in small.named_parameters()
    }
    grown = grow_optimizer_state(moments, plan, [n for n, _ in build_model(plan.new).named_parameters()])
    q = grown["layers.0.attention.sublayer.q_proj.weight"]["exp_avg"]
    assert (
        q.shape == (64, 64) and q.view(4, 16, 64)[:, 8:].abs().max() == 0
    )  # new head dims start without moments
    report = grow_state(old, target, small.state_dict(), None, None, torch.randint(0, 97, (2, 9))).report
    assert any(op.startswith("head size 8 -> 16") for op in report["operators"])
    assert report["relative_logit_diff"] <= TOLERANCE


# -- 3. G_stack ------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", RESIDUALS)
def test_stacking_copies_the_stack_and_reports_its_loss_change(residual):
    flags = (f"model.residual={residual}", "model.n_layers=3")
    small = small_model(*flags)
    weights = small.state_dict()
    target = tiny_model_config(*flags, "model.n_layers=7", "model.d_model=64", "model.n_heads=8")
    options = GrowthOptions(depth_operator="stack", noise_std=0.0)
    grown = grow_state(small.config, target, weights, None, None, probe()[0], options)
    assert grown.plan.layer_sources == [0, 1, 2, 0, 1, 2, 0] and not grown.plan.function_preserving
    report = grown.report
    assert report["function_preserving"] is False and report["depth_operator"] == "stack"
    assert report["loss_change"] == report["loss_after"] - report["loss_before"] != 0
    assert report["max_abs_logit_diff"] > 1e-3  # not exact, and not claimed to be...
    assert report["stacked_max_abs_logit_diff"] <= TOLERANCE * 10  # ...but the widening of the stack is
    assert any("NOT function-preserving" in op for op in report["operators"])
    for index, source in enumerate(grown.plan.layer_sources):  # copies in order: the widened source's tensors
        for part in ("ffn.sublayer.down_proj.weight", "attention.norm.weight", "attention.alpha"):
            assert torch.equal(
                grown.weights[f"layers.{index}.{part}"], grown.weights[f"layers.{source}.{part}"]
            )


# -- 4. symmetry breaking --------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.7, 0.9, 1.5, -0.5])
def test_lemon_splits_are_exact_for_any_alpha(alpha):
    flags = ("model.ffn=gelu",)
    small = small_model(*flags)
    for grow in (
        ("model.d_model=64", "model.n_heads=8", "model.d_ff=96"),
        ("model.d_model=96", "model.n_heads=12", "model.d_ff=60"),
    ):
        target = tiny_model_config(*flags, *grow)
        options = GrowthOptions(split="lemon", split_alpha=alpha)
        grown = widen(small, target, noise_std=0.0, options=options)
        assert max_relative_diff(small, grown.eval()) <= TOLERANCE
    k = 3
    reader = grown.layers[
        0
    ].ffn.sublayer.up_proj.weight  # its stream columns: copy 0 alpha, the others (1-alpha)/2
    source = small.layers[0].ffn.sublayer.up_proj.weight
    up_rows = torch.arange(60) % 48
    expected = torch.cat([source * alpha, *[source * (1 - alpha) / (k - 1)] * (k - 1)], dim=1)[up_rows]
    assert torch.allclose(reader, expected, atol=1e-7)


def test_lemon_breaks_the_symmetry_without_noise():
    """Equal split, no noise: stream copies stay identical; LEMON shares: they drift apart (tests/expand/test_expand.py's
    experiment, with the split as the only symmetry breaker)."""
    small = build_model(tiny_model_config("model.init_std=0.1"))
    target = tiny_model_config("model.d_model=64", "model.n_heads=8", "model.d_ff=96")
    gaps = {}
    for split in ("equal", "lemon"):
        grown = widen(small, target, noise_std=0.0, options=GrowthOptions(split=split, split_alpha=0.7))
        optimizer = torch.optim.AdamW(grown.parameters(), lr=3e-3)
        ids = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(2))
        for _ in range(10):
            lm_loss(grown, ids).backward()
            optimizer.step()
            optimizer.zero_grad()
        weight = grown.embed.weight
        gaps[split] = (weight[:, :32] - weight[:, 32:]).abs().max().item()
    assert gaps["equal"] == 0.0 and gaps["lemon"] > 1e-3, gaps


def test_lemon_shares_sum_to_one_per_group():
    for axis_map in (cyclic_map(5, 13), tiled_map(4, 11)):
        shared = lemon_shares(axis_map, 0.8)
        valid = axis_map.src >= 0
        sums = torch.zeros(5).index_add_(0, axis_map.src[valid], shared.share[valid].float())
        assert torch.allclose(sums[: int(axis_map.src.max()) + 1], torch.ones(int(axis_map.src.max()) + 1))


def test_relative_noise_sums_to_zero_per_group_and_follows_each_weights_scale():
    """noise=relative: eta's std is noise_std x each weight's RMS; per copy group it still sums to 0."""
    old = tiny_model_config("model.ffn=gelu", "model.init_std=0.02")
    small = build_model(old)
    with torch.no_grad():
        small.layers[1].ffn.sublayer.up_proj.weight.mul_(10.0)  # one weight 10x the others' scale
    target = tiny_model_config("model.ffn=gelu", "model.d_model=96", "model.n_heads=12", "model.d_ff=48")
    options = GrowthOptions(noise="relative")
    clean = widen(small, target, noise_std=0.0, options=options).state_dict()
    noisy = widen(small, target, noise_std=0.05, generator=torch.Generator().manual_seed(0), options=options)
    assert max_relative_diff(small, noisy.eval()) <= TOLERANCE
    ratios = []
    for layer in (0, 1):
        name = f"layers.{layer}.ffn.sublayer.up_proj.weight"
        eta = noisy.state_dict()[name] - clean[name]
        groups = eta.view(48, 3, 32).sum(dim=1)  # the stream's three copies of each column
        assert groups.abs().max() <= 1e-6 * eta.abs().max()
        source = small.state_dict()[name]
        ratios.append(eta.std().item() / source.pow(2).mean().sqrt().item())
    assert ratios == pytest.approx(
        [0.05 * math.sqrt(2 / 3)] * 2, rel=0.15
    )  # zero-sum over 3 removes 1/3 of the variance
    absolute = widen(small, target, noise_std=0.05, generator=torch.Generator().manual_seed(0)).state_dict()
    eta = absolute["layers.1.ffn.sublayer.up_proj.weight"] - clean["layers.1.ffn.sublayer.up_proj.weight"]
    assert eta.std().item() == pytest.approx(0.05 * math.sqrt(2 / 3), rel=0.15)  # absolute: no RMS factor


# -- 5. Su's interleaved widening ------------------------------------------------------------------
SU_CASES = [
    (ffn, scale, residual, norm, tie)
    for (ffn, scale), residual, norm, tie in itertools.product(
        (("gelu", "sqrt"), ("swiglu", "logn")), RESIDUALS, NORMS, (False, True)
    )
]


@pytest.mark.parametrize("ffn, scale, residual, norm, tie", SU_CASES)
def test_interleaved_widening_is_exact_where_it_is_offered(ffn, scale, residual, norm, tie):
    flags = (
        f"model.ffn={ffn}",
        f"model.attention_scale={scale}",
        f"model.residual={residual}",
        f"model.norm={norm}",
        f"model.tie_embeddings={'true' if tie else 'false'}",
        "model.position=none",
    )
    small = small_model(*flags)
    options = GrowthOptions(width_operator="interleaved")
    for grow in (
        ("model.d_model=64", "model.head_dim=16", "model.d_ff=96"),
        ("model.d_model=96", "model.head_dim=24", "model.n_layers=3"),
    ):
        target = tiny_model_config(*flags, *grow)
        plan = plan_growth(small.config, target, options)
        k = target.d_model // 32
        assert plan.new.norm_eps == pytest.approx(small.config.norm_eps / k)
        grown = widen(
            small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0), options=options
        )
        assert max_relative_diff(small, grown.eval()) <= TOLERANCE
    # Su's repetition [x1, x1, x1, x2, ...] / sqrt(k) of the embedding (k = 3), not [h; h; h].
    assert torch.allclose(grown.embed.weight, small.embed.weight.repeat_interleave(3, dim=1) / math.sqrt(3))


@pytest.mark.parametrize(
    "flags, grow, message",
    [
        ((), ("model.d_model=64", "model.head_dim=16"), "not exact with model.position=rope"),
        (("model.position=none",), ("model.d_model=64", "model.n_heads=8"), "model.n_heads must stay 4"),
        (
            ("model.position=none", "model.norm=rmsnorm"),
            ("model.d_model=40", "model.head_dim=10"),
            "not an integer multiple",
        ),
        (
            ("model.position=none",),
            ("model.d_model=64", "model.head_dim=16", "model.d_ff=60"),
            "model.d_ff 48 -> 60",
        ),
        (
            ("model.layer=gau", "model.position=none"),
            ("model.d_model=64",),
            "model.layer=gau grows with width_operator=tiled",
        ),
    ],
)
def test_interleaved_widening_is_refused_where_it_is_not_exact(flags, grow, message):
    with pytest.raises(GrowthError) as err:
        plan_growth(
            tiny_model_config(*flags),
            tiny_model_config(*flags, *grow),
            GrowthOptions(width_operator="interleaved"),
        )
    assert message in str(err.value) and "\n" not in str(err.value)
    plan_growth(
        tiny_model_config(*flags),
        tiny_model_config(*flags, "model.n_layers=4"),
        GrowthOptions(width_operator="interleaved"),
    )  # depth alone: nothing to interleave


def test_interleaved_adam_moments_follow_the_gradient_map():
    """Su's map at the copy-symmetric point: a copied stream axis receives share x sqrt(k) = 1/sqrt(k) of its
    source's gradient (an inner axis all of it), and the grown first moment is mapped the same way."""
    old = tiny_model_config("model.init_std=0.1", "model.ffn=gelu", "model.position=none")
    small = build_model(old)
    ids = torch.randint(0, 97, (4, 17))
    hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.0)
    optimizer = torch.optim.AdamW(small.parameters(), **hyper)
    for _ in range(3):
        lm_loss(small, ids).backward()
        optimizer.step()
        optimizer.zero_grad()
    target = tiny_model_config(
        "model.init_std=0.1",
        "model.ffn=gelu",
        "model.position=none",
        "model.d_model=64",
        "model.head_dim=16",
        "model.d_ff=96",
    )
    options = GrowthOptions(width_operator="interleaved")
    plan = plan_growth(old, target, options)
    grown = widen(small, target, options=options)
    names = {id(p): n for n, p in small.named_parameters()}
    moments = grow_optimizer_state(
        {names[id(p)]: s for p, s in optimizer.state.items()}, plan, [n for n, _ in grown.named_parameters()]
    )
    grown_optimizer = torch.optim.AdamW(grown.parameters(), **hyper)
    for name, param in grown.named_parameters():
        grown_optimizer.state[param] = {k: v.clone() for k, v in moments[name].items()}
    lm_loss(grown, ids).backward()
    gradients = {n: p.grad.clone() for n, p in grown.named_parameters()}
    # The first-moment map is the gradient map: m' equals the grown gradient's EMA direction, so the fresh
    # gradient of a copied element is the mapped gradient of its source.
    lm_loss(small, ids).backward()
    source_grad = small.layers[0].ffn.sublayer.down_proj.weight.grad
    grown_grad = gradients["layers.0.ffn.sublayer.down_proj.weight"]
    expected = source_grad.repeat_interleave(2, 0).repeat_interleave(2, 1) / math.sqrt(2)
    assert torch.allclose(grown_grad, expected, atol=1e-6)
    m = moments["layers.0.ffn.sublayer.down_proj.weight"]["exp_avg"]
    source_m = optimizer.state[small.layers[0].ffn.sublayer.down_proj.weight]["exp_avg"]
    assert torch.allclose(
        m, source_m.repeat_interleave(2, 0).repeat_interleave(2, 1) / math.sqrt(2), atol=1e-7
    )


# -- 6/7. one set of options for tools/expand.py and train.growth -----------------------------------
@pytest.mark.parametrize(
    "stage, message",
    [
        (
            "{at_step: 10, model: {n_layers: 8}, depth_operator: copy}",
            r"train.growth\[0\].depth_operator must be one of",
        ),
        ("{at_step: 10, model: {n_layers: 8}, ramp_steps: 0}", r"train.growth\[0\].ramp_steps must be >= 1"),
        (
            "{at_step: 10, model: {d_model: 256, n_heads: 8}, split: unequal}",
            r"train.growth\[0\].split must be one of",
        ),
        (
            "{at_step: 10, model: {d_model: 256, n_heads: 8}, noise: scaled}",
            r"train.growth\[0\].noise must be one of",
        ),
        (
            "{at_step: 10, model: {d_model: 256, n_heads: 8}, width_operator: su}",
            r"train.growth\[0\].width_operator",
        ),
    ],
)
def test_bad_operator_choices_are_refused_at_config_time(stage, message):
    from growth.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"train.growth=[{stage}]"])


def test_stages_pick_operators_and_a_stage_inside_a_ramp_is_refused():
    from growth.config import ConfigError
    from growth.train.growth_schedule import needs_depth_ramp, stage_models, stage_plans

    base = ["model.residual=deepnorm", "train.max_steps=400"]
    config = load_config(
        overrides=[
            *base,
            "train.growth=[{at_step: 100, model: {n_layers: 8}, ramp_steps: 50}, "
            "{at_step: 150, model: {d_model: 256, n_heads: 8}, split: lemon}]",
        ]
    )
    plans = stage_plans(config)
    assert plans[0].depth_operator == "ramp" and plans[0].ramp_layers == [1, 3, 5, 7]
    assert plans[1].options.split == "lemon" and needs_depth_ramp(config)
    assert [m.n_layers for m in stage_models(config)] == [4, 8, 8]
    with pytest.raises(
        ConfigError, match=r"train.growth\[1\].at_step=120 falls inside the ramp of train.growth\[0\]"
    ):
        stage_plans(
            load_config(
                overrides=[
                    *base,
                    "train.growth=[{at_step: 100, model: {n_layers: 8}, ramp_steps: 50}, "
                    "{at_step: 120, model: {n_layers: 16}}]",
                ]
            )
        )
    with pytest.raises(
        ConfigError, match=r"train.growth\[0\].model: depth_operator=zero is not function-preserving"
    ):
        stage_plans(
            load_config(
                overrides=[*base, "train.growth=[{at_step: 100, model: {n_layers: 8}, depth_operator: zero}]"]
            )
        )
    assert not needs_depth_ramp(
        load_config(overrides=["train.growth=[{at_step: 100, model: {n_layers: 8}}]"])
    )


def write_checkpoint(
    folder: Path, model, run_state: ckpt.RunState | None = None, moments: bool = True
) -> None:
    """A bare checkpoint folder as the trainer's consolidated files (weights, config, run state, moments)."""
    folder.mkdir(parents=True)
    ckpt.save_safetensors_streaming(model.state_dict(), folder / ckpt.WEIGHTS)
    config = Config()
    config.model = model.config
    config.data.seq_len = 32
    config.save(folder / ckpt.CONFIG)
    if run_state is not None:
        (folder / ckpt.RUN_STATE).write_text(run_state.to_json())
    if moments:
        from growth.checkpoint.moments import GROWN_MOMENTS

        torch.save(
            {
                n: {
                    "exp_avg": torch.full_like(p, 1e-3),
                    "exp_avg_sq": torch.full_like(p, 1e-6),
                    "step": torch.tensor(5.0),
                }
                for n, p in model.named_parameters()
            },
            folder / GROWN_MOMENTS,
        )


def target_yaml(path: Path, model_config, **changes) -> Path:
    path.write_text(
        yaml.safe_dump({"model": {**dataclasses.asdict(model_config), **changes}, "data": {"seq_len": 32}})
    )
    return path


@pytest.mark.parametrize(
    "operators, changes, exact",
    [
        ({}, {"n_layers": 4}, True),  # DeepNorm: auto = ramp
        ({"depth_operator": "stack"}, {"n_layers": 4}, False),
        (
            {"split": "lemon", "split_alpha": 0.3, "noise": "relative"},
            {"d_model": 64, "n_heads": 8, "d_ff": 96},
            True,
        ),
        ({}, {"d_model": 64, "head_dim": 16}, True),
    ],
)
def test_expand_checkpoint_with_each_operator(tmp_path, operators, changes, exact):
    """tools/expand.py's function on a checkpoint folder: the report, the growth event and the ramp state the
    continued run adopts."""
    small = small_model("model.residual=deepnorm", "model.position=rope")
    source = tmp_path / "small"
    write_checkpoint(source, small, ckpt.RunState(step=12, tokens_seen=999))
    report = expand_checkpoint(
        source,
        target_yaml(tmp_path / "big.yaml", small.config, **changes),
        tmp_path / "out",
        noise_std=1e-3,
        seed=1,
        **operators,
    )
    assert report["function_preserving"] is exact and report["probe"]["source"] == "random"
    if exact:
        assert (
            report["relative_logit_diff"] <= TOLERANCE
            and abs(report["loss_after"] - report["loss_before"]) <= 1e-4
        )
    else:
        assert report["loss_change"] != 0 and report["stacked_max_abs_logit_diff"] <= TOLERANCE * max(
            1, report["logit_scale"]
        )
    state = json.loads((tmp_path / "out" / ckpt.RUN_STATE).read_text())
    event = state["growth_events"][-1]
    assert event["function_preserving"] is exact and event["loss_after"] == report["loss_after"]
    ramped = report.get("ramp_layers")
    assert state["callbacks"] == (
        {RAMP_STATE: {"ramps": [{"layers": ramped, "steps": 100, "start": 12}]}} if ramped else {}
    )
    grown = load_config(tmp_path / "out" / ckpt.CONFIG).model
    assert all(getattr(grown, k) == v for k, v in changes.items())


def test_expand_refuses_a_source_saved_mid_ramp(tmp_path):
    small = small_model("model.residual=post")
    state = ckpt.RunState(
        step=30, callbacks={RAMP_STATE: {"ramps": [{"layers": [1], "steps": 20, "start": 25}]}}
    )
    write_checkpoint(tmp_path / "small", small, state)
    with pytest.raises(GrowthError, match="15 more optimizer steps to go"):
        expand_checkpoint(
            tmp_path / "small", target_yaml(tmp_path / "t.yaml", small.config, n_layers=4), tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()
