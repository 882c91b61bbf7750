"""The Llama family of ``transformers`` (Llama, Mistral, Qwen2): config and parameter-name maps, both ways.

A growth model maps onto this family exactly when it is a Pre-LN, RMSNorm, SwiGLU, full-RoPE, sqrt-scaled
causal transformer (``LLAMA_SHAPE``); grouped-query attention, q/k/v biases, RoPE theta and Llama-3
frequency scaling carry over. Both use the half-split RoPE layout, so q/k weights need no permutation. The
export is ``LlamaForCausalLM``, or ``Qwen2ForCausalLM`` when the q/k/v projections have biases (Llama's
``attention_bias`` would add one to o_proj too).

The import direction (``model_config_from_hf``) refuses, in one line naming the ``config.json`` field,
whatever the model cannot represent. On-disk reading and writing is ``growth/checkpoint/hf/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from growth.errors import ConfigError
from growth.model.config import ModelConfig, model_config_from_dict

LLAMA_SHAPE = {
    "layer": "transformer",
    "attention": "softmax",
    "residual": "pre",
    "norm": "rmsnorm",
    "ffn": "swiglu",
    "position": "rope",
    "attention_scale": "sqrt",
    "objective": "clm",
}
# architectures -> model_type, as config.json spells them
FAMILIES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
ROPE_TYPES = ("default", "llama3")


class HFConversionError(ConfigError):
    """A Hugging Face model or option this project cannot represent; the message names the field."""


def llama_incompatibility(config: ModelConfig) -> str | None:
    """Why ``config`` has no Llama-family equivalent (None: it has one)."""
    for key, wanted in LLAMA_SHAPE.items():
        if getattr(config, key) != wanted:
            return f"model.{key}={getattr(config, key)} has no Llama equivalent; Llama needs {wanted}"
    if config.rope_dim not in (0, config.head_dim):
        return f"model.rope_dim={config.rope_dim}: Llama rotates the whole head ({config.head_dim})"
    return None


def check_llama_compatible(config: ModelConfig) -> None:
    reason = llama_incompatibility(config)
    if reason:
        raise ValueError(reason)


def hf_architecture(config: ModelConfig) -> str:
    """The ``transformers`` class a Llama-shaped config exports as."""
    check_llama_compatible(config)
    return "Qwen2ForCausalLM" if config.qkv_bias else "LlamaForCausalLM"


def rope_scaling(config: ModelConfig) -> dict[str, Any] | None:
    """transformers' ``rope_scaling`` (``rope_parameters`` since transformers 5) of a config's RoPE scaling."""
    if config.rope_scaling == "llama3":
        return {
            "rope_type": "llama3",
            "rope_theta": config.rope_base,
            "factor": config.rope_scaling_factor,
            "low_freq_factor": config.rope_low_freq_factor,
            "high_freq_factor": config.rope_high_freq_factor,
            "original_max_position_embeddings": config.rope_original_max_len,
        }
    return None


def hf_shape_kwargs(config: ModelConfig) -> dict[str, Any]:
    """The attributes every ``transformers`` decoder config spells the same way (Llama's, Qwen2's and the
    ``growth`` model type's, ``hf_model.GrowthHFConfig``)."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads or config.n_heads,
        max_position_embeddings=config.max_seq_len,
        tie_word_embeddings=config.tie_embeddings,
        initializer_range=config.init_std,
    )


def hf_config_kwargs(config: ModelConfig) -> dict[str, Any]:
    """The ``LlamaConfig`` / ``Qwen2Config`` arguments of the same shape as a Llama-shaped ``config``."""
    architecture = hf_architecture(config)
    kwargs = dict(
        **hf_shape_kwargs(config),
        intermediate_size=config.d_ff,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_base,
        rope_scaling=rope_scaling(config),  # both spellings: transformers 5 folds them into rope_parameters
        hidden_act="silu",
        attention_dropout=0.0,
    )
    if architecture == "LlamaForCausalLM":
        kwargs.update(head_dim=config.head_dim, attention_bias=False, mlp_bias=False)
    else:
        kwargs.update(use_sliding_window=False, sliding_window=None)
    return kwargs


def hf_config(config: ModelConfig, **extra: Any):
    """A ``LlamaConfig`` or ``Qwen2Config`` (``hf_architecture``) of the same shape, built locally."""
    from transformers import LlamaConfig, Qwen2Config

    kind = LlamaConfig if hf_architecture(config) == "LlamaForCausalLM" else Qwen2Config
    built = kind(**hf_config_kwargs(config), **extra)
    built.architectures = [hf_architecture(config)]
    return built


def llama_config(config: ModelConfig):
    """The ``LlamaConfig`` of a Llama-shaped config without q/k/v biases (benchmarks, parity tests)."""
    from transformers import LlamaConfig

    if config.qkv_bias:
        raise ValueError(
            "model.qkv_bias=true exports as Qwen2 (Llama's attention_bias also biases o_proj); use hf_config"
        )
    return LlamaConfig(**hf_config_kwargs(config), attn_implementation="sdpa")


