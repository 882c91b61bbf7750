"""log-n attention scale: plain scale at n = base, per-row n (causal i+1, padding excluded), prefix-only."""

import math

import pytest
import torch

from growth.model import build_model
from growth.model.attention import MultiHeadAttention
from growth.model.attention_scale import logn_factor
from growth.model.mask import visibility
from tests.conftest import tiny_model_config


def test_equals_plain_scale_at_base():
    assert logn_factor(torch.tensor([512.0]), base=512).item() == pytest.approx(1.0, abs=1e-7)
    assert logn_factor(torch.tensor([64.0]), base=64).item() == pytest.approx(1.0, abs=1e-7)


def test_clamp():
    factors = logn_factor(torch.tensor([1.0, 4.0, 16.0, 100.0]), base=512, min_keys=16)
    expected = torch.tensor([math.log(16), math.log(16), math.log(16), math.log(100)]) / math.log(512)
    assert torch.allclose(factors, expected, atol=1e-7)


def test_causal_row_i_sees_i_plus_one_keys_and_padding_does_not_count():
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    causal = visibility(mask, 6, causal=True, device=torch.device("cpu")).key_counts.flatten(1)
    assert causal.tolist() == [[1, 2, 3, 4, 4, 4], [1, 2, 3, 4, 5, 6]]
    full = visibility(mask, 6, causal=False, device=torch.device("cpu")).key_counts.flatten(1)
    assert full.tolist() == [[4] * 6, [6] * 6]
    unpadded = visibility(None, 6, causal=True, device=torch.device("cpu")).key_counts.flatten()
    assert unpadded.tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_explicit_softmax(causal):
    config = tiny_model_config("model.attention_scale=logn", "model.logn_base=8", "model.position=none")
    attention = MultiHeadAttention(config)
    length = 10
    x = torch.randn(2, length, config.d_model)
    mask = torch.ones(2, length)
    mask[1, 7:] = 0
    out = attention(x, visibility(mask, length, causal, x.device))

    def heads(t):
        return t.view(2, length, config.n_heads, config.head_dim).transpose(1, 2)

    q, k, v = heads(attention.q_proj(x)), heads(attention.k_proj(x)), heads(attention.v_proj(x))
    expected = torch.zeros_like(q)
    for b in range(2):
        for i in range(length):
            keys = [j for j in range(length) if mask[b, j] and (j <= i or not causal)]
            scale = math.log(len(keys)) / math.log(8) / math.sqrt(config.head_dim)
            scores = torch.einsum("hd,hkd->hk", q[b, :, i], k[b, :, keys])
            weights = torch.softmax(scale * scores, dim=-1)
            expected[b, :, i] = torch.einsum("hk,hkd->hd", weights, v[b, :, keys])
    expected = attention.o_proj(expected.transpose(1, 2).flatten(2))
    real = mask.bool()
    assert torch.allclose(out[real], expected[real], atol=1e-5)


@pytest.mark.parametrize("layer", ["transformer", "gau"])
def test_causal_outputs_depend_only_on_the_prefix(layer):
    """Logits at i from the full sequence equal logits from the sequence cut after i."""
    config = tiny_model_config(f"model.layer={layer}", "model.attention_scale=logn", "model.logn_base=16")
    model = build_model(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 24))
    full = model(ids)
    for cut in (3, 11, 17):
        assert torch.allclose(model(ids[:, :cut]), full[:, :cut], atol=1e-5)


def test_total_length_scale_would_fail_the_prefix_test():
    """Negative control: using the total length T instead of per-row n breaks prefix-only outputs."""
    config = tiny_model_config("model.attention_scale=logn", "model.logn_base=16", "model.position=none")
    attention = MultiHeadAttention(config)
    x = torch.randn(1, 20, config.d_model)

    def total_length_attention(inputs):
        vis = visibility(None, inputs.shape[1], causal=True, device=inputs.device)
        vis.key_counts = torch.full_like(vis.key_counts, float(inputs.shape[1]))
        return attention(inputs, vis)

    assert not torch.allclose(total_length_attention(x[:, :10]), total_length_attention(x)[:, :10], atol=1e-4)
