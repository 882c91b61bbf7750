"""Unsupervised SimCSE: the paper's Eq. 1 against Su's symmetric 2N-view form, on STS-B dev.

Gao, Yao & Chen 2021, Eq. 1: anchor h_i against the N second views h_j+ (one direction, N - 1
negatives each). Su's bert4keras form (``contrastive.simcse_variant=symmetric``, the default) scores
every one of the 2N views against the 2N - 2 others (twice the negatives, both directions). On the
same embeddings the symmetric loss is the larger (more terms in each denominator).

Claim checked: the symmetric form trains sentence embeddings at least as good as Eq. 1 (STS-B dev
Spearman, seed means, within 0.01 or one seed std). One pretrained model is fine-tuned with each
variant through the trainer (same init_from, steps, batch, LR, seed, dropout masks' seeds), then
scored with ``growth/eval/sts.py``. If the two arms' first logged losses are equal the trainer did not
pass ``contrastive.simcse_variant`` to the loss, and the record says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from growth.bench.blocks import common

NAME = "simcse"
VARIANTS = ("symmetric", "paper")
SHAPE = {"d_model": 64, "n_layers": 4, "n_heads": 4, "head_dim": 16, "d_ff": 192}
CLAIM = "Su's symmetric 2N-view SimCSE trains embeddings at least as good as the paper's Eq. 1 (STS-B dev Spearman)"


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"pretrain_steps": 30, "finetune_steps": 10, "batch": 16, "lr": 3e-4}
    return {"pretrain_steps": 400, "finetune_steps": 150, "batch": 32, "lr": 3e-4}


def pretrain_overrides(s: dict[str, Any]) -> list[str]:
    return [
        *common.shape_overrides(SHAPE),
        *common.steps_overrides(s["pretrain_steps"], s["pretrain_steps"]),
    ]


def finetune_overrides(s: dict[str, Any], pretrained: Path, variant: str, seed: int) -> list[str]:
    steps = s["finetune_steps"]
    return [
        *common.shape_overrides(SHAPE),
        f"train.init_from={pretrained}",
        "contrastive.objective=simcse",
        f"contrastive.simcse_variant={variant}",
        "contrastive.format=sts",
        "contrastive.data=bundled:sts-train",
        "contrastive.eval_data=",
        "model.dropout=0.1",
        f"train.micro_batch_size={s['batch']}",
        f"train.lr={s['lr']}",
        f"train.warmup_steps={max(1, steps // 10)}",
        f"train.seed={seed}",
        *common.steps_overrides(steps, steps, 1),
    ]


def pretrain_then_fine_tune(
    work: Path, s: dict[str, Any], name: str, seeds: int, arms: dict[str, Callable[[Path, int], list[str]]]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """One pretraining (``<name>_pretrain``) and its STS-B dev scores, then each arm's fine-tunes from it
    (``arms[arm](pretrained, seed)``: their overrides), one per seed, each with its train loss, FLOPs and
    STS-B dev Spearman (raw weights). A failed run raises: the comparison needs every arm."""
    from growth.eval.sts import evaluate_checkpoint

    pretrained = work / f"{name}_pretrain"
    outcome = common.run_arm(pretrained, pretrain_overrides(s))
    if not outcome["ok"]:
        raise RuntimeError(f"pretraining for the {name} comparison failed: {outcome['error']}")

    def read(run_dir: Path, done: dict[str, Any]) -> dict[str, Any]:
        if not done["ok"]:
            raise RuntimeError(f"{name} fine-tuning ({run_dir.name}) failed: {done['error']}")
        return {
            **done,
            "train_loss": common.scalars(run_dir, "train/loss"),
            "flops_seen": common.scalars(run_dir, "train/flops_seen"),
            "spearman": evaluate_checkpoint(run_dir, "bundled:sts-dev")["raw"],
        }

    runs = {
        arm: common.seeded_runs(
            work, f"{name}_{arm}", seeds, lambda seed, o=overrides: o(pretrained, seed), read
        )
        for arm, overrides in arms.items()
    }
    return evaluate_checkpoint(pretrained, "bundled:sts-dev"), runs


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    arms = {v: lambda pretrained, seed, v=v: finetune_overrides(s, pretrained, v, seed) for v in VARIANTS}
    pretrained, runs = pretrain_then_fine_tune(work, s, NAME, seeds, arms)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "shape": SHAPE, "seeds": seeds},
        "pretrained": pretrained,
        "variants": {
            v: {"runs": r, "spearman": common.seed_stats([x["spearman"] for x in r])} for v, r in runs.items()
        },
    }
    record["variant_honoured"] = honoured(record)
    record["verdict"] = judge(record)
    return record


def honoured(record: dict[str, Any]) -> bool:
    """Did the trainer use the variant? Same seed, data and init: the first losses differ iff it did."""
    first = [record["variants"][v]["runs"][0]["train_loss"][:1] for v in VARIANTS]
    return bool(all(first) and abs(first[0][0][1] - first[1][0][1]) > 1e-6)


def judge(record: dict[str, Any]) -> dict[str, Any]:
    sym, paper = (record["variants"][v]["spearman"] for v in VARIANTS)
    first = {
        v: record["variants"][v]["runs"][0]["train_loss"][0][1]
        if record["variants"][v]["runs"][0]["train_loss"]
        else math.nan
        for v in VARIANTS
    }
    measured = (
        f"STS-B dev Spearman: pretrained {record['pretrained']['raw']:.4f}, symmetric {sym['mean']:.4f}"
        f" ± {sym['std']:.4f}, paper {paper['mean']:.4f} ± {paper['std']:.4f}; first-step loss symmetric "
        f"{first['symmetric']:.3f} vs paper {first['paper']:.3f}"
    )
    if not record["variant_honoured"]:
        return common.verdict(
            CLAIM,
            measured + " — the trainer ignored contrastive.simcse_variant "
            "(growth/train/contrastive_module.py does not pass it)",
            None,
        )
    tolerance = max(0.01, sym["std"], paper["std"])
    return common.verdict(CLAIM, measured, bool(sym["mean"] >= paper["mean"] - tolerance))


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (curves, bars) = common.figure(2, width=5.0)
    for color, variant in zip(("tab:blue", "tab:orange"), VARIANTS):
        for index, run in enumerate(record["variants"][variant]["runs"]):
            if run["train_loss"]:
                curves.plot(*zip(*run["train_loss"]), color=color, label=variant if index == 0 else None)
    curves.set_title("SimCSE training loss (values differ by form)")
    curves.set_xlabel("step")
    curves.legend()
    names = ["pretrained", *VARIANTS]
    values = [record["pretrained"]["raw"], *(record["variants"][v]["spearman"]["mean"] for v in VARIANTS)]
    errors = [0.0, *(record["variants"][v]["spearman"]["std"] for v in VARIANTS)]
    bars.bar(names, values, yerr=errors, color=["grey", "tab:blue", "tab:orange"])
    bars.set_title("STS-B dev Spearman (raw weights)")
    common.save_figure(fig, path)
