"""``model.layer=transformer``: attention and FFN, each in its own residual (Vaswani et al. 2017).

The attention inside is its own kind (``model.attention``: softmax, performer, nystrom; ``layer_kind.py``),
asked for its checks, FLOPs and growth roles; the FFN is ``model.ffn``.
"""

from __future__ import annotations

import torch
from torch import nn

from growth.errors import ConfigError
from growth.model.config import ModelConfig
from growth.model.ffn import FFNS, build_ffn
from growth.model.layer_kind import LAYERS, LayerKind, attention_kind, require_positive
from growth.model.mask import Visibility
from growth.model.residual import build_residual


@LAYERS.register("transformer")
class TransformerBlock(LayerKind):
    residual_branches = 2  # attention, FFN
    sizes = ("n_heads", "n_kv_heads", "head_dim", "d_ff")
    rope_width_field = "head_dim"
    interleaved_growth = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention = build_residual(attention_kind(config)(config), config)
        self.ffn = build_residual(build_ffn(config), config)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        return self.ffn(self.attention(x, vis))

    @classmethod
    def sublayers(cls, config: ModelConfig) -> dict[str, type[nn.Module]]:
        return {"attention": attention_kind(config), "ffn": FFNS.get(config.ffn)}

    @classmethod
    def validate(cls, m: ModelConfig) -> None:
        require_positive(m, "n_heads", "head_dim", "d_ff")
        if m.n_heads * m.head_dim != m.d_model:
            raise ConfigError(
                "model.n_heads * model.head_dim must equal model.d_model "
                f"({m.n_heads} * {m.head_dim} != {m.d_model})"
            )
        if m.n_kv_heads < 0 or m.n_heads % (m.n_kv_heads or m.n_heads):
            raise ConfigError(
                f"model.n_kv_heads must divide model.n_heads ({m.n_heads}), got {m.n_kv_heads} "
                "(0: one key/value head per query head)"
            )
        if m.chunk_size:
            raise ConfigError("model.chunk_size (FLASH) needs model.layer=gau; set model.chunk_size=0")
        attention_kind(m).validate(m)

    @classmethod
    def matmul_params(cls, config: ModelConfig) -> int:
        inner = config.n_heads * config.head_dim
        kv_inner = (config.n_kv_heads or config.n_heads) * config.head_dim
        return (
            2 * config.d_model * (inner + kv_inner)
            + FFNS.get(config.ffn).matrices * config.d_model * config.d_ff
        )

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        return attention_kind(config).attention_flops(config, seq_len)

    @classmethod
    def supports_kv_cache(cls, config: ModelConfig) -> bool:
        return attention_kind(config).supports_kv_cache(config)

    @classmethod
    def growth_refusal(cls, old: ModelConfig, new: ModelConfig) -> str | None:
        if new.head_dim != old.head_dim and not attention_kind(old).grows_head_size:
            return (
                f"model.head_dim {old.head_dim} -> {new.head_dim}: model.attention={old.attention} grows by "
                "adding heads of the same size (its features are defined per head size); keep model.head_dim"
            )
        return None

    @classmethod
    def growth_notes(cls, old: ModelConfig, new: ModelConfig, interleaved: bool) -> list[str]:
        notes = []
        if new.head_dim != old.head_dim:
            how = (
                "each dim repeated in place, q and k x r^(-1/4)"
                if interleaved
                else f"new dims empty, q x sqrt({new.head_dim}/{old.head_dim}), "
                f"rope_dim {new.rope_dim or new.head_dim}"
            )
            notes.append(f"head size {old.head_dim} -> {new.head_dim} ({how})")
        if new.n_heads != old.n_heads:
            kept = " kept)" if new.head_dim == old.head_dim else ")"
            notes.append(f"heads {old.n_heads} -> {new.n_heads} (head_dim {new.head_dim}{kept}")
        if new.d_ff != old.d_ff:
            notes.append(
                f"ffn {old.d_ff} -> {new.d_ff} ({new.ffn}; neurons copied cyclically, out-projection / copies)"
            )
        return notes
