"""Token losses normalised over the whole accumulated global batch (docs/design.md Sec. 5).

With micro-batches of unequal target counts, the mean of per-micro-batch means is wrong. The
gradient we want is grad( sum of token losses / N ), N = target tokens in all micro-batches on all
ranks. Each rank back-propagates  sum_local * world / N : DeepSpeed averages gradients over the
world (the factor ``world`` undoes that), and we call ``backward(scale_wrt_gas=False)`` so its
division by the accumulation steps is not applied on top.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from growth.data.mlm import IGNORE_INDEX


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of cross-entropy over target tokens, in fp32."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def window_loss_means(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over each window's (row's) target tokens, in fp32: the samples whose spread gives the
    validation loss its standard error."""
    losses = F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return losses.sum(1) / (labels != IGNORE_INDEX).sum(1).clamp(min=1)


def standard_error(count: torch.Tensor, total: torch.Tensor, total_squares: torch.Tensor) -> float:
    """Standard error of a mean from its samples' count, sum and sum of squares (0 below two samples)."""
    n = float(count)
    if n < 2:
        return 0.0
    variance = max(float(total_squares) - float(total) ** 2 / n, 0.0) / (n - 1)
    return math.sqrt(variance / n)


def target_count(labels: torch.Tensor) -> int:
    return int((labels != IGNORE_INDEX).sum())


def backward_scale(world_size: int, global_targets: int) -> float:
    """Factor turning a rank's local loss *sum* into its share of the global token-mean gradient."""
    return world_size / max(global_targets, 1)
