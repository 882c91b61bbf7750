"""R-Drop steps through a real DeepSpeed engine on every rank, and their plain-PyTorch references
(importable, so spawn finds them). The engine is the project's config (ZeRO stage, accumulation
steps, no clipping) with plain SGD at lr 1000, so one step moves every weight by exactly -lr x the
gradient DeepSpeed applied (as ``tests/support/contrastive_jobs.py: zero_engine_job``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from growth.config import load_config
from growth.data.mlm import IGNORE_INDEX
from growth.model import build_model
from growth.objectives.contrastive_losses import similarity_logits
from growth.objectives.rdrop import doubled, rdrop_contrastive_loss, rdrop_token_loss_sum
from tests.support.contrastive_jobs import SGD_LR, TEMPERATURE, loss_fn, micro_batches, random_examples
from tests.support.jobs import train_job

GLOBAL_BATCH, SEQ_LEN, VOCAB = 8, 16, 97


def token_batch(data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, labels) of the global batch: targets at ~30% of positions, so micro-batches differ in count."""
    gen = torch.Generator().manual_seed(data_seed)
    ids = torch.randint(5, VOCAB, (GLOBAL_BATCH, SEQ_LEN), generator=gen)
    chosen = torch.rand(ids.shape, generator=gen) < 0.3
    return ids, torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))


def rank_micro_batches(data_seed: int, sizes: Sequence[int], rank: int) -> list[dict[str, torch.Tensor]]:
    ids, labels = token_batch(data_seed)
    start, batches = rank * sum(sizes), []
    for size in sizes:
        batches.append({"input_ids": ids[start : start + size], "labels": labels[start : start + size]})
        start += size
    return batches


def case_config(model_overrides: list[str], case: dict):
    return load_config(
        overrides=[
            *model_overrides,
            f"train.zero_stage={case['stage']}",
            f"train.grad_accum={len(case['sizes'])}",
            f"train.micro_batch_size={max(case['sizes'])}",
            "train.grad_clip=0",
            f"train.rdrop_alpha={case['alpha']}",
        ]
    )


def sgd_step_gradients(world, config, model, step: Callable) -> tuple[object, dict[str, torch.Tensor], bool]:
    """Wrap ``model`` in a DeepSpeed engine with SGD, run ``step(engine)``: (its result, the gradients
    the step applied, whether it applied one)."""
    import deepspeed

    from growth.checkpoint import consolidated_state_dict
    from growth.train.engine import deepspeed_config

    ds = {**deepspeed_config(config.train, world.size), "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=SGD_LR), config=ds
    )
    engine.train()
    before = consolidated_state_dict(engine)
    result = step(engine)
    after = consolidated_state_dict(engine)
    applied = engine.was_step_applied()
    engine.destroy()
    return result, {name: (before[name] - after[name]) / SGD_LR for name in before}, applied


def token_cases_job(world, model_overrides: list[str], cases: list[dict]) -> list[dict]:
    """One R-Drop token step per case (``lm_module.engine_token_step``) from a per-rank seed."""
    from growth.distributed import all_reduce_sum
    from growth.train.lm_module import engine_token_step

    results = []
    for case in cases:
        config = case_config(model_overrides, case)
        torch.manual_seed(config.train.seed)
        model = build_model(config.model)
        batches = rank_micro_batches(case["data_seed"], case["sizes"], world.rank)
        torch.manual_seed(case["rank_seeds"][world.rank])
        (loss_sum, targets), grads, applied = sgd_step_gradients(
            world,
            config,
            model,
            partial(
                engine_token_step, micro_batches=batches, world_size=world.size, rdrop_alpha=case["alpha"]
            ),
        )
        loss = all_reduce_sum(loss_sum).item() / targets
        results.append({"loss": loss, "grads": grads, "applied": applied})
    return results


def contrastive_cases_job(world, model_overrides: list[str], cases: list[dict]) -> list[dict]:
    """One cached R-Drop step per case (``contrastive_module.engine_cached_step``, rdrop on)."""
    from growth.model.sentence_encoder import SentenceEncoder
    from growth.train.contrastive_module import engine_cached_step

    results = []
    for case in cases:
        config = case_config(model_overrides, case)
        torch.manual_seed(config.train.seed)
        model = SentenceEncoder(build_model(config.model))
        per_rank = sum(case["sizes"])
        examples = random_examples(per_rank * world.size, case["objective"], seed=case["data_seed"])
        batches = micro_batches(examples, case["sizes"], offset=world.rank * per_rank)
        torch.manual_seed(case["rank_seeds"][world.rank])
        loss, grads, applied = sgd_step_gradients(
            world,
            config,
            model,
            partial(
                engine_cached_step,
                micro_batches=batches,
                loss_fn=rdrop_loss(case["objective"], case["alpha"]),
                world_size=world.size,
                rdrop=True,
            ),
        )
        results.append({"loss": loss, "grads": grads, "applied": applied})
    return results


def rdrop_loss(objective: str, alpha: float):
    return rdrop_contrastive_loss(loss_fn(objective), similarity_logits(objective, TEMPERATURE), alpha)


def suite_job(world, model_overrides, token_cases, contrastive_cases, train_runs, result_file) -> None:
    """Everything one world size runs, in one set of processes (spawning and importing DeepSpeed once)."""
    results = {
        "token": token_cases_job(world, model_overrides, token_cases),
        "contrastive": contrastive_cases_job(world, model_overrides, contrastive_cases),
    }
    for overrides, train_file in train_runs:
        train_job(world, overrides, train_file)
    if world.is_main:
        torch.save(results, result_file)


# -- plain PyTorch references: the whole global batch's R-Drop loss, one backward --------------------
def token_reference(model, case: dict, world_size: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Σ over every rank's micro-batches of the R-Drop token sum / N, each forwarded as [x; x] in the
    ranks' order from the rank's seed (so dropout draws the masks the ranks drew); one backward."""
    model.zero_grad(set_to_none=True)
    _, labels = token_batch(case["data_seed"])
    targets = int((labels != IGNORE_INDEX).sum())
    total = torch.zeros(())
    for rank in range(world_size):
        torch.manual_seed(case["rank_seeds"][rank])
        for batch in rank_micro_batches(case["data_seed"], case["sizes"], rank):
            logits = model(doubled(batch["input_ids"]))
            total = total + rdrop_token_loss_sum(logits, batch["labels"], case["alpha"])
    loss = total / targets
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def contrastive_reference(model, case: dict, world_size: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The R-Drop contrastive loss of all ranks' rows, embedded as [x; x] in the ranks' order from
    their seeds; one backward."""
    model.zero_grad(set_to_none=True)
    per_rank = sum(case["sizes"])
    examples = random_examples(per_rank * world_size, case["objective"], seed=case["data_seed"])
    views = []
    for rank in range(world_size):
        torch.manual_seed(case["rank_seeds"][rank])
        for batch in micro_batches(examples, case["sizes"], offset=rank * per_rank):
            first, second = model(doubled(batch["input_ids"]), doubled(batch["attention_mask"])).chunk(2)
            views.append(torch.stack([first, second], dim=1))
    loss = rdrop_loss(case["objective"], case["alpha"])(torch.cat(views), None)
    loss.backward()
    grads = {
        n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }
    return loss.item(), grads
