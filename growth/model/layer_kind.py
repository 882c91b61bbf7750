"""What a layer kind (``model.layer``) and an attention kind (``model.attention``) declare besides forward.

In the spirit of torchtitan's ``ModelSpec`` and litgpt's string-named components, each kind is one class
registered in its own file, and everything else asks the class instead of switching on the name:

  * its config checks (``validate``: the fields it owns, e.g. ``model.n_heads``; ``growth/config.py`` calls it),
  * its FLOP terms (``matmul_params``, ``attention_flops``; summed by ``accounting.py``),
  * its growth by submodule role: ``sublayers`` names each residual branch's class, and a sublayer class
    declares ``growth_axes`` (linear child -> the inner axis it produces or consumes), ``writers`` (those
    that write the residual stream) and optional role tuples (below); ``growth/expand/blocks.py`` derives
    every parameter's rule from these, so no parameter name is matched by a regex,
  * the growable sizes it owns and how a growth of them reads in a report (``growth_notes``),
  * decoding and Hugging Face support (``supports_kv_cache``; the Llama mapping is in ``hf_llama.py``).

So a new kind is one file with one registration (imported by ``growth/model/__init__.py``) plus its tests.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from growth.errors import ConfigError
from growth.model.config import ModelConfig
from growth.registry import Registry


def require_positive(config: ModelConfig, *names: str) -> None:
    """The check every kind makes of the sizes it owns: ``model.<name> must be > 0``."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ConfigError(f"model.{name} must be > 0, got {getattr(config, name)}")


class LayerKind(nn.Module):
    """A layer of the stack: built as ``kind(config)``, called as ``layer(x, vis)``."""

    residual_branches = 1  # residual branches per layer (DeepNorm's N counts pairs of them)
    # ModelConfig fields this kind grows (a subset of the growable ones); other kinds carry them unchanged.
    sizes: tuple[str, ...] = ()
    # The field whose per-head width RoPE rotates when model.rope_dim is 0 (and its growth pins rope_dim).
    rope_width_field = ""
    interleaved_growth = False  # Su's interleaved width operator is derived for this kind

    @classmethod
    def sublayers(cls, config: ModelConfig) -> dict[str, type[nn.Module]]:
        """{child name: sublayer class} of the residual branches, in forward order."""
        raise NotImplementedError

    @classmethod
    def validate(cls, config: ModelConfig) -> None:
        """Raise ``ConfigError`` naming the key for a value this kind cannot build."""

    @classmethod
    def matmul_params(cls, config: ModelConfig) -> int:
        raise NotImplementedError

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        raise NotImplementedError

    @classmethod
    def supports_kv_cache(cls, config: ModelConfig) -> bool:
        return False

    @classmethod
    def growth_notes(cls, old: ModelConfig, new: ModelConfig, interleaved: bool) -> list[str]:
        """One line per grown size this kind owns (``growth/expand/grow_state.py``'s report)."""
        return []

    @classmethod
    def growth_refusal(cls, old: ModelConfig, new: ModelConfig) -> str | None:
        """Why growing ``old`` to ``new`` cannot be exact for this kind (None: it can)."""
        return None


class AttentionKind(nn.Module):
    """An attention sublayer of the transformer layer: built as ``kind(config)``, called as ``attn(x, vis)``."""

    writers: tuple[str, ...] = ("o_proj",)
    value_path: tuple[str, ...] = ("v_proj", "o_proj")
    growth_axes: dict[str, str] = {}
    # Growth roles beyond the linear axes (growth/expand/blocks.py): {child: "q" | "k"} for head-size growth,
    # children whose new head-size rows take the grown init, and buffers copied as they are.
    query_key: dict[str, str] = {}
    fresh_rows: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    growth_tensors: dict[str, list[tuple[int, str, str]]] = {}  # other tensors: {name: [(axis, map, role)]}
    grows_head_size = False

    @classmethod
    def validate(cls, config: ModelConfig) -> None:
        pass

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        raise NotImplementedError

    @classmethod
    def supports_kv_cache(cls, config: ModelConfig) -> bool:
        return False


# ``model.layer`` and ``model.attention`` (the latter for model.layer=transformer).
LAYERS: Registry[Any] = Registry("model.layer")
ATTENTIONS: Registry[Any] = Registry("model.attention")


def layer_kind(config: ModelConfig) -> type[LayerKind]:
    return LAYERS.get(config.layer)


def attention_kind(config: ModelConfig) -> type[AttentionKind]:
    return ATTENTIONS.get(config.attention)
