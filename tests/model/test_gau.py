"""GAU layer: equals the paper's equations written out slowly; no causal leakage; padding is inert."""

import math

import pytest
import torch
import torch.nn.functional as F

from growth.model.gau import GatedAttentionUnit
from growth.model.mask import visibility
from tests.conftest import tiny_model_config

LOGN_BASE, MIN_KEYS = 4, 3  # small base / a clamp that bites at T = 7, so lambda_i varies and clamps

# (kernel, attention_scale); relu2 + logn is refused by config validation.
KERNEL_SCALES = [("relu2", "sqrt"), ("softmax", "sqrt"), ("softmax", "logn")]


def make_gau(kernel="softmax", scale="sqrt", position="rope", chunk=0) -> GatedAttentionUnit:
    config = tiny_model_config(
        "model.layer=gau",
        f"model.gau_attention={kernel}",
        f"model.attention_scale={scale}",
        f"model.position={position}",
        f"model.chunk_size={chunk}",
        f"model.logn_base={LOGN_BASE}",
        f"model.logn_min_keys={MIN_KEYS}",
    )
    gau = GatedAttentionUnit(config)
    with torch.no_grad():  # unit-scale activations (init has gamma ~ 0.02, beta = 0), so logits matter,
        for linear in (gau.u_proj, gau.v_proj, gau.z_proj, gau.o_proj):  # outputs are O(0.1) and
            linear.weight.normal_(std=linear.in_features**-0.5)  # the offset (beta) path runs
        gau.gamma.normal_(std=1.5)
        gau.beta.normal_(std=0.5)
    return gau


def run(gau, x, mask, causal):
    return gau(x, visibility(mask, x.shape[1], causal, x.device))


def reference_rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Half-split RoPE: pair (i, i + s/2) at position m rotated by m * base^(-2i/s)."""
    y, half = x.clone(), x.shape[-1] // 2
    for m in range(x.shape[1]):
        for i in range(half):
            angle = m * base ** (-2 * i / x.shape[-1])
            a, b = x[:, m, i], x[:, m, i + half]
            y[:, m, i] = a * math.cos(angle) - b * math.sin(angle)
            y[:, m, i + half] = b * math.cos(angle) + a * math.sin(angle)
    return y


def reference_gau(gau, x, mask, causal, kernel, scale, position):
    """The GAU equations in float64 with explicit loops over query rows i and keys j."""
    x = x.double()
    weight = lambda linear: linear.weight.double().T  # noqa: E731
    u, v, z = (F.silu(x @ weight(p)) for p in (gau.u_proj, gau.v_proj, gau.z_proj))
    gamma, beta = gau.gamma.double(), gau.beta.double()
    q, k = gamma[0] * z + beta[0], gamma[1] * z + beta[1]
    if position == "rope":
        q, k = reference_rope(q), reference_rope(k)
    batch, length, s = q.shape
    real = torch.ones(batch, length, dtype=torch.bool) if mask is None else mask.bool()
    attended = torch.zeros_like(v)
    for b in range(batch):
        for i in range(length):
            keys = [j for j in range(length) if real[b, j] and (j <= i or not causal)]
            if not real[b, i]:
                continue  # padded rows are not compared
            n = len(keys)
            logits = torch.stack([q[b, i] @ k[b, j] / math.sqrt(s) for j in keys])
            if kernel == "relu2":
                weights = F.relu(logits) ** 2 / n
            else:
                lam = math.log(max(n, MIN_KEYS)) / math.log(LOGN_BASE) if scale == "logn" else 1.0
                weights = torch.softmax(lam * logits, dim=0)
            attended[b, i] = sum(w * v[b, j] for w, j in zip(weights, keys))
    return (u * attended) @ weight(gau.o_proj)


# Row 0 unpadded; row 1 has leading, inner and trailing padding.
PAD_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1, 0]])


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("position", ["rope", "none"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "pad"])
def test_matches_slow_reference(kernel, scale, causal, position, padded):
    gau = make_gau(kernel, scale, position)
    x = torch.randn(2, 7, gau.u_proj.in_features)
    mask = PAD_MASK if padded else None
    out = run(gau, x, mask, causal)
    expected = reference_gau(gau, x, mask, causal, kernel, scale, position)
    real = torch.ones(2, 7, dtype=torch.bool) if mask is None else mask.bool()
    assert expected[real].abs().mean() > 2e-3  # not vanishing (typically ~0.1), so atol 1e-5 bites
    torch.testing.assert_close(out[real].double(), expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("chunk", [0, 4], ids=["dense", "flash"])
def test_no_causal_leakage(kernel, scale, chunk):
    """Perturbing (or removing) positions > t leaves outputs at <= t unchanged (1e-6). T = 10 is not a
    multiple of c = 4; cut points fall inside chunks, on chunk edges and in the padded last chunk."""
    gau = make_gau(kernel, scale, chunk=chunk)
    x = torch.randn(2, 10, gau.u_proj.in_features)
    out = run(gau, x, None, causal=True)
    size = out.abs().max()
    assert size > 1e-2  # so the 1e-6 bound below is tight relative to the outputs
    for t in (0, 2, 3, 4, 6, 8):
        perturbed = x.clone()
        perturbed[:, t + 1 :] += 3 * torch.randn_like(perturbed[:, t + 1 :])
        changed = run(gau, perturbed, None, causal=True)
        assert (changed[:, : t + 1] - out[:, : t + 1]).abs().max() <= 1e-6, f"leak into positions <= {t}"
        # Dropping the future is invisible too (catches a log-n scale or normaliser using T); a shorter
        # matmul rounds differently, so this one is compared at 1e-5.
        torch.testing.assert_close(
            run(gau, x[:, : t + 1], None, causal=True), out[:, : t + 1], atol=1e-5, rtol=1e-5
        )
        # Control: the same weights without the causal mask do see the future, so the test has teeth.
        leaky = (
            run(gau, perturbed, None, causal=False)[:, : t + 1] - run(gau, x, None, causal=False)[:, : t + 1]
        )
        assert leaky.abs().max() > 1e-3 * size


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("chunk", [0, 4], ids=["dense", "flash"])
def test_appended_padding_is_inert(kernel, scale, causal, chunk):
    """Two sequences (lengths 9 and 5) padded with junk tokens to 12 give the outputs each gives alone."""
    gau = make_gau(kernel, scale, chunk=chunk)
    lengths, padded_len = (9, 5), 12
    mask = torch.zeros(2, padded_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    x = torch.randn(2, padded_len, gau.u_proj.in_features)
    x = torch.where(mask.bool()[..., None], x, 3 * x)  # loud junk in the padded slots
    out = run(gau, x, mask, causal)
    for b, n in enumerate(lengths):
        alone = run(gau, x[b : b + 1, :n], None, causal)
        torch.testing.assert_close(out[b : b + 1, :n], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,scale", KERNEL_SCALES)
@pytest.mark.parametrize("chunk", [0, 4], ids=["dense", "flash"])
def test_padded_rows_that_see_no_key_stay_finite(kernel, scale, chunk):
    """A left-padded causal row sees no real key (n_i = 0); mask.py promises such rows stay finite.
    If they were NaN, the next layer's V would carry the NaN into real rows (0 * NaN = NaN in A V)."""
    gau = make_gau(kernel, scale, chunk=chunk)
    x = torch.randn(2, 8, gau.u_proj.in_features)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    first = run(gau, x, mask, causal=True)
    assert torch.isfinite(first).all()
    second = run(gau, x + first, mask, causal=True)  # a second residual layer (same weights)
    assert torch.isfinite(second[mask.bool()]).all()
