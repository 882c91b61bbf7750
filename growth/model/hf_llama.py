"""Export to ``transformers.LlamaForCausalLM`` (for parity tests, benchmarks and downstream use).

A growth model maps onto Llama exactly when it is a Pre-LN, RMSNorm, SwiGLU, full-RoPE, sqrt-scaled
causal transformer. Both use the half-split RoPE layout, so q/k weights need no permutation.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from growth.config import ModelConfig

LLAMA_SHAPE = {
    "layer": "transformer",
    "residual": "pre",
    "norm": "rmsnorm",
    "ffn": "swiglu",
    "position": "rope",
    "attention_scale": "sqrt",
    "objective": "clm",
}


def check_llama_compatible(config: ModelConfig) -> None:
    for key, wanted in LLAMA_SHAPE.items():
        if getattr(config, key) != wanted:
            raise ValueError(f"model.{key}={getattr(config, key)} has no Llama equivalent; Llama needs {wanted}")
    if config.rope_dim not in (0, config.head_dim):
        raise ValueError(f"model.rope_dim={config.rope_dim}: Llama rotates the whole head ({config.head_dim})")


def llama_config(config: ModelConfig) -> LlamaConfig:
    """The LlamaConfig of the same shape as a Llama-compatible growth ``ModelConfig``."""
    check_llama_compatible(config)
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_base,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        attn_implementation="sdpa",
    )


def llama_state_dict(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Rename a growth state dict to Llama's parameter names."""
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["final_norm.weight"]}
    out["lm_head.weight"] = state["head.proj.weight"]
    for i in range(n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = state[src + "attention.norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = state[src + "ffn.norm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[dst + f"self_attn.{proj}.weight"] = state[src + f"attention.sublayer.{proj}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[dst + f"mlp.{proj}.weight"] = state[src + f"ffn.sublayer.{proj}.weight"]
    return out


def to_hf_llama(model: torch.nn.Module) -> LlamaForCausalLM:
    """A ``LlamaForCausalLM`` computing the same function as ``model`` (built locally, no download)."""
    hf = LlamaForCausalLM(llama_config(model.config))
    hf.load_state_dict(llama_state_dict(model.state_dict(), model.config.n_layers), strict=True)
    return hf.to(next(model.parameters()).dtype).eval()