def hf_names(config: ModelConfig) -> dict[str, str]:
    """growth parameter name -> Llama-family name, for every tensor of a Llama-shaped model."""
    names = {"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["head.proj.weight"] = "lm_head.weight"
    for i in range(config.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        names[src + "attention.norm.weight"] = dst + "input_layernorm.weight"
        names[src + "ffn.norm.weight"] = dst + "post_attention_layernorm.weight"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names[src + f"attention.sublayer.{proj}.weight"] = dst + f"self_attn.{proj}.weight"
        if config.qkv_bias:
            for proj in ("q_proj", "k_proj", "v_proj"):
                names[src + f"attention.sublayer.{proj}.bias"] = dst + f"self_attn.{proj}.bias"
        for proj in ("gate_proj", "up_proj", "down_proj"):
            names[src + f"ffn.sublayer.{proj}.weight"] = dst + f"mlp.{proj}.weight"
    return names


def llama_state_dict(
    state: Mapping[str, torch.Tensor], n_layers: int | ModelConfig
) -> dict[str, torch.Tensor]:
    """Rename a growth state dict to Llama's parameter names (``lm_head.weight`` too when tied: the
    transformers model ties it back)."""
    config = n_layers if isinstance(n_layers, ModelConfig) else None
    if config is None:  # the old signature: an untied, bias-free model of n_layers layers
        config = dataclasses.replace(
            ModelConfig(), n_layers=n_layers, qkv_bias=any(k.endswith("proj.bias") for k in state)
        )
    out = {dst: state[src] for src, dst in hf_names(config).items()}
    out.setdefault(
        "lm_head.weight", state["head.proj.weight"] if "head.proj.weight" in state else state["embed.weight"]
    )
    return out


def to_hf_llama(model: torch.nn.Module):
    """A ``LlamaForCausalLM`` (``Qwen2ForCausalLM`` with q/k/v biases) computing the same function as ``model``
    (built locally, no download)."""
    from transformers import AutoModelForCausalLM

    config = model.config
    hf = AutoModelForCausalLM.from_config(hf_config(config, attn_implementation="sdpa"))
    hf.load_state_dict(llama_state_dict(model.state_dict(), config), strict=True)
    return hf.to(next(model.parameters()).dtype).eval()


# -- the import direction ---------------------------------------------------------------------------------
def model_config_from_hf(hf: Mapping[str, Any], **free: Any) -> ModelConfig:
    """The ``ModelConfig`` of a Llama / Mistral / Qwen2 ``config.json`` (a dict), or ``HFConversionError``
    naming the field that cannot be represented. ``free`` sets free fields (``dropout``, ``init_std``)."""

    def refuse(key: str, why: str) -> HFConversionError:
        return HFConversionError(f"config.json: {key}={hf.get(key)!r} {why}")

    architectures = hf.get("architectures") or []
    if len(architectures) != 1 or architectures[0] not in FAMILIES:
        raise refuse("architectures", f"is not supported; supported: {', '.join(FAMILIES)}")
    family = FAMILIES[architectures[0]]
    if hf.get("model_type", family) != family:
        raise refuse("model_type", f"does not match architectures {architectures[0]} ({family})")
    if hf.get("hidden_act", "silu") != "silu":
        raise refuse("hidden_act", "is not representable; the Llama family's SwiGLU uses silu")
    if hf.get("quantization_config"):
        raise refuse("quantization_config", "is set; import a full-precision (unquantized) checkpoint")
    if family == "llama" and hf.get("attention_bias"):
        raise refuse(
            "attention_bias", "(biases on q/k/v and o_proj) is not representable; only q/k/v biases are"
        )
    if family == "llama" and hf.get("mlp_bias"):
        raise refuse("mlp_bias", "is not representable; FFN layers have no biases")
    heads, hidden = int(hf["num_attention_heads"]), int(hf["hidden_size"])
    head_dim = int(hf.get("head_dim") or hidden // heads)
    if heads * head_dim != hidden:
        raise refuse(
            "head_dim", f"* num_attention_heads ({heads}) != hidden_size ({hidden}); not representable"
        )
    max_len = int(hf.get("max_position_embeddings", 2048))
    if family == "mistral" and hf.get("sliding_window") is not None and int(hf["sliding_window"]) < max_len:
        raise refuse(
            "sliding_window",
            f"< max_position_embeddings ({max_len}); only full attention is supported "
            "(Mistral without a sliding window)",
        )
    if family == "qwen2" and hf.get("use_sliding_window"):
        raise refuse("use_sliding_window", "is not supported; only full attention is")
    if any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise refuse("layer_types", "has non-full attention layers; only full attention is supported")
    if hf.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise refuse("partial_rotary_factor", "is not supported (the Llama family rotates the whole head)")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
        raise HFConversionError(
            f"config.json: {key}.rope_type={rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
        )
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kv = int(hf.get("num_key_value_heads") or heads)
    if heads % kv:
        raise refuse("num_key_value_heads", f"does not divide num_attention_heads ({heads})")
    values: dict[str, Any] = dict(
        LLAMA_SHAPE,
        vocab_size=int(hf["vocab_size"]),
        d_model=hidden,
        n_layers=int(hf["num_hidden_layers"]),
        max_seq_len=max_len,
        n_heads=heads,
        n_kv_heads=0 if kv == heads else kv,
        head_dim=head_dim,
        d_ff=int(hf["intermediate_size"]),
        qkv_bias=family == "qwen2",
        rope_base=theta,
        rope_dim=0,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        dropout=0.0,
    )
    if rope_type == "llama3":
        values.update(
            rope_scaling="llama3",
            rope_scaling_factor=float(rope["factor"]),
            rope_low_freq_factor=float(rope["low_freq_factor"]),
            rope_high_freq_factor=float(rope["high_freq_factor"]),
            rope_original_max_len=int(rope["original_max_position_embeddings"]),
        )
    values.update(free)
    try:
        return model_config_from_dict(values)
    except ConfigError as err:
        raise HFConversionError(f"config.json does not make a valid model: {err}") from None


def from_hf_names(config: ModelConfig) -> dict[str, str]:
    """Llama-family name -> growth parameter name (the inverse of ``hf_names``)."""
    return {dst: src for src, dst in hf_names(config).items()}
