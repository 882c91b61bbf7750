"""Output heads on the final hidden states: token logits (CLM/MLM) and pooled sentence embeddings."""

from __future__ import annotations

import torch
from torch import nn

from growth.registry import Registry


class LMHead(nn.Module):
    """hidden -> vocabulary logits; with ``tie_to`` the weight is the input embedding matrix."""

    def __init__(self, d_model: int, vocab_size: int, tie_to: nn.Embedding | None = None):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=False)
        if tie_to is not None:
            self.proj.weight = tie_to.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)


# ``model.pooling``: each entry maps (B, T, d) hidden states and the (B, T) mask (or None) to (B, d).
POOLINGS: Registry = Registry("model.pooling")


@POOLINGS.register("mean")
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens (padding carries no weight)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@POOLINGS.register("first")
def first_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return hidden[:, 0]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Sentence embedding from (B, T, d) hidden states, pooled the way ``kind`` names."""
    return POOLINGS.get(kind)(hidden, attention_mask)
