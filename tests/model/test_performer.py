"""Performer (FAVOR+) attention: the peer's numbers, causal prefix sums, unbiasedness, growth, redraw."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from growth.config import ConfigError, load_config
from growth.expand import widen
from growth.model import build_model
from growth.model.attention import MultiHeadAttention
from growth.model.mask import visibility
from growth.model.performer import (
    PerformerAttention,
    causal_linear_attention,
    default_features,
    favor_attention,
    orthogonal_gaussian,
    positive_features,
)
from growth.train.callbacks.feature_redraw import redraw_seed
from tests.conftest import tiny_model_config

PERFORMER = ("model.attention=performer",)


def qkv(batch=2, heads=3, length=37, dim=16, seed=0, std=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=generator) * std for _ in range(3)]


def test_matches_performer_pytorch_with_the_same_projection():
    """Bidirectional FAVOR+ with the peer's own random matrix: the same numbers (fp32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from performer_pytorch.performer_pytorch import FastAttention
    q, k, v = qkv()
    peer = FastAttention(dim_heads=16, nb_features=40, causal=False)
    ours = favor_attention(q, k, v, peer.projection_matrix, causal=False)
    reference = peer(q, k, v)
    assert (ours - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


def test_orthogonal_gaussian_blocks_are_orthogonal_with_chi_norms():
    w = orthogonal_gaussian(40, 16, torch.Generator().manual_seed(0))
    for start in (0, 16):  # two full blocks (and a partial one of 8 rows)
        block = w[start : start + 16]
        directions = block / block.norm(dim=1, keepdim=True)
        assert torch.allclose(directions @ directions.T, torch.eye(16), atol=1e-5)
    # norms of N(0, I_16) vectors: mean sqrt(2) Gamma(8.5) / Gamma(8) ~ 3.94
    many = orthogonal_gaussian(16 * 400, 16, torch.Generator().manual_seed(1)).norm(dim=1)
    chi_mean = math.sqrt(2) * math.exp(math.lgamma(8.5) - math.lgamma(8))
    assert abs(many.mean().item() - chi_mean) < 0.03


def test_causal_prefix_sums_equal_the_masked_quadratic_form():
    """On the same features, chunked prefix sums == (phi(q) phi(k)^T * tril) v / row sums, to fp32 rounding;
    lengths that are and are not multiples of the chunk."""
    for length in (37, 64, 130):
        q, k, v = qkv(length=length)
        w = orthogonal_gaussian(24, 16, torch.Generator().manual_seed(2))
        qf, kf = positive_features(q, w, True, True, None), positive_features(k, w, False, True, None)
        weights = (qf @ kf.transpose(-1, -2)).tril()
        reference = (weights @ v) / weights.sum(-1, keepdim=True)
        out, _ = causal_linear_attention(qf, kf, v, chunk=16)
        assert (out - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


def test_causal_output_never_reads_a_later_token():
    q, k, v = qkv(length=50, std=2.0)
    w = orthogonal_gaussian(32, 16, torch.Generator().manual_seed(3))
    before = favor_attention(q, k, v, w, causal=True)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[:, :, 30:] = torch.randn_like(t[:, :, 30:]) * 10  # large later keys: a global max would move
    after = favor_attention(q2, k2, v2, w, causal=True)
    assert torch.equal(before[:, :, :30], after[:, :, :30])


def test_the_causal_features_estimate_the_softmax_kernel_without_bias():
    """E_W[phi(q).phi(k)] = exp(q.k / sqrt(d)) (Lemma 1): the causal features carry no eps and their shifts
    cancel, so averaging 200 draws of W (m = 1024; each draw ~5% off) lands within 2% of the exact kernel
    (the QR of the blocks without the sign fix of R's diagonal was ~6% low here: a bias, not noise)."""
    d = 8
    q, k = torch.randn(2, d, generator=torch.Generator().manual_seed(4)) * 0.7
    estimates = []
    for draw in range(200):
        w = orthogonal_gaussian(1024, d, torch.Generator().manual_seed(100 + draw)).double()
        qf = positive_features(q.double().view(1, 1, 1, d), w, True, True, None)
        kf = positive_features(k.double().view(1, 1, 1, d), w, False, True, None)
        # undo the query row's stabiliser, which a ratio cancels but a single product does not
        logits = q.double() * d**-0.25 @ w.T - (q.double() * d**-0.25).pow(2).sum() / 2
        shift = (logits + w.pow(2).sum(-1) / 2 - d / 2).max()
        estimates.append((qf * kf).sum().item() * math.exp(shift.item()))
    exact = math.exp((q @ k).item() / math.sqrt(d))
    assert abs(sum(estimates) / len(estimates) / exact - 1) < 0.02


@pytest.mark.parametrize("causal", [False, True])
def test_error_against_softmax_falls_with_the_number_of_features(causal):
    q, k, v = qkv(batch=1, heads=4, length=64, dim=16, std=0.5)
    mask = torch.ones(64, 64, dtype=torch.bool).tril() if causal else None
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    errors = {}
    for m in (16, 256):
        trials = [
            (
                favor_attention(q, k, v, orthogonal_gaussian(m, 16, torch.Generator().manual_seed(s)), causal)
                - exact
            )
            .pow(2)
            .mean()
            .sqrt()
            .item()
            for s in range(5)
        ]
        errors[m] = sum(trials) / len(trials)
    # ~ m^(-1/2): 16x the features, about a quarter of the error; ask for at least a halving
    assert errors[256] < 0.5 * errors[16], errors


@pytest.mark.parametrize(
    "flags", [(), ("model.attention_scale=logn", "model.logn_base=8"), ("model.rope_dim=4",)], ids=str
)
@pytest.mark.parametrize("causal", [True, False])
def test_the_layer_converges_to_softmax_attention_with_rope_and_logn(flags, causal):
    """RoPE and log-n act on q, k before the features, so the layer estimates the rotated, scaled softmax
    layer with the same weights (padding included): 64x the features cut its error by > 3x (~8x expected)."""
    x = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 20)
    mask[1, 15:] = 0
    real = mask.bool()
    errors = {}
    for m in (64, 4096):
        config = tiny_model_config(*PERFORMER, f"model.performer_features={m}", *flags)
        exact, performer = MultiHeadAttention(config), PerformerAttention(config)
        generator = torch.Generator().manual_seed(7)  # the same weights for both m, O(1) logits
        for linear in (exact.q_proj, exact.k_proj, exact.v_proj, exact.o_proj):
            linear.weight.data = torch.randn(linear.weight.shape, generator=generator) * 0.1
        performer.load_state_dict({**exact.state_dict(), "projection": performer.projection})
        vis = visibility(mask, 20, causal, x.device)
        trials = []
        for draw in range(4):
            performer.redraw_features(torch.Generator().manual_seed(draw))
            with torch.no_grad():
                reference, approx = exact(x, vis), performer(x, vis)
            error = (approx - reference)[real].pow(2).mean() / reference[real].pow(2).mean()
            trials.append(error.sqrt().item())
        errors[m] = sum(trials) / len(trials)
    assert errors[4096] < errors[64] / 3, errors


def test_default_features_and_flops_are_flat_in_the_sequence_length():
    config = tiny_model_config(*PERFORMER)
    assert PerformerAttention(config).projection.shape == (default_features(8), 8) == (16, 8)
    model = build_model(config)
    per_layer = model.flops_per_token(64) - model.flops_per_token(32)
    assert per_layer == 0.0
    assert build_model(tiny_model_config()).flops_per_token(64) > build_model(
        tiny_model_config()
    ).flops_per_token(32)


GROWTHS = {
    "2x": ("model.d_model=64", "model.n_heads=8", "model.d_ff=96"),
    "non-multiple": ("model.d_model=40", "model.n_heads=5", "model.d_ff=60"),
    "depth-and-width": ("model.n_layers=4", "model.d_model=64", "model.n_heads=8"),
}


@pytest.mark.parametrize("objective", ["clm", "mlm"])
@pytest.mark.parametrize("residual", ["pre", "deepnorm"])
@pytest.mark.parametrize("shape", list(GROWTHS))
def test_growth_preserves_the_function(shape, residual, objective):
    flags = (*PERFORMER, f"model.residual={residual}", f"model.objective={objective}", "model.norm=rmsnorm")
    small = build_model(tiny_model_config(*flags, "model.init_std=0.1")).eval()
    target = tiny_model_config(*flags, *GROWTHS[shape])
    grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0)).eval()
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 19)
    mask[1, 13:] = 0
    with torch.no_grad():
        reference, logits = small(ids, mask), grown(ids, mask)
    assert (logits - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())
    for index, source in enumerate(small.layers):  # old layers keep their random features
        kept = grown.layers[index * grown.config.n_layers // small.config.n_layers]
        assert torch.equal(kept.attention.sublayer.projection, source.attention.sublayer.projection)


def test_head_size_growth_is_refused():
    from growth.expand import GrowthError, plan_growth

    with pytest.raises(GrowthError, match="model.head_dim 8 -> 16: model.attention=performer"):
        plan_growth(
            tiny_model_config(*PERFORMER),
            tiny_model_config(*PERFORMER, "model.d_model=64", "model.head_dim=16"),
        )


def test_redraw_is_seeded_by_the_step():
    model = build_model(tiny_model_config(*PERFORMER))
    attention = model.layers[0].attention.sublayer
    before = attention.projection.clone()
    attention.redraw_features(torch.Generator().manual_seed(redraw_seed(1234, 10, 0)))
    first = attention.projection.clone()
    attention.redraw_features(torch.Generator().manual_seed(redraw_seed(1234, 10, 0)))
    assert not torch.equal(first, before) and torch.equal(first, attention.projection)
    assert "layers.0.attention.sublayer.projection" in model.state_dict()  # saved with the checkpoint


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.performer_features=-3", "model.performer_features must be > 0"),
        ("model.performer_redraw_interval=-1", "model.performer_redraw_interval must be >= 0"),
        ("model.attention=favor", "model.attention must be one of softmax | performer"),
    ],
)
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=["model.attention=performer", override])


def test_a_bad_setting_is_one_error_line_and_exit_code_2(tmp_path):
    root = Path(__file__).resolve().parents[2]
    overrides = ["model.attention=performer", "model.performer_features=0", "model.head_dim=1"]
    overrides += ["model.n_heads=128", "model.d_model=128", f"train.out_dir={tmp_path / 'run'}"]
    result = subprocess.run(
        [sys.executable, str(root / "launch/pretrain.py"), *overrides],
        cwd=root,
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith(
        "error: model.performer_features: the default floor(head_dim ln head_dim) is 0"
    )
    assert not (tmp_path / "run").exists()
