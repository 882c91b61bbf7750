"""Contrastive benchmarks: what cached accumulation costs and saves, and CoSENT against InfoNCE.

1. Memory and time per optimizer step, CoSENT on a global batch of 512 sentences (256 scored pairs):
   cached two-pass accumulation over micro-batches of 32 sentences against one batch of 512. Each
   variant runs in a fresh process (``python -m growth.bench.contrastive``, one thread) that reports
   its peak RSS above the RSS before the first step (``ru_maxrss``: torch's allocations are invisible
   to tracemalloc) and the median seconds per step. Dropout 0, so both variants' first-step
   gradients must agree; their largest difference is reported.
2. Fine-tuning: the pretrained default model fine-tuned on STS-B train with CoSENT and with InfoNCE
   (pairs scored >= 4 as positives) through ``launch/pretrain.py``, the same steps, batch and
   schedule; Spearman on STS-B dev (raw and EMA weights) from ``tools/eval_sts.py``'s function.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from growth.bench.harness import run_python, train
from growth.bench.plotting import figure, save_figure


# -- 1. memory and time, one variant per process ---------------------------------------------------
def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def synthetic_pairs(pairs: int, vocab: int, min_len: int, max_len: int, seed: int):
    """Scored pairs of random sentences (ids >= 5) with lengths uniform in [min_len, max_len]."""
    from growth.data.contrastive_batches import ContrastiveExamples

    gen = torch.Generator().manual_seed(seed)

    def sentence() -> list[int]:
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=gen))
        return torch.randint(5, vocab, (length,), generator=gen).tolist()

    first, second = [sentence() for _ in range(pairs)], [sentence() for _ in range(pairs)]
    return ContrastiveExamples(first, second, torch.randint(0, 26, (pairs,), generator=gen).float() / 5)


def run_variant(
    variant: str, sentences: int, micro_sentences: int, steps: int, seed: int, grads_out: str
) -> dict:
    """One process, one variant: ``cached`` (micro-batches of ``micro_sentences``) or ``full``."""
    from growth.config import load_config
    from growth.model import build_model
    from growth.objectives.cached_accumulation import cached_step
    from growth.objectives.contrastive_losses import cosent_loss

    torch.set_num_threads(1)
    config = load_config(overrides=["model.dropout=0.0"])
    torch.manual_seed(seed)
    model = build_model(config.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    examples = synthetic_pairs(sentences // 2, config.model.vocab_size, 16, 48, seed)
    per_micro = micro_sentences // 2 if variant == "cached" else sentences // 2
    batches = [examples.batch(range(i, i + per_micro)) for i in range(0, len(examples), per_micro)]

    def embed(batch):
        return model.sentence_embedding(batch["input_ids"], batch["attention_mask"])

    def loss_fn(embeddings, scores):
        return cosent_loss(embeddings, scores, 20.0)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        if variant == "cached":
            loss = cached_step(batches, embed, lambda s: s.backward(), loss_fn)
        else:
            loss_tensor = loss_fn(embed(batches[0]), batches[0]["scores"])
            loss_tensor.backward()
            loss = loss_tensor.item()
        return loss

    baseline = current_rss_bytes()
    first_loss = step()
    torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, grads_out)
    optimizer.step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "micro_batches": len(batches),
        "sentences": sentences,
        "first_loss": first_loss,
        "peak_rss_increase_mb": (peak_rss_bytes() - baseline) / 2**20,
        "seconds_per_step": statistics.median(seconds),
        "step_seconds": seconds,
    }


def memory_and_time(
    out: Path, sentences: int = 512, micro_sentences: int = 32, steps: int = 4, seed: int = 0
) -> dict:
    results = {}
    for variant in ("full", "cached"):
        grads_out = str(out / f"grads_{variant}.pt")
        settings = dict(variant=variant, sentences=sentences, micro_sentences=micro_sentences, steps=steps)
        settings = json.dumps({**settings, "seed": seed, "grads_out": grads_out})
        results[variant] = run_python(["-m", "growth.bench.contrastive", settings], threads=1)
    full, cached = (torch.load(out / f"grads_{v}.pt") for v in ("full", "cached"))
    scale = max(g.abs().max().item() for g in full.values())
    difference = max((full[k] - cached[k]).abs().max().item() for k in full)
    for variant in ("full", "cached"):
        (out / f"grads_{variant}.pt").unlink()
    return {
        **results,
        "memory_ratio": results["cached"]["peak_rss_increase_mb"] / results["full"]["peak_rss_increase_mb"],
        "time_ratio": results["cached"]["seconds_per_step"] / results["full"]["seconds_per_step"],
        "max_grad_difference": difference,
        "max_grad": scale,
        "loss_difference": abs(results["cached"]["first_loss"] - results["full"]["first_loss"]),
    }


# -- 2. fine-tuning CoSENT vs InfoNCE ----------------------------------------------------------------
def fine_tuning(
    out: Path,
    checkpoint: Path | None,
    steps: int,
    pretrain_steps: int,
    n_procs: int = 2,
    micro_pairs: int = 32,
    lr: float = 3e-4,
) -> dict:
    from growth.eval.sts import evaluate_checkpoint

    timings = {}
    if checkpoint is None:
        checkpoint = out / "pretrain"
        start = time.perf_counter()
        steps_flags = ("max_steps", "save_interval", "eval_interval")
        train(
            checkpoint,
            [f"train.{flag}={pretrain_steps}" for flag in steps_flags],
            n_procs=n_procs,
            port=29710,
        )
        timings["pretrain_seconds"] = time.perf_counter() - start
    results = {
        "checkpoint": str(checkpoint),
        "pretrained": evaluate_checkpoint(checkpoint, "bundled:sts-dev"),
    }
    recipe = [
        f"train.init_from={checkpoint}",
        f"train.max_steps={steps}",
        f"train.micro_batch_size={micro_pairs}",
        "train.grad_accum=1",
        f"train.lr={lr}",
        f"train.warmup_steps={max(1, steps // 10)}",
        "train.ema_decay=0.99",
        f"train.eval_interval={steps}",
        f"train.save_interval={steps}",
        "model.dropout=0.1",
        "contrastive.eval_data=",
    ]  # Spearman is measured once, below, on the saved checkpoint
    for index, objective in enumerate(("cosent", "infonce")):
        run = out / f"finetune_{objective}"
        start = time.perf_counter()
        train(run, [*recipe, f"contrastive.objective={objective}"], n_procs=n_procs, port=29720 + index)
        timings[f"{objective}_seconds"] = time.perf_counter() - start
        results[objective] = evaluate_checkpoint(run, "bundled:sts-dev")
    return {**results, "recipe": recipe, "pairs_per_step": micro_pairs * n_procs, "ranks": n_procs, **timings}


def plot(record: dict, path: Path) -> None:
    fig, axes = figure(3, width=4, height=3.6)
    mt = record["memory_time"]
    labels = ["1 x 512", f"{mt['cached']['micro_batches']} x 32 cached"]
    axes[0].bar(
        labels,
        [mt["full"]["peak_rss_increase_mb"], mt["cached"]["peak_rss_increase_mb"]],
        color=["grey", "tab:blue"],
    )
    axes[0].set_title(f"peak memory, MB (ratio {mt['memory_ratio']:.3f})")
    axes[1].bar(
        labels, [mt["full"]["seconds_per_step"], mt["cached"]["seconds_per_step"]], color=["grey", "tab:blue"]
    )
    axes[1].set_title(f"seconds / step (ratio {mt['time_ratio']:.2f})")
    if "fine_tuning" in record:
        ft = record["fine_tuning"]
        names = ["pretrained", "cosent", "infonce"]
        axes[2].bar(names, [ft[n]["raw"] for n in names], color=["grey", "tab:green", "tab:orange"])
        axes[2].set_title("STS-B dev Spearman (raw weights)")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":  # one variant in this fresh process (``memory_and_time``), its settings as JSON
    print(json.dumps(run_variant(**json.loads(sys.argv[1]))))
