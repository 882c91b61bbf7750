"""Parameter counts and training FLOPs per token (for MFU and growth-vs-scratch comparisons).

FLOPs per token for one forward + backward = 6 * N_matmul + attention term (Kaplan et al. 2020;
PaLM App. B; nanoGPT's ``estimate_mfu``). N_matmul counts the weights of every matrix multiply:
all parameters except the input embedding lookup, plus the LM head (counted even when tied).
Attention terms per layer (forward is 1/3 of these; causal masking is not discounted, as in PaLM):
  standard:  12 * T * H * d_head           (q.k^T and A.v over T keys)
  GAU dense:  6 * T * (s + e)               (q.k^T over s, A.v over e)
  FLASH:      6 * c * (s + e) + 12 * s * e  (in-chunk quadratic + linear k^T v and q.(kv))
"""

from __future__ import annotations

from torch import nn

from growth.config import ModelConfig


def num_params(model: nn.Module, embeddings: bool = True) -> int:
    """Distinct parameters (a tied matrix counts once); ``embeddings=False`` drops the token embedding."""
    seen = {id(p): p.numel() for p in model.parameters()}
    if not embeddings:
        seen.pop(id(model.embed.weight), None)
    return sum(seen.values())


def matmul_params(config: ModelConfig) -> int:
    """Weights that take part in a matrix multiply per token (analytic, from the config alone)."""
    d = config.d_model
    if config.layer == "transformer":
        inner = config.n_heads * config.head_dim
        ffn_mats = 3 if config.ffn == "swiglu" else 2
        per_layer = 4 * d * inner + ffn_mats * d * config.d_ff
    else:
        e, s = config.gau_expansion, config.gau_key_size
        per_layer = 3 * d * e + d * s
    return config.n_layers * per_layer + d * config.vocab_size


def attention_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    if config.layer == "transformer":
        per_layer = 12 * seq_len * config.n_heads * config.head_dim
    elif config.chunk_size:
        e, s, c = config.gau_expansion, config.gau_key_size, config.chunk_size
        per_layer = 6 * c * (s + e) + 12 * s * e
    else:
        per_layer = 6 * seq_len * (config.gau_key_size + config.gau_expansion)
    return float(config.n_layers * per_layer)


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at sequence length ``seq_len``."""
    return 6.0 * matmul_params(config) + attention_flops_per_token(config, seq_len)
