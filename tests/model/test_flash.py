"""FLASH mixed-chunk attention: exclusive cumsum, slow dense reference, chunk padding, single-chunk layer."""

import math

import pytest
import torch
import torch.nn.functional as F

from growth.model.flash import exclusive_cumsum, mixed_chunk_attention
from growth.model.gau import GatedAttentionUnit
from growth.model.mask import visibility
from tests.conftest import tiny_model_config

S, E, C = 8, 6, 4  # key size s, value size e, chunk size c
LOGN_BASE, MIN_KEYS = 4, 2
KERNEL_SCALES = [("relu2", "sqrt"), ("softmax", "sqrt"), ("softmax", "logn")]


@pytest.mark.parametrize(
    "shape,dim", [((5,), 0), ((1, 3), 0), ((3, 4), 0), ((3, 4), 1), ((2, 6, 3, 2), 1), ((2, 3, 5), -1)]
)
def test_exclusive_cumsum_matches_loop(shape, dim):
    x = torch.randn(shape, dtype=torch.float64)
    y = exclusive_cumsum(x, dim)
    moved = x.movedim(dim, 0)
    expected = torch.stack([moved[:g].sum(0) for g in range(moved.shape[0])]).movedim(
        0, dim
    )  # y_g = sum_{h<g} x_h
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)


def random_qkv(batch, length):
    """q_quad, k_quad, q_lin, k_lin (B, T, s) and v (B, T, e)."""
    return [torch.randn(batch, length, S) for _ in range(4)] + [torch.randn(batch, length, E)]


def attend(qkv, mask, causal, kernel, scale, chunk=C):
    vis = visibility(mask, qkv[0].shape[1], causal, qkv[0].device)
    return mixed_chunk_attention(*qkv, vis, chunk, kernel, scale, LOGN_BASE, MIN_KEYS)


