"""DeepNet (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers").

Claim: Post-LN fails, or trains far worse, as depth grows, where DeepNorm (x <- LN(alpha x + G(x)),
G's writers initialised with gain beta; Sec. 3, Eq. 2) trains; and DeepNorm at depth reaches a lower
loss than Pre-LN at the same depth (Sec. 4: Post-LN quality, Pre-LN stability).

Deep, narrow stacks are trained through the trainer at one aggressive learning rate with no warmup,
identical for every arm (``model.residual`` is the only flag that differs). Beside the loss, the
paper's diagnostic of *why* Post-LN breaks (Sec. 3.2, Fig. 3: the model update ||F(x, theta_t+1) -
F(x, theta_t)|| explodes in the first steps): the relative change of the output per step, measured
in-process on a fixed validation batch with the trainer's AdamW settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from growth.bench.blocks import common
from growth.config import load_config
from growth.data.batches import BatchMaker
from growth.eval.per_position import load_run, validation_tokens
from growth.model import build_model
from growth.train.engine import adamw_settings, param_groups

NAME = "deepnet"
ARMS = ("post", "deepnorm", "pre")
SHAPE = {"d_model": 32, "n_heads": 2, "head_dim": 16, "d_ff": 64}
CLAIM = (
    "Post-LN fails or trains far worse as depth grows where DeepNorm trains; DeepNorm at depth reaches a "
    "lower loss than Pre-LN at the same depth"
)


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "depths": [12, 24],
            "steps": 40,
            "eval_every": 20,
            "diag_steps": 5,
            "lr": 3e-3,
            "seq_len": 64,
            "batch": 8,
        }
    # 3e-3 with no warmup: at 48 layers (d 32) Post-LN stays on the unigram plateau for 300 steps, DeepNorm
    # leaves it (probe runs); 1e-2 keeps DeepNorm there too. 192 layers: ~4 min per arm on 2 cores.
    return {
        "depths": [48, 96],
        "steps": 300,
        "eval_every": 50,
        "diag_steps": 10,
        "lr": 3e-3,
        "seq_len": 64,
        "batch": 8,
    }


def model_overrides(depth: int, residual: str, seq_len: int) -> list[str]:
    return [
        *common.shape_overrides(SHAPE),
        f"model.n_layers={depth}",
        f"model.residual={residual}",
        f"model.max_seq_len={seq_len}",
        f"data.seq_len={seq_len}",
    ]


def arm_overrides(s: dict[str, Any], depth: int, residual: str, seed: int) -> list[str]:
    """The same aggressive LR, no warmup, constant schedule, seed and batch for every arm."""
    return [
        *model_overrides(depth, residual, s["seq_len"]),
        f"train.lr={s['lr']}",
        "train.warmup_steps=0",
        "train.lr_schedule=constant",
        f"train.micro_batch_size={s['batch']}",
        f"train.seed={seed}",
        *common.steps_overrides(s["steps"], s["eval_every"], log_every=5),
    ]


def relative_update(before: torch.Tensor, after: torch.Tensor) -> float:
    """||f(x; theta_t+1) - f(x; theta_t)|| / ||f(x; theta_t)|| (Frobenius norms over the whole batch)."""
    return float((after.double() - before.double()).norm() / before.double().norm())


def update_sizes(
    overrides: Sequence[str], tokens: np.ndarray, steps: int, lr: float, seed: int, batch: int = 4
) -> list[float]:
    """Relative output change per optimizer step over the first ``steps`` steps: trained on validation
    windows 1.. (a new batch each step), measured on windows 0..batch-1, with the trainer's AdamW (its
    decay groups and settings, ``growth/train/engine.py``) and gradient clipping."""
    config = load_config(overrides=[*overrides, f"train.lr={lr}"])
    torch.manual_seed(seed)
    model = build_model(config.model).train()
    optimizer = torch.optim.AdamW(
        param_groups(model, config.train.weight_decay), **adamw_settings(config.train)
    )
    maker = BatchMaker(tokens, config.data.seq_len, "clm", config.model.vocab_size)
    fixed = maker.batch(list(range(batch)), list(range(batch)))["input_ids"]
    sizes = []
    with torch.no_grad():
        output = model(fixed)
    for step in range(steps):
        windows = [
            (batch * (step + 1) + i) % ((len(tokens) - 1) // config.data.seq_len) for i in range(batch)
        ]
        data = maker.batch(windows, windows)
        logits = model(data["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data["labels"].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        with torch.no_grad():
            new_output = model(fixed)
        sizes.append(relative_update(output, new_output))
        output = new_output
    return sizes


def arm_result(run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    losses = common.scalars(run_dir, "train/loss")
    val = common.scalars(run_dir, "val/loss")
    broke = common.divergence_step(losses, common.scalars(run_dir, "train/skipped_steps"))
    diverged = outcome.get("diverged_at") or broke
    tail = [loss for _, loss in losses[-3:] if math.isfinite(loss)]
    return {
        **outcome,
        "train_loss": losses,
        "val_loss": val,
        "diverged_at": diverged,
        "final_val_loss": val[-1][1] if val and outcome["ok"] else math.nan,
        "final_train_loss": sum(tail) / len(tail) if tail else math.nan,
    }


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "shape": SHAPE, "arms": list(ARMS), "seeds": seeds},
        "depths": {},
    }
    tokens = None
    for depth in s["depths"]:
        arms: dict[str, Any] = {}
        for residual in ARMS:
            name = f"deepnet_{depth}_{residual}"
            runs = common.seeded_runs(
                work, name, seeds, lambda seed, d=depth, r=residual: arm_overrides(s, d, r, seed), arm_result
            )
            if tokens is None and (ok := [i for i, r in enumerate(runs) if r["ok"]]):
                _, config, folder = load_run(work / f"{name}_s{ok[0]}")  # the diagnostic's batch: real text
                tokens = validation_tokens(config, folder)
            sizes = (
                update_sizes(
                    model_overrides(depth, residual, s["seq_len"]), tokens, s["diag_steps"], s["lr"], 0
                )
                if tokens is not None
                else []
            )
            arms[residual] = {
                "runs": runs,
                "final_val_loss": common.seed_stats([r["final_val_loss"] for r in runs]),
                "diverged": [r["diverged_at"] for r in runs],
                "update_sizes": sizes,
                "max_update": max(sizes) if sizes else math.nan,
            }
        record["depths"][str(depth)] = arms
    record["verdict"] = judge(record)
    return record


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """Two parts, at the deepest stack (seed means): Post-LN diverged or ends >= 0.1 nats above DeepNorm;
    DeepNorm ends below Pre-LN."""
    depths = sorted(record["depths"], key=int)
    parts, deepest = [], record["depths"][depths[-1]]
    for depth in depths:
        arms = record["depths"][depth]
        loss = {r: arms[r]["final_val_loss"]["mean"] for r in ARMS}
        broke = {r: any(d is not None for d in arms[r]["diverged"]) for r in ARMS}
        parts.append(
            f"L={depth}: "
            + ", ".join(
                f"{r} {'diverged' if broke[r] and not math.isfinite(loss[r]) else format(loss[r], '.3f')}"
                f" (max update {arms[r]['max_update']:.2g})"
                for r in ARMS
            )
        )
    loss = {r: deepest[r]["final_val_loss"]["mean"] for r in ARMS}
    post_bad = (
        not math.isfinite(loss["post"])
        or any(d is not None for d in deepest["post"]["diverged"])
        or loss["post"] - loss["deepnorm"] >= 0.1
    )
    deepnorm_beats_pre = math.isfinite(loss["deepnorm"]) and loss["deepnorm"] < loss["pre"]
    return common.verdict(
        CLAIM,
        "final val loss; " + "; ".join(parts),
        None,
        {
            "post_ln_fails_where_deepnorm_trains": bool(post_bad),
            "deepnorm_beats_pre_ln": bool(deepnorm_beats_pre),
        },
    )


def plot(record: dict[str, Any], path: Path) -> None:
    depths = sorted(record["depths"], key=int)
    fig, axes = common.figure(len(depths) + 1)
    for ax, depth in zip(axes, depths):
        for color, residual in zip(("tab:red", "tab:green", "tab:blue"), ARMS):
            for run in record["depths"][depth][residual]["runs"]:
                if run["train_loss"]:
                    ax.plot(*zip(*run["train_loss"]), color=color, alpha=0.8, label=residual)
        ax.set_title(f"{depth} layers: train loss")
        ax.set_xlabel("step")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys())
    ax = axes[-1]
    for marker, depth in zip("os^v", depths):
        for color, residual in zip(("tab:red", "tab:green", "tab:blue"), ARMS):
            sizes = record["depths"][depth][residual]["update_sizes"]
            if sizes:
                ax.plot(
                    range(1, len(sizes) + 1), sizes, color=color, marker=marker, label=f"{residual} L={depth}"
                )
    ax.set_yscale("log")
    ax.set_title("relative output change per step")
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
    common.save_figure(fig, path)
