"""Nystromformer attention: the peer's numbers, exactness at m = T, the pseudo-inverse, growth, refusals."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from growth.config import ConfigError, load_config
from growth.expand import widen
from growth.model import build_model
from growth.model.mask import visibility
from growth.model.nystrom import NystromAttention, newton_schulz_pinv, nystrom_attention
from tests.conftest import tiny_model_config

NYSTROM = ("model.attention=nystrom", "model.objective=mlm", "model.nystrom_landmarks=4")


def qkv(batch=2, heads=3, length=24, dim=8, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=generator, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("length, padded", [(40, False), (37, True)])
def test_matches_nystrom_attention_with_shared_weights(length, padded):
    """lucidrains' module (residual off) with its own projections: the same output on real tokens, with a
    padding mask and a length that is not a multiple of the landmarks (left padding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nystrom_attention import NystromAttention as Peer
    torch.manual_seed(0)
    peer = Peer(dim=32, dim_head=16, heads=1, num_landmarks=8, residual=False)
    x = torch.randn(1, length, 32)
    mask = torch.ones(1, length, dtype=torch.bool)
    if padded:
        mask[0, 30:] = False
    reference = peer(x, mask=mask if padded else None)
    q, k, v = (t.view(1, length, 1, 16).transpose(1, 2) for t in peer.to_qkv(x).chunk(3, -1))
    out, _ = nystrom_attention(q, k, v, 8, mask if padded else None)
    ours = peer.to_out(out[:, :, -length:].transpose(1, 2).flatten(2))
    real = mask[0]
    assert (ours - reference)[:, real].abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


def test_one_landmark_per_token_is_exact_softmax_attention():
    """m = T: every segment is one token, Eq. 15 is softmax(QK^T) pinv(softmax(QK^T)) softmax(QK^T) V, exact
    once the pseudo-inverse has converged (20 iterations here; fp64)."""
    q, k, v = qkv(dtype=torch.float64)
    exact = F.scaled_dot_product_attention(q, k, v)
    out, _ = nystrom_attention(q, k, v, 24, iterations=20)
    assert (out - exact).abs().max().item() <= 1e-10


def test_newton_schulz_converges_to_the_pseudo_inverse():
    a = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64).softmax(-1)
    reference = torch.linalg.pinv(a)
    error = lambda iterations: (newton_schulz_pinv(a, iterations) - reference).abs().max().item()  # noqa: E731
    assert error(40) <= 1e-8 * reference.abs().max().item()
    assert error(6) > error(12) > error(40)  # six iterations (the paper's) are an approximation


def test_error_against_softmax_shrinks_as_landmarks_grow():
    q, k, v = qkv()
    q, k = q * 0.5, k * 0.5  # attention about as peaked as a trained layer's, not one-hot
    exact = F.scaled_dot_product_attention(q, k, v)
    error = [
        ((nystrom_attention(q, k, v, m)[0] - exact).pow(2).mean() / exact.pow(2).mean()).sqrt().item()
        for m in (2, 4, 8, 24)
    ]
    assert error == sorted(error, reverse=True) and error[-1] < 0.05, error


def test_no_sample_changes_another_and_padding_is_inert():
    """The pseudo-inverse's scale is taken per matrix (the reference takes it over the batch), and padded
    tokens count in no landmark and no key: changing them changes no real token's output."""
    config = tiny_model_config(*NYSTROM, "model.nystrom_conv_kernel=3")
    layer = NystromAttention(config).eval()
    x = torch.randn(3, 13, config.d_model, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 13)
    mask[2, 9:] = 0
    noisy = x.clone()
    noisy[2, 9:] = torch.randn(4, config.d_model) * 100
    with torch.no_grad():
        batch = layer(x, visibility(mask, 13, False, x.device))
        alone = layer(x[:1], visibility(mask[:1], 13, False, x.device))
        renoised = layer(noisy, visibility(mask, 13, False, x.device))
    assert (batch[:1] - alone).abs().max().item() <= 1e-6
    assert (batch[2, :9] - renoised[2, :9]).abs().max().item() <= 1e-6


def test_flops_grow_linearly_with_the_sequence():
    config = tiny_model_config(*NYSTROM, "model.max_seq_len=4096")
    model = build_model(config)
    attention = lambda t: model.flops_per_token(t) - 6 * model.num_params()  # noqa: E731
    assert attention(4096) == pytest.approx(attention(2048), rel=0.01)  # flat per token beyond m


GROWTHS = {
    "2x": ("model.d_model=64", "model.n_heads=8", "model.d_ff=96"),
    "non-multiple": ("model.d_model=40", "model.n_heads=5", "model.d_ff=60"),
    "depth-and-width": ("model.n_layers=4", "model.d_model=64", "model.n_heads=8"),
}


@pytest.mark.parametrize("conv", [0, 5])
@pytest.mark.parametrize("residual", ["pre", "deepnorm"])
@pytest.mark.parametrize("shape", list(GROWTHS))
def test_growth_preserves_the_function(shape, residual, conv):
    flags = (
        *NYSTROM,
        f"model.residual={residual}",
        "model.norm=rmsnorm",
        f"model.nystrom_conv_kernel={conv}",
    )
    small = build_model(tiny_model_config(*flags, "model.init_std=0.1")).eval()
    target = tiny_model_config(*flags, *GROWTHS[shape])
    grown = widen(small, target, noise_std=0.02, generator=torch.Generator().manual_seed(0)).eval()
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 19)
    mask[1, 13:] = 0
    with torch.no_grad():
        reference, logits = small(ids, mask), grown(ids, mask)
    assert (logits - reference).abs().max().item() <= 1e-5 * max(1.0, reference.abs().max().item())


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.nystrom_landmarks=0",
            r"model.nystrom_landmarks must be in \[1, model.max_seq_len=64\], got 0",
        ),
        (
            "model.nystrom_landmarks=65",
            r"model.nystrom_landmarks must be in \[1, model.max_seq_len=64\], got 65",
        ),
        ("model.nystrom_conv_kernel=4", "model.nystrom_conv_kernel must be odd"),
        ("model.objective=clm", "model.attention=nystrom is not causal"),
    ],
)
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_model_config(*NYSTROM, override)


def test_causal_objective_is_one_error_line_and_exit_code_2(tmp_path):
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            str(root / "launch/pretrain.py"),
            "model.attention=nystrom",
            f"train.out_dir={tmp_path / 'r'}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert (
        errors[0].startswith("error: model.attention=nystrom is not causal")
        and "model.objective=mlm" in errors[0]
    )
    assert not (tmp_path / "r").exists()


def test_the_contrastive_encoder_takes_it():
    config = load_config(overrides=[*NYSTROM, "contrastive.objective=simcse", "contrastive.format=text"])
    model = build_model(config.model)
    ids = torch.randint(0, config.model.vocab_size, (2, 9))
    assert model.sentence_embedding(ids, torch.ones(2, 9)).shape == (2, config.model.d_model)
