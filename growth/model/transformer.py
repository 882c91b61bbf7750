"""The stack: token embedding -> N residual layers -> (final norm) -> LM head.

A layer is either a standard block (attention and FFN, each in its own residual) or one GAU unit
in a single residual. Which one, and every block inside, is chosen by strings in ``ModelConfig``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from growth.config import ModelConfig
from growth.model import accounting
from growth.model.attention import MultiHeadAttention
from growth.model.ffn import build_ffn
from growth.model.gau import GatedAttentionUnit
from growth.model.heads import LMHead, pool
from growth.model.mask import Visibility, visibility
from growth.model.norm import build_norm
from growth.model.residual import Residual, deepnorm_constants, deepnorm_depth


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention = Residual(MultiHeadAttention(config), config)
        self.ffn = Residual(build_ffn(config), config)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        return self.ffn(self.attention(x, vis))


class GAUBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gau = Residual(GatedAttentionUnit(config), config)

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        return self.gau(x, vis)


class GrowthLM(nn.Module):
    """``model(input_ids, attention_mask=None)`` -> logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.causal = config.objective == "clm"
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_dropout = nn.Dropout(config.dropout)
        block = GAUBlock if config.layer == "gau" else TransformerBlock
        self.layers = nn.ModuleList(block(config) for _ in range(config.n_layers))
        # Post-LN and DeepNorm already end every layer in a norm; only Pre-LN needs a final one.
        self.final_norm = (
            build_norm(config.norm, config.d_model, config.norm_eps) if config.residual == "pre" else nn.Identity()
        )
        self.head = LMHead(config.d_model, config.vocab_size, self.embed if config.tie_embeddings else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style N(0, init_std), writers scaled by 1/sqrt(2L); DeepNorm: Xavier with gain beta
        on the value path and gain 1 on q/k (DeepNet, Sec. 3)."""
        config = self.config
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.init_std)
        beta = deepnorm_constants(deepnorm_depth(config))[1]
        for residual in self._residuals():
            sublayer = residual.sublayer
            for name, linear in sublayer.named_children():
                if not isinstance(linear, nn.Linear):
                    continue
                if config.residual == "deepnorm":
                    nn.init.xavier_normal_(linear.weight, gain=beta if name in sublayer.value_path else 1.0)
                elif name in sublayer.writers:
                    nn.init.normal_(linear.weight, std=config.init_std / math.sqrt(2 * config.n_layers))

    def _residuals(self) -> list[Residual]:
        return [m for m in self.modules() if isinstance(m, Residual)]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        vis = visibility(attention_mask, input_ids.shape[1], self.causal, input_ids.device)
        x = self.embed_dropout(self.embed(input_ids))
        for layer in self.layers:
            x = layer(x, vis)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids, attention_mask))

    def sentence_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled (B, d) embedding for contrastive objectives (``model.pooling``: mean | first)."""
        return pool(self.hidden_states(input_ids, attention_mask), attention_mask, self.config.pooling)

    def num_params(self, embeddings: bool = True) -> int:
        return accounting.num_params(self, embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        return accounting.flops_per_token(self.config, seq_len)
