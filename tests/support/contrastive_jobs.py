"""Shared pieces of the contrastive tests: random examples, the big-batch reference, and the job that
runs cached accumulation through a real DeepSpeed engine on every rank (importable, so spawn finds it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from growth.data.contrastive_batches import ContrastiveExamples
from growth.model import build_model
from growth.objectives.contrastive_losses import contrastive_loss

OBJECTIVES = ("simcse", "infonce", "cosent")
TEMPERATURE = 0.05


def random_examples(n: int, objective: str, seed: int, vocab: int = 97) -> ContrastiveExamples:
    """n examples of 2..12 random tokens (ids >= 5, so no special ids); CoSENT scores with ties. SimCSE
    on random sentences is trivial (two dropout views are far closer than any two sentences): its
    sentences use 3 token ids, so negatives are near-duplicates and the gradient is O(1)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = 8 if objective == "simcse" else vocab

    def sentence() -> list[int]:
        return torch.randint(
            5, vocab, (int(torch.randint(2, 13, (1,), generator=gen)),), generator=gen
        ).tolist()

    first = [sentence() for _ in range(n)]
    second = first if objective == "simcse" else [sentence() for _ in range(n)]
    scores = (torch.randint(0, 11, (n,), generator=gen) * 0.5).float() if objective == "cosent" else None
    return ContrastiveExamples(first, second, scores)


def micro_batches(
    examples: ContrastiveExamples, sizes: Sequence[int], offset: int = 0
) -> list[dict[str, torch.Tensor]]:
    batches, start = [], offset
    for size in sizes:
        batches.append(examples.batch(range(start, start + size)))
        start += size
    return batches


def loss_fn(objective: str):
    return contrastive_loss(objective, temperature=TEMPERATURE, cosent_scale=20.0)


def big_batch_reference(
    model, per_rank_batches: Sequence[Sequence[dict]], objective: str, rank_seeds: Sequence[int]
) -> tuple[float, dict[str, torch.Tensor]]:
    """One backward of the full-batch loss in plain PyTorch. Every rank's micro-batches are embedded
    with a graph in order from that rank's seed, so dropout draws the masks the ranks drew."""
    model.zero_grad(set_to_none=True)
    embeddings, scores = [], []
    for seed, batches in zip(rank_seeds, per_rank_batches):
        torch.manual_seed(seed)
        for batch in batches:
            embeddings.append(model.sentence_embedding(batch["input_ids"], batch["attention_mask"]))
            if "scores" in batch:
                scores.append(batch["scores"])
    loss = loss_fn(objective)(torch.cat(embeddings), torch.cat(scores) if scores else None)
    loss.backward()
    return loss.item(), gradients(model)


def gradients(model) -> dict[str, torch.Tensor]:
    """Every parameter's gradient; zero for those the embedding does not use (the LM head)."""
    return {
        n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }


SGD_LR = 1000.0


def zero_engine_job(world, model_overrides: list[str], cases: list[dict], result_file: str) -> None:
    """For each case: a DeepSpeed engine from the project's config (ZeRO stage, gradient_accumulation_steps
    = k micro-batches, no clipping) with plain SGD, so one optimizer step moves every weight by exactly
    -lr * gradient (lr 1000 keeps the readout's rounding, eps * |weight| / lr, far below 1e-6 of the
    gradient). One cached step from a per-rank seed; rank 0 saves gradients, loss and RNG check."""
    import deepspeed

    from growth.checkpoint import consolidated_state_dict
    from growth.config import load_config
    from growth.model.sentence_encoder import SentenceEncoder
    from growth.train.contrastive_module import engine_cached_step
    from growth.train.engine import deepspeed_config

    results = []
    for case in cases:
        config = load_config(
            overrides=[
                *model_overrides,
                f"train.zero_stage={case['stage']}",
                f"train.grad_accum={len(case['sizes'])}",
                "train.grad_clip=0",
                f"train.micro_batch_size={max(case['sizes'])}",
            ]
        )
        torch.manual_seed(config.train.seed)
        model = SentenceEncoder(build_model(config.model))
        ds = {**deepspeed_config(config.train, world.size), "zero_allow_untested_optimizer": True}
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=SGD_LR), config=ds
        )
        engine.train()
        before = consolidated_state_dict(engine)
        examples = random_examples(case["n"], case["objective"], seed=case["data_seed"])
        batches = micro_batches(examples, case["sizes"], offset=world.rank * (case["n"] // world.size))
        torch.manual_seed(case["rank_seeds"][world.rank])
        start = torch.get_rng_state()
        loss = engine_cached_step(
            engine, batches, loss_fn(case["objective"]), world.size, replay_rng=case["replay"]
        )
        after_step = torch.get_rng_state()
        after = consolidated_state_dict(engine)
        torch.set_rng_state(start)
        with torch.no_grad():  # one forward per micro-batch, for the RNG check
            for batch in batches:
                engine(batch["input_ids"], batch["attention_mask"])
        results.append(
            {
                "loss": loss,
                "grads": {name: (before[name] - after[name]) / SGD_LR for name in before},
                "rng_continues": torch.equal(after_step, torch.get_rng_state()),
                "applied": engine.was_step_applied(),
                "global_steps": engine.global_steps,
            }
        )
        engine.destroy()
    if world.is_main:
        torch.save(results, result_file)


def resume_job(world, overrides: list[str], root: str, result_file: str) -> None:
    """Train 4 steps; then resume a copy from its step-2 checkpoint (as if killed during step 3)."""
    import shutil
    from pathlib import Path

    from growth.config import load_config
    from growth.distributed import barrier
    from growth.train.run import train

    full, resumed = Path(root) / "full", Path(root) / "resumed"
    full_losses = train(load_config(overrides=[*overrides, f"train.out_dir={full}"]), world).losses
    if world.is_main:
        shutil.copytree(full, resumed)
        shutil.rmtree(resumed / "checkpoints/step_00000004")
        (resumed / "checkpoints/latest").write_text("step_00000002")
    barrier()
    resumed_losses = train(load_config(overrides=[*overrides, f"train.out_dir={resumed}"]), world).losses
    if world.is_main:
        torch.save({"full": full_losses, "resumed": resumed_losses}, result_file)


def distributed_suite_job(
    world, model_overrides, cases, result_file, resume_overrides, resume_root, resume_file
) -> None:
    """Both distributed jobs in one set of processes (spawning and importing DeepSpeed once)."""
    zero_engine_job(world, model_overrides, cases, result_file)
    resume_job(world, resume_overrides, resume_root, resume_file)
