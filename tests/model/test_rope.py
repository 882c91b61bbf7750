"""RoPE: relative-position property, norm preservation, partial rotary, parity with transformers."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from growth.model.rope import RotaryEmbedding

T, D = 40, 16


def repeated(vector: torch.Tensor) -> torch.Tensor:
    """The same vector at every position, shaped (1, 1, T, D)."""
    return vector.expand(T, -1)[None, None]


@pytest.mark.parametrize("rope_dim", [0, 8])
def test_dot_product_depends_only_on_relative_position(rope_dim):
    rope = RotaryEmbedding(D, rope_dim, max_seq_len=T)
    q, k = rope(repeated(torch.randn(D))), rope(repeated(torch.randn(D)))
    scores = (q[0, 0] @ k[0, 0].T).double()  # scores[m, n] = <R_m q, R_n k>
    for offset in (-7, 0, 3, 11):
        diagonal = torch.diagonal(scores, offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 5)[0], atol=1e-3)


def test_norms_preserved_and_position_zero_is_identity():
    rope = RotaryEmbedding(D, max_seq_len=T)
    x = torch.randn(2, 3, T, D)
    y = rope(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[..., 0, :], x[..., 0, :])


def test_partial_rotary_passes_the_rest_through():
    rope = RotaryEmbedding(D, rope_dim=6, max_seq_len=T)
    x = torch.randn(2, 3, T, D)
    y = rope(x)
    assert torch.equal(y[..., 6:], x[..., 6:])
    assert torch.allclose(y[..., :6], RotaryEmbedding(6, max_seq_len=T)(x[..., :6]), atol=0)


def test_cache_grows_beyond_max_seq_len():
    short, long = RotaryEmbedding(D, max_seq_len=8), RotaryEmbedding(D, max_seq_len=128)
    x = torch.randn(1, 1, 100, D)
    assert torch.allclose(short(x), long(x), atol=1e-6)


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_matches_transformers_llama_rotary(base):
    config = LlamaConfig(
        hidden_size=4 * D, num_attention_heads=4, head_dim=D, rope_theta=base, max_position_embeddings=T
    )
    hf = LlamaRotaryEmbedding(config)
    q, k = torch.randn(2, 4, T, D), torch.randn(2, 4, T, D)
    cos, sin = hf(q, torch.arange(T)[None])
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    ours = RotaryEmbedding(D, base=base, max_seq_len=T)
    assert torch.allclose(ours(q), q_hf, atol=1e-5)
    assert torch.allclose(ours(k), k_hf, atol=1e-5)
