"""R-Drop on the STS fine-tune: STS-B dev Spearman with and without ``train.rdrop_alpha``.

Liang et al., NeurIPS 2021 ("R-Drop: Regularized Dropout for Neural Networks") report gains from
R-Drop on the GLUE fine-tunes, STS-B among them. Here one pretrained model is fine-tuned with
unsupervised SimCSE on the STS-B training sentences (the simcse sub-benchmark's protocol: same
init_from, steps, batch, LR, seed, dropout 0.1) with R-Drop off and with alpha = ``ALPHA`` (``growth/objectives/rdrop.py``: the KL between
the two passes' similarity distributions), then scored with ``growth/eval/sts.py``.

Claim checked: R-Drop raises STS-B dev Spearman (seed means; "yes" when the gain also exceeds the seed
noise, max(0.01, the larger seed std), "partly" when it is positive but within it). The record also
checks the trainer honoured the flag (the first logged losses differ) and counted the second forward
(the R-Drop arm's FLOPs per step are 2x).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from growth.bench.blocks import common, simcse
from growth.bench.blocks.simcse import SHAPE, settings  # the same pretraining and budget

NAME = "rdrop"
ALPHA = 1.0
ARMS = {"without": 0.0, "with": ALPHA}
CLAIM = (
    "R-Drop (Liang et al. 2021) raises the STS fine-tune's score: STS-B dev Spearman with "
    f"train.rdrop_alpha={ALPHA} above the same fine-tune without it"
)


def finetune_overrides(s: dict[str, Any], pretrained: Path, alpha: float, seed: int) -> list[str]:
    """The SimCSE sub-benchmark's fine-tune (its default symmetric form) with ``train.rdrop_alpha``."""
    return [*simcse.finetune_overrides(s, pretrained, "symmetric", seed), f"train.rdrop_alpha={alpha}"]


def run(work: Path, quick: bool, seeds: int) -> dict[str, Any]:
    s = settings(quick)
    arms = {
        arm: lambda pretrained, seed, a=alpha: finetune_overrides(s, pretrained, a, seed)
        for arm, alpha in ARMS.items()
    }
    pretrained, runs = simcse.pretrain_then_fine_tune(work, s, NAME, seeds, arms)
    record: dict[str, Any] = {
        "name": NAME,
        "settings": {**s, "shape": SHAPE, "seeds": seeds, "alpha": ALPHA},
        "pretrained": pretrained,
        "arms": {
            a: {"runs": r, "spearman": common.seed_stats([x["spearman"] for x in r])} for a, r in runs.items()
        },
    }
    record["flag_honoured"] = honoured(record)
    record["flops_ratio"] = flops_ratio(record)
    record["verdict"] = judge(record)
    return record


def honoured(record: dict[str, Any]) -> bool:
    """Same seed, data and init: R-Drop's first logged loss (mean CE of two passes + KL) differs."""
    first = [record["arms"][arm]["runs"][0]["train_loss"][:1] for arm in ARMS]
    return bool(all(first) and abs(first[0][0][1] - first[1][0][1]) > 1e-6)


def flops_ratio(record: dict[str, Any]) -> float:
    """Fine-tuning FLOPs of the R-Drop arm over the plain arm's, same steps and data (2 if counted).
    ``flops_seen`` starts from the pretrained run's count (init_from carries it): compare the growth
    from the first logged step to the last."""
    spent = []
    for arm in ARMS:
        seen = record["arms"][arm]["runs"][0]["flops_seen"]
        spent.append(seen[-1][1] - seen[0][1] if len(seen) > 1 else math.nan)
    return spent[1] / spent[0] if spent[0] else math.nan


def judge(record: dict[str, Any]) -> dict[str, Any]:
    without, with_ = (record["arms"][arm]["spearman"] for arm in ARMS)
    gain = with_["mean"] - without["mean"]
    measured = (
        f"STS-B dev Spearman: pretrained {record['pretrained']['raw']:.4f}, without R-Drop "
        f"{without['mean']:.4f} ± {without['std']:.4f}, with (alpha {ALPHA}) {with_['mean']:.4f} ± "
        f"{with_['std']:.4f} ({gain:+.4f}); training FLOPs with/without {record['flops_ratio']:.2f}x"
    )
    if not record["flag_honoured"]:
        return common.verdict(CLAIM, measured + " — the trainer ignored train.rdrop_alpha", None)
    noise = max(0.01, without["std"], with_["std"])
    return common.verdict(
        CLAIM, measured, None, parts={"higher on average": gain > 0, "beyond seed noise": gain > noise}
    )


def plot(record: dict[str, Any], path: Path) -> None:
    fig, (curves, bars) = common.figure(2, width=5.0)
    for color, arm in zip(("tab:blue", "tab:orange"), ARMS):
        for index, run in enumerate(record["arms"][arm]["runs"]):
            if run["train_loss"]:
                curves.plot(
                    *zip(*run["train_loss"]), color=color, label=f"{arm} R-Drop" if index == 0 else None
                )
    curves.set_title("training loss (R-Drop's adds the KL term)")
    curves.set_xlabel("step")
    curves.legend()
    names = ["pretrained", *(f"{arm} R-Drop" for arm in ARMS)]
    values = [record["pretrained"]["raw"], *(record["arms"][arm]["spearman"]["mean"] for arm in ARMS)]
    errors = [0.0, *(record["arms"][arm]["spearman"]["std"] for arm in ARMS)]
    bars.bar(names, values, yerr=errors, color=["grey", "tab:blue", "tab:orange"])
    bars.set_title("STS-B dev Spearman (raw weights)")
    common.save_figure(fig, path)
