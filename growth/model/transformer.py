"""The stack: token embedding -> N residual layers -> (final norm) -> LM head.

A layer is a layer kind (``model.layer``, ``layer_kind.py``): a standard block (attention and FFN, each in
its own residual; ``transformer_layer.py``) or one GAU unit in a single residual (``gau.py``). Which one,
and every block inside, is chosen by strings in ``ModelConfig``.
"""

from __future__ import annotations

import torch
from torch import nn

from growth.model import accounting
from growth.model.config import ModelConfig
from growth.model.heads import LMHead, pool
from growth.model.kv_cache import KVCache, supports_kv_cache
from growth.model.layer_kind import LAYERS
from growth.model.mask import OBJECTIVES, visibility
from growth.model.norm import build_norm
from growth.model.residual import RESIDUALS, Residual


def initialize(root: nn.Module, config: ModelConfig) -> None:
    """N(0, init_std) everywhere, then each residual kind re-initialises its sublayer (GPT-2
    scaled writers, or DeepNorm's Xavier with gain beta; see ``residual.py``)."""
    for module in root.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:  # q/k/v biases (model.qkv_bias)
            nn.init.zeros_(module.bias)
    for residual in [m for m in root.modules() if isinstance(m, Residual)]:
        residual.reset_sublayer(config)


def init_layer(config: ModelConfig) -> nn.Module:
    """One layer, initialised as a layer of a ``config.n_layers``-deep GrowthLM is (the depth sets the
    GPT-2 writer scale and DeepNorm's alpha and beta): a new layer of depth growth."""
    layer = LAYERS.get(config.layer)(config)
    initialize(layer, config)
    return layer


# Depth growth's ramp (growth/expand/width.py, growth/train/callbacks/depth_ramp.py): a new layer L computes
# h <- m L(h) + (1 - m) h, with m a non-persistent 0-dim buffer (not in the state dict; torch.compile sees a
# tensor, so changing m recompiles nothing). m = 0 is the identity; at m = 1 the gate is folded away.
def set_depth_gate(layers: nn.ModuleList, index: int, m: float) -> None:
    layer = layers[index]
    gate = getattr(layer, "depth_gate", None)
    if gate is None:
        device = next(layer.parameters()).device
        layer.register_buffer(
            "depth_gate", torch.tensor(float(m), dtype=torch.float32, device=device), persistent=False
        )
    else:
        gate.fill_(float(m))


def fold_depth_gate(layers: nn.ModuleList, index: int) -> None:
    """m = 1: the layer is a plain layer again (nothing of the gate is left)."""
    layer = layers[index]
    if getattr(layer, "depth_gate", None) is not None:
        del layer._buffers["depth_gate"]


def depth_gates(layers: nn.ModuleList) -> dict[int, float]:
    """{layer index: m} of the layers being ramped in."""
    return {
        i: float(layer.depth_gate)
        for i, layer in enumerate(layers)
        if getattr(layer, "depth_gate", None) is not None
    }


class GrowthLM(nn.Module):
    """``model(input_ids, attention_mask=None)`` -> logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.causal = OBJECTIVES.get(config.objective).causal
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_dropout = nn.Dropout(config.dropout)
        block = LAYERS.get(config.layer)
        self.layers = nn.ModuleList(block(config) for _ in range(config.n_layers))
        # Post-LN and DeepNorm already end every layer in a norm; only Pre-LN needs a final one.
        self.final_norm = (
            nn.Identity()
            if RESIDUALS.get(config.residual).norm_after_add
            else build_norm(config.norm, config.d_model, config.norm_eps)
        )
        self.head = LMHead(config.d_model, config.vocab_size, self.embed if config.tie_embeddings else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize(self, self.config)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """With ``cache`` (decoding, ``kv_cache.py``): ``input_ids`` are the tokens after the cached ones, and
        their keys/values are appended to it."""
        if cache is None:
            vis = visibility(attention_mask, input_ids.shape[1], self.causal, input_ids.device)
        elif supports_kv_cache(self.config):
            vis = cache.visibility(input_ids.shape[1], self.causal, input_ids.device)
        else:  # a GAU unit would ignore the cache and attend to the new tokens alone
            raise ValueError(
                f"model.layer={self.config.layer}, model.objective={self.config.objective}: no KV cache"
            )
        x = self.embed_dropout(self.embed(input_ids))
        for index, layer in enumerate(self.layers):
            out = layer(x, vis if cache is None else cache.slot(vis, index))
            gate = getattr(layer, "depth_gate", None)  # a layer being ramped in by depth growth
            x = out if gate is None else gate.to(out.dtype) * out + (1 - gate.to(out.dtype)) * x
        return self.final_norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids, attention_mask, cache))

    def sentence_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pooled (B, d) embedding for contrastive objectives (``model.pooling``: mean | first)."""
        return pool(self.hidden_states(input_ids, attention_mask), attention_mask, self.config.pooling)

    def num_params(self, embeddings: bool = True) -> int:
        return accounting.num_params(self, embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        return accounting.flops_per_token(self.config, seq_len)
