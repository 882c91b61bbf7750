"""STS metric: Spearman correlation between the cosine of pooled embeddings and gold scores.

Spearman's rho is Pearson's r of the ranks, ties given their average rank (STS-B scores tie a lot).
Used by the contrastive module (``val/spearman``) and ``growth/eval/sts.py`` on a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from growth.data.contrastive_batches import ContrastiveExamples

Embed = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n in float64, tied values sharing the mean of their ranks."""
    values = values.double().flatten()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    _, group = torch.unique(values, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, ranks)
    return (sums / torch.bincount(group).double())[group]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


@torch.no_grad()
def pair_cosines(embed: Embed, examples: ContrastiveExamples, rows_per_batch: int = 64) -> torch.Tensor:
    """cos(a_i, b_i) for every example, embedding ``rows_per_batch`` sentences at a time."""
    per_batch = max(1, rows_per_batch // 2)
    cosines = []
    for start in range(0, len(examples), per_batch):
        embeddings = embed(examples.batch(range(start, min(start + per_batch, len(examples))))).float()
        cosines.append(F.cosine_similarity(embeddings[0::2], embeddings[1::2], dim=-1).cpu())
    return torch.cat(cosines)


def sts_spearman(embed: Embed, examples: ContrastiveExamples, rows_per_batch: int = 64) -> float:
    return spearman(pair_cosines(embed, examples, rows_per_batch), examples.scores)
