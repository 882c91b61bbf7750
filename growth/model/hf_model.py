"""Any ``GrowthLM`` as a ``transformers`` model: ``GrowthHFConfig`` (model_type ``growth``) and
``GrowthForCausalLM``, registered with ``AutoConfig`` / ``AutoModelForCausalLM``.

Importing this module registers them (and only this module: ``import growth`` has no side effects), so after
``import growth.model.hf_model`` a folder written by ``tools/export_hf.py`` for a block combination the Llama
family cannot express (GAU, FLASH, Post-LN, DeepNorm, LayerNorm, GELU, log-n, partial RoPE, MLM) loads with
``AutoModelForCausalLM.from_pretrained``; its ``config.json`` names ``model_type: growth``.
The config holds the ``ModelConfig`` as a dict (``growth``), so the folder says exactly what was built; the
weights are the project's own parameter names under ``model.``.

Decoding. Transformer layers with a causal objective keep a key/value cache (``transformers``' ``DynamicCache``):
new tokens are rotated at their positions, each query row's key count (log-n) counts the cached keys, so
cached decoding computes what the full forward does. **Fallback** for GAU/FLASH layers (their chunked linear
part and relu^2 normaliser have no per-token cache here) and for MLM models (bidirectional: an earlier token's
state depends on later ones): no cache, every step recomputes the whole sequence (``use_cache`` is off in their
config; ``generate`` works, at O(T^2) forward cost).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from growth.model.config import ModelConfig, model_config_from_dict
from growth.model.hf_llama import hf_shape_kwargs
from growth.model.kv_cache import decoding_visibility, supports_kv_cache
from growth.model.rope import RotaryEmbedding
from growth.model.transformer import GrowthLM

MODEL_TYPE = "growth"
# transformers 5 names the key/value cache ``cache`` (``past_key_values`` before)
CACHE_FIELD = (
    "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"
)


class GrowthHFConfig(PretrainedConfig):
    """``growth``: the ``ModelConfig`` as a dict; the usual transformers attributes are derived from it."""

    model_type = MODEL_TYPE

    def __init__(self, growth: dict | None = None, **kwargs: Any):
        model = model_config_from_dict(dict(growth)) if growth else ModelConfig()
        self.growth = dataclasses.asdict(model)
        kwargs.update(**hf_shape_kwargs(model), head_dim=model.head_dim)
        kwargs.setdefault("use_cache", supports_kv_cache(model))
        super().__init__(**kwargs)

    @property
    def model_config(self) -> ModelConfig:
        return model_config_from_dict(dict(self.growth))


@dataclass
class LayerCache:
    """One layer's view of a transformers ``Cache``: ``update(k, v)`` appends and returns all keys/values."""

    cache: Any
    layer: int

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.update(k, v, self.layer)


class GrowthForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = GrowthHFConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["TransformerBlock", "GAUBlock"]
    _supports_sdpa = True
    _tied_weights_keys = {"model.head.proj.weight": "model.embed.weight"}

    def __init__(self, config: GrowthHFConfig):
        super().__init__(config)
        self.model = GrowthLM(config.model_config)
        self.post_init()

    @property
    def supports_cache(self) -> bool:
        return supports_kv_cache(self.model.config)

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Weights come from the checkpoint (``GrowthLM`` initialises itself when built fresh); only the RoPE
        tables, non-persistent buffers that ``from_pretrained`` leaves allocated but empty, are recomputed."""
        if isinstance(module, RotaryEmbedding):
            module.reset_buffers()

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.head.proj

    def _supports_default_dynamic_cache(self) -> bool:  # an instance's blocks decide (GenerationMixin asks)
        return self.supports_cache

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> dict:
        if not self.supports_cache:  # the fallback: the whole sequence, every step
            kwargs.update(next_sequence_length=None, cache=None)
            kwargs.pop("past_key_values", None)
        return super().prepare_inputs_for_generation(input_ids, *args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, vocab) as ``GrowthLM`` computes them; with a cache, of the new tokens only. Position ids
        are not needed: positions are the token indices (RoPE is relative, so left padding does not matter)."""
        cache = (
            cache if cache is not None else kwargs.get("past_key_values")
        )  # the name before transformers 5
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing padded: the unmasked kernels, bit-identical to GrowthLM's forward
        if cache is None or not self.supports_cache:
            logits = self.model(input_ids, attention_mask)
            cache = None
        else:
            logits = self._cached_forward(input_ids, attention_mask, cache)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache})

    def _cached_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any
    ) -> torch.Tensor:
        model = self.model
        vis = decoding_visibility(
            attention_mask, input_ids.shape[1], cache.get_seq_length(), input_ids.device
        )
        x = model.embed_dropout(model.embed(input_ids))
        for index, layer in enumerate(model.layers):
            x = layer(x, dataclasses.replace(vis, cache=LayerCache(cache, index)))
        return model.head(model.final_norm(x))


@torch.no_grad()
def greedy_decode(
    model: GrowthLM,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> torch.Tensor:
    """The project's own greedy decoding: the full forward each step, argmax of the last position; a row that
    produced ``eos_id`` continues with ``pad_id`` (else eos), as ``generate`` does."""
    ids, done = input_ids, torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        token = model(ids)[:, -1].argmax(-1)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id if pad_id is None else pad_id), token)
            done |= token == eos_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return ids


def register_with_transformers() -> None:
    """File the classes with transformers' auto classes (idempotent): ``AutoConfig`` and
    ``AutoModelForCausalLM`` then load a folder whose ``config.json`` says ``model_type: growth``."""
    AutoConfig.register(MODEL_TYPE, GrowthHFConfig, exist_ok=True)
    AutoModelForCausalLM.register(GrowthHFConfig, GrowthForCausalLM, exist_ok=True)


# Importing this module is how a user (or the export code) asks for the project's transformers classes.
register_with_transformers()
