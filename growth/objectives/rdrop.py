"""R-Drop (Liang et al., NeurIPS 2021, "R-Drop: Regularized Dropout for Neural Networks"; dropreg/R-Drop).

Every input goes through the network twice with independent dropout masks, as one forward of the
doubled batch ``[x; x]`` (the reference's ``sample_concat``: one launch per layer, and the two halves
draw different masks from the one dropout call). With the two predictive distributions p and q
(paper Eq. 2-3):

    L = ½ [CE(p) + CE(q)] + α · ½ [KL(p‖q) + KL(q‖p)]

and ½ [KL(p‖q) + KL(q‖p)] = ½ Σ_j (p_j − q_j)(log p_j − log q_j), symmetric by construction.

Token LM: p and q are the next-token (or masked-token) distributions at each *target* token; CE and KL
are both summed over target tokens here and divided by the global target count by the caller
(``token_loss.py``), so they share one scale (a pitfall in the reference's examples, which mix sums and
means) and accumulation stays exact. Contrastive: p and q are the rows of the similarity matrix the
objective's cross-entropy reads (softmax over candidates), averaged over rows as the CE is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from growth.data.mlm import IGNORE_INDEX
from growth.objectives.contrastive_losses import LossFn
from growth.objectives.token_loss import token_loss_sum

# The second forward: a step with R-Drop runs every example through the network twice.
RDROP_COPIES = 2


def forward_copies(alpha: float) -> int:
    """Forwards per example in a training step (for the FLOPs count): 2 with R-Drop, else 1."""
    return RDROP_COPIES if alpha > 0 else 1


def doubled(x: torch.Tensor) -> torch.Tensor:
    """``[x; x]`` along the batch: rows i and B + i are the two dropout passes of example i."""
    return torch.cat([x, x])


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """½ [KL(p‖q) + KL(q‖p)] per row (summed over the last dim), p = softmax(logits_p), in fp32.

    Entries whose logit is -inf in both (SimCSE's excluded self-similarity) have p = q = 0 and add 0;
    their logs are zeroed before the product so 0 · (-inf) never reaches the values or the gradients."""
    log_p, log_q = F.log_softmax(logits_p.float(), -1), F.log_softmax(logits_q.float(), -1)
    excluded = ~(torch.isfinite(log_p) & torch.isfinite(log_q))
    p, q = log_p.exp(), log_q.exp()
    difference = (log_p - log_q).masked_fill(excluded, 0.0)
    return 0.5 * ((p - q) * difference).sum(-1)


def rdrop_token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """R-Drop's loss *sum* over the target tokens of one micro-batch.

    ``logits`` (2B, T, V) come from the doubled batch ``[x; x]``, ``labels`` (B, T) from x. Returns
    ½ (CE sum of pass 1 + CE sum of pass 2) + α Σ_targets ½ [KL(p‖q) + KL(q‖p)]; divided by the global
    target count it is the token mean of the R-Drop loss (``token_loss.backward_scale``)."""
    first, second = logits.float().chunk(2)
    cross_entropy = 0.5 * (token_loss_sum(first, labels) + token_loss_sum(second, labels))
    targets = labels != IGNORE_INDEX
    return cross_entropy + alpha * symmetric_kl(first[targets], second[targets]).sum()


Similarity = Callable[[torch.Tensor], torch.Tensor]


def rdrop_contrastive_loss(loss_fn: LossFn, similarity: Similarity, alpha: float) -> LossFn:
    """R-Drop over a contrastive objective, for cached accumulation: the loss of ``views`` (rows, 2, d),
    each row's two dropout passes side by side, is ½ [L(pass 1) + L(pass 2)] + α · mean over the rows of
    ``similarity`` (the objective's logits) of ½ [KL(p‖q) + KL(q‖p)]."""

    def loss(views: torch.Tensor, scores: torch.Tensor | None) -> torch.Tensor:
        first, second = views[:, 0], views[:, 1]
        contrastive = 0.5 * (loss_fn(first, scores) + loss_fn(second, scores))
        return contrastive + alpha * symmetric_kl(similarity(first), similarity(second)).mean()

    return loss
