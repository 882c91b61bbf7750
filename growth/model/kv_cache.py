"""Decoding with a key/value cache: each layer keeps the rotated keys and values of the tokens so far, so a new
token costs one position's forward instead of the whole sequence's.

Only standard transformer layers of a causal model cache (``supports_kv_cache``). GAU/FLASH layers recompute
the whole sequence at every step: their relu^2 normaliser and FLASH's chunked linear part have no per-token
cache here. A bidirectional (MLM) model cannot cache at all: an earlier token's state depends on later ones.

The cache is exact: new queries sit at positions ``offset ..`` (RoPE rotates them there, ``rope.py``), and each
row's key count n (log-n scale, ``attention_scale.py``) counts the cached keys, so cached decoding computes what
the full forward computes (``growth/model/hf_model.py`` drives the same code from ``transformers``' cache).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from growth.model.config import ModelConfig
from growth.model.layer_kind import layer_kind
from growth.model.mask import OBJECTIVES, Visibility, visibility


def supports_kv_cache(config: ModelConfig) -> bool:
    """Cached decoding needs per-token keys/values (the layer kind says) and a causal model."""
    return layer_kind(config).supports_kv_cache(config) and OBJECTIVES.get(config.objective).causal


def decoding_visibility(
    attention_mask: torch.Tensor | None, length: int, offset: int, device: torch.device
) -> Visibility:
    """Causal visibility of ``length`` new queries at positions offset.. over offset + length keys
    (``attention_mask``: (B, offset + length), 1 for real tokens), as ``mask.visibility`` builds it."""
    total = offset + length
    key_real = (
        attention_mask[:, -total:].to(device=device, dtype=torch.bool)
        if attention_mask is not None
        else torch.ones(1, total, dtype=torch.bool, device=device)
    )
    rows = torch.arange(offset, total, device=device)[:, None]
    cols = torch.arange(total, device=device)[None, :]
    allowed = key_real[:, None, None, :] & (cols <= rows)
    counts = allowed.sum(-1, keepdim=True).float().clamp(min=1.0)
    allowed = allowed | (cols == rows)  # a padded query row sees itself (n = 1), as in mask.visibility
    return Visibility(allowed, counts, key_real[:, offset:], True, offset=offset)


@dataclass
class LayerSlot:
    """One layer's view of a ``KVCache``: ``update(k, v)`` appends and returns every key/value so far."""

    cache: KVCache
    layer: int

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.append(self.layer, k, v)


class KVCache:
    """Keys and values (B, n_kv_heads, T, head_dim) of every layer, for unpadded rows (all rows decode in step)."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """Tokens cached (the next query's position)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def visibility(self, length: int, causal: bool, device: torch.device) -> Visibility:
        """What ``length`` new tokens see. The first pass (nothing cached) is the plain causal forward, the same
        kernels as without a cache; later ones need the explicit (new x all) mask."""
        if self.length == 0:
            return visibility(None, length, causal, device)
        return decoding_visibility(None, length, self.length, device)

    def slot(self, vis: Visibility, layer: int) -> Visibility:
        return replace(vis, cache=LayerSlot(self, layer))
