"""The ``model`` section: what network is built, and whether growth, resume and init_from may change each field.

Each component key (``model.layer``, ``model.norm``, ...) accepts the names registered for it where the
components are defined (``growth/registry.py``): importing this module imports ``growth.model`` first
(its package), which registers them all. A layer kind checks the fields it owns
(``growth/model/layer_kind.py``); the checks here are the ones every kind shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from growth.errors import ConfigError
from growth.registry import registry_for
from growth.schema import require_positive, set_key

# What "the same model" means (see ``model_field_role``). Every ModelConfig field has one role:
#   fixed     must be equal across growth, resume and init_from: it changes the function's form
#   growable  may change only through a growth operator (growth/expand/width.py), which keeps the function
#   free      may differ on resume or init_from: it changes training, not the parameters' function
ROLES = ("fixed", "growable", "free")


def _fixed(default: Any) -> Any:
    return field(default=default, metadata={"growth": "fixed"})


def _growable(default: Any) -> Any:
    return field(default=default, metadata={"growth": "growable"})


def _free(default: Any) -> Any:
    return field(default=default, metadata={"growth": "free"})


@dataclass
class ModelConfig:
    vocab_size: int = _fixed(1024)
    d_model: int = _growable(128)
    n_layers: int = _growable(4)
    max_seq_len: int = _fixed(256)
    layer: str = _fixed("transformer")  # transformer (MHA + FFN) | gau (one gated attention unit per layer)
    # transformer layers
    n_heads: int = _growable(4)
    # key/value heads: grouped-query attention (1: multi-query); 0 means n_heads. Growth keeps the query group
    # size n_heads / n_kv_heads, so the plan derives the grown value (growth/expand/width.py).
    n_kv_heads: int = _growable(0)
    qkv_bias: bool = _fixed(False)  # biases on the q/k/v projections (Qwen2); no other linear layer has one
    # heads grow in number, or in size (growth/expand/blocks.py: q rescaled so q.k/sqrt(d_h) is kept, the new
    # dimensions start empty and are not rotated: rope_dim keeps the old width)
    head_dim: int = _growable(32)
    d_ff: int = _growable(384)
    ffn: str = _fixed("swiglu")  # gelu | swiglu
    # softmax (exact) | performer (FAVOR+, growth/model/performer.py) | nystrom (growth/model/nystrom.py)
    attention: str = _fixed("softmax")
    performer_features: int = _fixed(0)  # m random features per head; 0 means floor(head_dim * ln head_dim)
    performer_redraw_interval: int = _free(0)  # redraw the features every N optimizer steps; 0 = fixed
    nystrom_landmarks: int = _fixed(64)  # landmarks (segment means) per sequence
    nystrom_conv_kernel: int = _fixed(0)  # depthwise conv residual on V over this many tokens; 0 = off
    # GAU layers (Hua et al. 2022, "Transformer Quality in Linear Time")
    gau_expansion: int = _growable(0)  # e; 0 means 2 * d_model (the paper's default)
    gau_key_size: int = _growable(128)  # s
    gau_attention: str = _fixed("softmax")  # relu2 (the paper) | softmax (GAU-alpha)
    chunk_size: int = _fixed(0)  # 0: dense GAU; c > 0: FLASH mixed-chunk attention with chunks of c tokens
    # positions and attention scale
    position: str = _fixed("rope")  # rope | none
    rope_base: float = _fixed(10000.0)  # theta (Hugging Face rope_theta)
    # RoPE frequency scaling: none | llama3 (Llama 3.1/3.2: low frequencies / factor, a smooth ramp between)
    rope_scaling: str = _fixed("none")
    rope_scaling_factor: float = _fixed(8.0)  # llama3: factor
    rope_low_freq_factor: float = _fixed(1.0)  # llama3: low_freq_factor
    rope_high_freq_factor: float = _fixed(4.0)  # llama3: high_freq_factor
    rope_original_max_len: int = _fixed(8192)  # llama3: original_max_position_embeddings
    # rotated dimensions per head (partial rotary); 0 means all of them. Growable: growing the GAU key
    # size pins it to the old key size (new dimensions are not rotated); otherwise growth keeps it.
    rope_dim: int = _growable(0)
    attention_scale: str = _fixed("sqrt")  # sqrt | logn (entropy-invariant, log(n)/log(logn_base) / sqrt(d))
    logn_base: int = _fixed(512)
    logn_min_keys: int = _fixed(1)  # clamp n >= this in the log-n scale (bert4keras uses 16)
    # residual stream
    residual: str = _fixed("pre")  # pre | post | deepnorm
    norm: str = _fixed("rmsnorm")  # layernorm | rmsnorm
    norm_eps: float = _growable(1e-5)  # growable: a non-multiple width growth rescales it (width.py)
    dropout: float = _free(0.0)
    tie_embeddings: bool = _fixed(False)
    objective: str = _fixed("clm")  # clm (causal) | mlm (bidirectional)
    pooling: str = _fixed("mean")  # sentence embedding: mean over real tokens | first token
    init_std: float = _free(0.02)


def model_field_role(name: str) -> str:
    """``fixed`` | ``growable`` | ``free`` for a ModelConfig field (see ``ROLES``)."""
    for f in dataclasses.fields(ModelConfig):
        if f.name == name:
            return f.metadata["growth"]
    raise ConfigError(f"model.{name} is not a model field")


def fields_with_role(role: str) -> tuple[str, ...]:
    """ModelConfig field names with ``role``, in declaration order."""
    _check_roles((role,))
    return tuple(f.name for f in dataclasses.fields(ModelConfig) if f.metadata["growth"] == role)


def model_differences(
    old: ModelConfig, new: ModelConfig, roles: str | Iterable[str]
) -> list[tuple[str, Any, Any]]:
    """``(name, old value, new value)`` for each field with one of ``roles`` that differs."""
    wanted = (roles,) if isinstance(roles, str) else tuple(roles)
    _check_roles(wanted)
    return [
        (f.name, getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(ModelConfig)
        if f.metadata["growth"] in wanted and getattr(old, f.name) != getattr(new, f.name)
    ]


def _check_roles(roles: tuple[str, ...]) -> None:
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"unknown model field role {role!r}; roles are {' | '.join(ROLES)}")


# Keys that pick a component; their accepted names are the names registered for the key.
COMPONENT_KEYS = (
    "model.layer",
    "model.attention",
    "model.ffn",
    "model.gau_attention",
    "model.position",
    "model.rope_scaling",
    "model.attention_scale",
    "model.residual",
    "model.norm",
    "model.objective",
    "model.pooling",
)


def model_config_from_dict(data: dict[str, Any], source: str = "dict") -> ModelConfig:
    """A validated ModelConfig alone (e.g. the ``model`` section stored with a checkpoint)."""
    model = ModelConfig()
    for name, value in data.items():
        set_key(model, "model", str(name), value, source, from_text=False)
    resolve_model(model)
    validate_model(model)
    return model


def resolve_model(m: ModelConfig) -> None:
    """Fill values that default to a function of others, so the saved config says what was built."""
    if m.gau_expansion == 0:
        m.gau_expansion = 2 * m.d_model


def validate_model(m: ModelConfig) -> None:
    """Reject impossible values and combinations with a one-line message naming the key."""
    for dotted in COMPONENT_KEYS:
        registry_for(dotted).get(getattr(m, dotted.split(".")[1]))  # "<key> must be one of ..., got ..."
    require_positive("model", m, "vocab_size", "d_model", "n_layers", "max_seq_len", "rope_base", "init_std")
    require_positive("model", m, "norm_eps", "logn_min_keys")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.logn_base < 2:
        raise ConfigError(f"model.logn_base must be >= 2, got {m.logn_base}")
    if m.chunk_size < 0:
        raise ConfigError(f"model.chunk_size must be >= 0 (0 = dense), got {m.chunk_size}")
    rotated, rotated_key = _validate_layer(m)
    if m.rope_scaling == "llama3":
        require_positive("model", m, "rope_scaling_factor", "rope_low_freq_factor", "rope_original_max_len")
        if m.rope_high_freq_factor <= m.rope_low_freq_factor:
            raise ConfigError(
                f"model.rope_high_freq_factor ({m.rope_high_freq_factor}) must be > "
                f"model.rope_low_freq_factor ({m.rope_low_freq_factor})"
            )
    if m.position == "rope":
        rope_dim = m.rope_dim or rotated
        if rope_dim % 2 or rope_dim > rotated or rope_dim < 0:
            raise ConfigError(f"model.rope_dim must be even and <= {rotated_key} ({rotated}), got {rope_dim}")


def _validate_layer(m: ModelConfig) -> tuple[int, str]:
    """The layer kind checks the fields it owns (growth/model/layer_kind.py); returns the per-head width
    RoPE rotates, and its key."""
    kind = registry_for("model.layer").get(m.layer)
    kind.validate(m)
    return getattr(m, kind.rope_width_field), f"model.{kind.rope_width_field}"
