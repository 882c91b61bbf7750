"""Exact gradient accumulation for losses that couple the whole batch: cached two-pass accumulation
(Su, "对比学习可以使用梯度累积吗?", 2021; GradCache, L. Gao, Zhang, Han & Callan 2021).

Let e_1, ..., e_k be the embeddings of k micro-batches and L(e_1, ..., e_k) a loss of the whole
batch (SimCSE, InfoNCE, CoSENT). By the chain rule

    dL/dθ = Σ_m (∂e_m/∂θ)ᵀ g_m,     g_m = ∂L/∂e_m,

so: pass 1 embeds every micro-batch without a graph (memory of one micro-batch) and records the RNG
state before each; L and the g_m come from those embeddings alone; pass 2 re-embeds micro-batch m
*with* a graph under its recorded RNG state (dropout draws the same masks, so e_m is reproduced bit
for bit; for SimCSE the dropout noise is the positive pair itself) and back-propagates the
surrogate ⟨e_m, g_m⟩, whose parameter gradient is exactly the m-th term of the sum. Afterwards the
RNG continues from where pass 1 left it, so the step consumes the random stream as one forward per
micro-batch would.

Across ranks the embeddings are all-gathered so negatives span the global batch: every rank computes
the same global L and keeps the rows of g that belong to its own embeddings, so its parameter
gradient is its share of dL/dθ and the shares sum to the whole. A backend that averages gradients
over W ranks (DeepSpeed) gets the surrogate multiplied by W (``grad_scale``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

Batch = dict[str, torch.Tensor]


def rng_state() -> dict[str, torch.Tensor]:
    """The generators dropout draws from: the CPU one, and the current CUDA device's if there is one."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows in rank order (equal row counts on all ranks). The other ranks' rows are
    constants; this rank's slice is ``local`` itself, so gradients flow back to it."""
    rank, world = _world()
    if world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)


def batch_gradient(
    local: torch.Tensor,
    local_scores: torch.Tensor | None,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(global loss, ∂loss/∂local): the loss of all ranks' rows, differentiated w.r.t. this rank's."""
    local = local.detach().float().requires_grad_(True)
    scores = gather_rows(local_scores) if local_scores is not None else None
    with torch.enable_grad():
        loss = loss_fn(gather_rows(local), scores)
        (grad,) = torch.autograd.grad(loss, local)
    return loss.detach(), grad


def cached_step(
    micro_batches: Sequence[Batch],
    embed: Callable[[Batch], torch.Tensor],
    backward: Callable[[torch.Tensor], Any],
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    grad_scale: float = 1.0,
    after_backward: Callable[[], Any] = lambda: None,
    replay_rng: bool = True,
) -> float:
    """One optimizer step's gradient of ``loss_fn`` over all micro-batches (and ranks); returns the loss.

    ``embed(batch)`` -> (rows, d) embeddings in training mode; ``backward(scalar)`` back-propagates
    (``engine.backward(x, scale_wrt_gas=False)`` or ``x.backward()``); ``after_backward`` runs after
    each micro-batch (``engine.step``, which applies the update at the accumulation boundary only).
    ``replay_rng=False`` re-embeds under fresh dropout masks: wrong, kept as the tests' negative control.
    """
    states, embeddings = [], []
    with torch.no_grad():  # pass 1: embeddings only, no activations kept
        for batch in micro_batches:
            states.append(rng_state())
            embeddings.append(embed(batch).detach().float())
    after_pass1 = rng_state()
    scores = (
        [b["scores"].to(embeddings[0].device) for b in micro_batches]
        if "scores" in micro_batches[0]
        else None
    )
    loss, grad = batch_gradient(torch.cat(embeddings), torch.cat(scores) if scores else None, loss_fn)
    cached = grad.split([e.shape[0] for e in embeddings])
    for batch, state, g in zip(micro_batches, states, cached):  # pass 2: one micro-batch's graph at a time
        if replay_rng:
            set_rng_state(state)
        surrogate = (embed(batch).float() * g).sum() * grad_scale  # d/dθ = (∂e_m/∂θ)ᵀ g_m · grad_scale
        backward(surrogate)
        after_backward()
    if replay_rng:
        set_rng_state(after_pass1)
    return loss.item()
