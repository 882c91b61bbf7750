"""Parameter counts and training FLOPs per token (for MFU and growth-vs-scratch comparisons).

FLOPs per token for one forward + backward = 6 * N_matmul + attention term (Kaplan et al. 2020;
PaLM App. B; nanoGPT's ``estimate_mfu``). N_matmul counts the weights of every matrix multiply:
all parameters except the input embedding lookup, plus the LM head (counted even when tied).
Attention terms per layer (forward is 1/3 of these; causal masking is not discounted, as in PaLM):
  standard:  12 * T * H * d_head           (q.k^T and A.v over T keys)
  GAU dense:  6 * T * (s + e)               (q.k^T over s, A.v over e)
  FLASH:      6 * c * (s + e) + 12 * s * e  (in-chunk quadratic + linear k^T v and q.(kv))
Each layer kind states its own per-layer terms (``matmul_params``, ``attention_flops`` on the kind classes,
``layer_kind.py``; the transformer layer asks its attention kind); this module sums them over the stack.
A step that runs an example through the network more than once multiplies these in its TrainModule:
R-Drop's second pass x2 (``growth/objectives/rdrop.py: forward_copies``), the contrastive cached
accumulation's extra no-graph forward x4/3 (``growth/train/contrastive_module.py``).
"""

from __future__ import annotations

from torch import nn

from growth.model.config import ModelConfig
from growth.model.layer_kind import layer_kind


def num_params(model: nn.Module, embeddings: bool = True) -> int:
    """Distinct parameters (a tied matrix counts once); ``embeddings=False`` drops the token embedding."""
    seen = {id(p): p.numel() for p in model.parameters()}
    if not embeddings:
        seen.pop(id(model.embed.weight), None)
    return sum(seen.values())


def matmul_params(config: ModelConfig) -> int:
    """Weights that take part in a matrix multiply per token (analytic, from the config alone)."""
    return config.n_layers * layer_kind(config).matmul_params(config) + config.d_model * config.vocab_size


def attention_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    return float(config.n_layers * layer_kind(config).attention_flops(config, seq_len))


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at sequence length ``seq_len``."""
    return 6.0 * matmul_params(config) + attention_flops_per_token(config, seq_len)
