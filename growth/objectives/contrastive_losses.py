"""Contrastive losses of a whole batch of sentence embeddings, as pure functions.

Layout (``growth/data/contrastive_batches.py``): rows 2i and 2i+1 of ``embeddings`` (2N, d) are the
two sentences of example i. Each loss couples every row with every other one, which is why
accumulating it over micro-batches needs ``cached_accumulation.py``. Computed in fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from growth.registry import Registry

LossFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def simcse_loss(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE (Gao, Yao & Chen 2021, Eq. 1) over all 2N views, as in Su's bert4keras
    version: rows 2i, 2i+1 are two dropout views of sentence i; each view's positive is its twin and
    the other 2N - 2 views are its negatives. Mean over the 2N rows of
        -log exp(cos(h, h+)/tau) / sum_{h' != h} exp(cos(h, h')/tau)."""
    twin = torch.arange(embeddings.shape[0], device=embeddings.device) ^ 1  # 0 <-> 1, 2 <-> 3, ...
    return F.cross_entropy(simcse_logits(embeddings, temperature), twin)


def simcse_logits(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """(2N, 2N) cos(h, h')/tau of every view against every other; a view against itself is -inf."""
    logits = cosine_matrix(embeddings, embeddings) / temperature
    self_mask = torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
    return logits.masked_fill(self_mask, float("-inf"))


def pair_logits(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, N) cos(a_i, b_j)/tau of the first sentences (rows 2i) against the second ones (rows 2j+1)."""
    return cosine_matrix(embeddings[0::2], embeddings[1::2]) / temperature


def simcse_paper_loss(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE exactly as Gao, Yao & Chen 2021, Eq. 1: the N first views h_i (rows 2i) are
    the anchors, the N second views h_j+ (rows 2j+1) the candidates, one direction. Mean over N of
        -log exp(cos(h_i, h_i+)/tau) / sum_j exp(cos(h_i, h_j+)/tau).
    (The same arithmetic as InfoNCE over pairs; here the pair is one sentence under two dropout masks.)"""
    logits = pair_logits(embeddings, temperature)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=embeddings.device))


# ``contrastive.simcse_variant``: symmetric (the default, Su's 2N-view form above) | paper (Eq. 1).
SIMCSE_VARIANTS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "symmetric": simcse_loss,
    "paper": simcse_paper_loss,
}
# The similarity logits whose row softmax each form's cross-entropy reads (R-Drop compares them).
SIMCSE_LOGITS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "symmetric": simcse_logits,
    "paper": pair_logits,
}


def infonce_loss(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised InfoNCE with in-batch negatives (van den Oord et al. 2018; the paired form of
    supervised SimCSE without hard negatives): anchor a_i against all b_j, positive b_i. Mean over N of
        -log exp(cos(a_i, b_i)/tau) / sum_j exp(cos(a_i, b_j)/tau)."""
    logits = pair_logits(embeddings, temperature)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=embeddings.device))


def cosent_loss(embeddings: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT (Su 2022, "CoSENT（一）"): for every two pairs with gold y_i > y_j, pair i should have the
    higher cosine:  log(1 + sum_{y_i > y_j} exp(lambda (cos_j - cos_i))),  lambda = ``scale`` (20).
    A sum over all ordered pairs of the batch: it is not a mean of per-example terms."""
    cos = F.cosine_similarity(embeddings[0::2].float(), embeddings[1::2].float(), dim=-1)
    margins = scale * (cos[None, :] - cos[:, None])  # [i, j] = lambda (cos_j - cos_i)
    ordered = scores[:, None] > scores[None, :]  # [i, j]: y_i > y_j
    zero = torch.zeros(1, dtype=margins.dtype, device=margins.device)  # the "1 +" inside the log
    return torch.logsumexp(torch.cat([zero, margins[ordered]]), dim=0)


# ``contrastive.objective``: each entry makes ``loss(embeddings, scores)`` from the objective's knobs.
# (``none``, token pretraining only, is a config value, not a loss.)
LossFactory = Callable[[float, float, str], LossFn]
CONTRASTIVE_LOSSES: Registry[LossFactory] = Registry("contrastive.objective")


@CONTRASTIVE_LOSSES.register("simcse")
def _simcse(temperature: float, cosent_scale: float, simcse_variant: str) -> LossFn:
    loss = SIMCSE_VARIANTS[simcse_variant]
    return lambda embeddings, scores: loss(embeddings, temperature)


@CONTRASTIVE_LOSSES.register("infonce")
def _infonce(temperature: float, cosent_scale: float, simcse_variant: str) -> LossFn:
    return lambda embeddings, scores: infonce_loss(embeddings, temperature)


@CONTRASTIVE_LOSSES.register("cosent")
def _cosent(temperature: float, cosent_scale: float, simcse_variant: str) -> LossFn:
    return lambda embeddings, scores: cosent_loss(embeddings, scores, cosent_scale)


def contrastive_loss(
    objective: str, temperature: float = 0.05, cosent_scale: float = 20.0, simcse_variant: str = "symmetric"
) -> LossFn:
    """``loss(embeddings, scores)`` of the objective named in ``contrastive.objective``
    (``simcse_variant`` picks SimCSE's form: ``contrastive.simcse_variant``)."""
    if simcse_variant not in SIMCSE_VARIANTS:
        raise ValueError(
            f"simcse_variant must be one of {' | '.join(SIMCSE_VARIANTS)}, got {simcse_variant!r}"
        )
    return CONTRASTIVE_LOSSES.get(objective)(temperature, cosent_scale, simcse_variant)


def similarity_logits(
    objective: str, temperature: float = 0.05, simcse_variant: str = "symmetric"
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``logits(embeddings)``: the rows of candidates' similarity logits whose softmax the objective's
    cross-entropy reads (R-Drop's KL compares them, ``rdrop.py``). None for CoSENT: it ranks pair
    cosines against each other and has no distribution per sentence."""
    if objective == "simcse":
        form = SIMCSE_LOGITS[simcse_variant]
    elif objective == "infonce":
        form = pair_logits
    else:
        return None
    return lambda embeddings: form(embeddings, temperature)
