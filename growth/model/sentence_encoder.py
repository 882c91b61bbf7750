"""A GrowthLM's trunk with pooling on top, for contrastive objectives.

It *shares* the LM's modules (embedding, layers, final norm) under the same attribute names, so its
parameters carry the LM's parameter names and a checkpoint of it is a checkpoint of the LM. The LM
head is not a submodule: it gets no gradient here, so it stays out of the optimizer (no weight
decay on a zero gradient) and out of ZeRO partitioning.
"""

from __future__ import annotations

import torch
from torch import nn

from growth.model.heads import pool
from growth.model.transformer import GrowthLM


class SentenceEncoder(nn.Module):
    def __init__(self, lm: GrowthLM):
        super().__init__()
        self.config, self.causal = lm.config, lm.causal
        self.embed, self.embed_dropout, self.layers, self.final_norm = (
            lm.embed,
            lm.embed_dropout,
            lm.layers,
            lm.final_norm,
        )
        self._lm = (lm,)  # a tuple, so the LM (and its head) is not registered as a submodule

    @property
    def lm(self) -> GrowthLM:
        return self._lm[0]

    def head_tensors(self) -> dict[str, torch.Tensor]:
        """The head's tensors under the LM's names (for a tied head: the shared embedding)."""
        return {f"head.{name}": t for name, t in self.lm.head.state_dict(keep_vars=True).items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled (B, d) embeddings (``model.pooling``: mean | first)."""
        hidden = GrowthLM.hidden_states(
            self, input_ids, attention_mask
        )  # the LM's trunk, on the shared modules
        return pool(hidden, attention_mask, self.config.pooling)

    def num_params(self, embeddings: bool = True) -> int:
        return self.lm.num_params(embeddings)

    def flops_per_token(self, seq_len: int) -> float:
        return self.lm.flops_per_token(seq_len)