def reference_mixed_chunk(qkv, mask, causal, kernel, scale, chunk=C):
    """Slow float64 reference: per query i in chunk g, in-chunk quadratic part over visible real keys
    plus q_lin_i . (1/c) sum over real j in chunks H(g) of k_lin_j^T v_j."""
    q_quad, k_quad, q_lin, k_lin, v = (t.double() for t in qkv)
    batch, length, s = q_quad.shape
    real = torch.ones(batch, length, dtype=torch.bool) if mask is None else mask.bool()
    out = torch.zeros(batch, length, v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for i in range(length):
            g = i // chunk
            local = [
                j
                for j in range(g * chunk, min((g + 1) * chunk, length))
                if real[b, j] and (j <= i or not causal)
            ]
            if not real[b, i]:
                continue  # padded rows are not compared
            logits = torch.stack([q_quad[b, i] @ k_quad[b, j] / math.sqrt(s) for j in local])
            if kernel == "relu2":
                weights = F.relu(logits) ** 2 / chunk
            else:
                lam = math.log(max(len(local), MIN_KEYS)) / math.log(LOGN_BASE) if scale == "logn" else 1.0
                weights = torch.softmax(lam * logits, dim=0)
            quad = sum(w * v[b, j] for w, j in zip(weights, local))
            context_chunks = range(g) if causal else range(math.ceil(length / chunk))  # H(g)
            context = torch.zeros(s, v.shape[-1], dtype=torch.float64)
            for h in context_chunks:
                for j in range(h * chunk, min((h + 1) * chunk, length)):
                    if real[b, j]:
                        context += torch.outer(k_lin[b, j], v[b, j]) / chunk
            out[b, i] = quad + q_lin[b, i] @ context
    return out


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("length", [8, 11])  # a multiple of c, and one that leaves a part-filled last chunk
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "pad"])
def test_matches_slow_dense_reference(kernel, scale, causal, length, padded):
    qkv = random_qkv(2, length)
    mask = None
    if padded:  # row 1: a leading pad, a fully padded chunk (4..7) and trailing pads
        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, 0] = mask[1, 4:8] = mask[1, -2:] = 0
    out = attend(qkv, mask, causal, kernel, scale)
    expected = reference_mixed_chunk(qkv, mask, causal, kernel, scale)
    real = torch.ones(2, length, dtype=torch.bool) if mask is None else mask.bool()
    assert out.shape == (2, length, E)
    assert expected[real].abs().mean() > 0.1  # O(1) outputs, so atol 1e-5 means something
    torch.testing.assert_close(out[real].double(), expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize(
    "extra", [1, 2, 3, 7]
)  # T = 6, c = 4: fill chunk 1, cross into chunk 2, two more chunks
def test_appended_padding_leaves_real_tokens_unchanged(kernel, scale, causal, extra):
    length = 6
    qkv = random_qkv(2, length + extra)
    mask = torch.ones(2, length + extra, dtype=torch.long)
    mask[:, length:] = 0
    padded = attend(qkv, mask, causal, kernel, scale)[:, :length]
    alone = attend([t[:, :length] for t in qkv], None, causal, kernel, scale)  # implicit zero padding only
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def make_flash_gau(kernel, chunk, position):
    config = tiny_model_config(
        "model.layer=gau",
        f"model.gau_attention={kernel}",
        f"model.chunk_size={chunk}",
        f"model.position={position}",
    )
    gau = GatedAttentionUnit(config)
    with torch.no_grad():  # unit-scale activations and arbitrary scale/offsets for all four heads
        for linear in (gau.u_proj, gau.v_proj, gau.z_proj, gau.o_proj):
            linear.weight.normal_(std=linear.in_features**-0.5)
        gau.gamma.normal_(std=1.5)
        gau.beta.normal_(std=0.5)
    return gau


def dense_twin(flash: GatedAttentionUnit, kernel, position) -> GatedAttentionUnit:
    """A dense GAU with the same projections and the quad heads' (gamma, beta) as its (q, k)."""
    config = tiny_model_config(
        "model.layer=gau", f"model.gau_attention={kernel}", f"model.position={position}"
    )
    dense = GatedAttentionUnit(config)
    state = flash.state_dict()
    state["gamma"], state["beta"] = state["gamma"][:2], state["beta"][:2]
    dense.load_state_dict(state)
    return dense


@pytest.mark.parametrize("position", ["rope", "none"])
@pytest.mark.parametrize("chunk", [10, 16])  # c == T and c > T (the single chunk is zero-padded)
def test_single_chunk_causal_relu2_layer_is_dense_relu2_over_c(position, chunk):
    """One causal chunk: the exclusive cumsum of one chunk is zero, so the lin heads contribute nothing,
    and quad_i = sum_{j<=i} relu(q_i.k_j/sqrt(s))^2 / c = (n_i / c) * (dense relu2 row, normalised by
    n_i = i + 1). W_o is linear and U scales rows elementwise, so out_i = (i + 1) / c * dense_out_i."""
    length = 10
    flash = make_flash_gau("relu2", chunk, position)
    dense = dense_twin(flash, "relu2", position)
    x = torch.randn(2, length, flash.u_proj.in_features)
    vis = visibility(None, length, True, x.device)
    out = flash(x, vis)
    expected = dense(x, vis) * (torch.arange(1, length + 1) / chunk)[None, :, None]
    assert expected.abs().mean() > 1e-4  # not vanishing (typically ~0.05; relu2 is sparse)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the lin heads' scale/offsets are irrelevant to a single causal chunk
        flash.gamma[2:].normal_(std=5.0)
        flash.beta[2:].normal_(std=5.0)
    torch.testing.assert_close(flash(x, vis), out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("position", ["rope", "none"])
def test_single_chunk_bidirectional_relu2_layer(position):
    """One bidirectional chunk: quad = (T / c) * dense relu2 (which normalises by n_i = T), and the lin
    part sums the whole chunk: out = (T / c) dense_out + W_o(U * Q_lin (1/c) sum_j K_lin_j^T V_j)."""
    length, chunk = 10, 16
    flash = make_flash_gau("relu2", chunk, position)
    dense = dense_twin(flash, "relu2", position)
    x = torch.randn(2, length, flash.u_proj.in_features)
    vis = visibility(None, length, False, x.device)
    u, v, z = (F.silu(p(x)) for p in (flash.u_proj, flash.v_proj, flash.z_proj))
    heads = z.unsqueeze(1) * flash.gamma[:, None] + flash.beta[:, None]
    if flash.rope is not None:
        heads = flash.rope(heads)
    q_lin, k_lin = heads[:, 2], heads[:, 3]
    linear = q_lin @ (k_lin.transpose(1, 2) @ v) / chunk
    expected = dense(x, vis) * length / chunk + flash.o_proj(u * linear)
    torch.testing.assert_close(flash(x, vis), expected, atol=1e-5, rtol=1e-5)


def test_single_causal_chunk_softmax_layer_is_dense_softmax():
    """softmax normalises over keys, not by c, so a single causal chunk equals the dense softmax GAU."""
    length = 10
    flash = make_flash_gau("softmax", 16, "rope")
    dense = dense_twin(flash, "softmax", "rope")
    x = torch.randn(2, length, flash.u_proj.in_features)
    vis = visibility(None, length, True, x.device)
    torch.testing.assert_close(flash(x, vis), dense(x, vis), atol=1e-5, rtol=1e-5)
