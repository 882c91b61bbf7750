"""STS evaluation: Spearman correlation between the cosine of pooled embeddings and gold scores.

Used by the contrastive trainer (``val/spearman``) and by ``tools/eval_sts.py`` on a checkpoint, for
its raw and its EMA weights. Spearman's rho is Pearson's r of the ranks, ties given their average
rank (STS-B scores tie a lot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from growth.config import ConfigError, load_config
from growth.data.contrastive_batches import ContrastiveExamples, sts_examples
from growth.data.tokenizer import Tokenizer
from growth.train import checkpoint as ckpt

Embed = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n in float64, tied values sharing the mean of their ranks."""
    values = values.double().flatten()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    _, group = torch.unique(values, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, ranks)
    return (sums / torch.bincount(group).double())[group]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


@torch.no_grad()
def pair_cosines(embed: Embed, examples: ContrastiveExamples, rows_per_batch: int = 64) -> torch.Tensor:
    """cos(a_i, b_i) for every example, embedding ``rows_per_batch`` sentences at a time."""
    per_batch = max(1, rows_per_batch // 2)
    cosines = []
    for start in range(0, len(examples), per_batch):
        embeddings = embed(examples.batch(range(start, min(start + per_batch, len(examples))))).float()
        cosines.append(F.cosine_similarity(embeddings[0::2], embeddings[1::2], dim=-1).cpu())
    return torch.cat(cosines)


def sts_spearman(embed: Embed, examples: ContrastiveExamples, rows_per_batch: int = 64) -> float:
    return spearman(pair_cosines(embed, examples, rows_per_batch), examples.scores)


# -- a checkpoint on disk (tools/eval_sts.py) -------------------------------------------------------
def checkpoint_tokenizer(path: Path) -> Path | None:
    """The ``tokenizer.model`` of the run a checkpoint belongs to (a run dir keeps it at its top)."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "tokenizer.model").is_file():
            return folder / "tokenizer.model"
    return None


def evaluate_checkpoint(checkpoint: Path, data: str, tokenizer: Path | None = None,
                        rows_per_batch: int = 64) -> dict[str, float]:
    """Spearman on ``data`` (STS-B layout) for the raw weights and, if saved, the EMA weights."""
    from growth.model import build_model

    folder = ckpt.resolve_checkpoint(Path(checkpoint), "--checkpoint")
    config = load_config(folder / "config.yaml")
    tokenizer_path = tokenizer or checkpoint_tokenizer(folder) or (Path(config.data.tokenizer) if config.data.tokenizer else None)
    if tokenizer_path is None:
        raise ConfigError(f"--checkpoint={checkpoint}: no tokenizer.model in its run directory; pass --tokenizer")
    examples = sts_examples(data, Tokenizer.load(tokenizer_path), config.contrastive.max_len, "--data")
    model = build_model(config.model).eval()
    model.load_state_dict(ckpt.load_weights(folder), strict=True)

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.sentence_embedding(batch["input_ids"], batch["attention_mask"])

    results = {"raw": sts_spearman(embed, examples, rows_per_batch)}
    if (folder / "ema.pt").is_file():
        ema = torch.load(folder / "ema.pt", weights_only=False)["weights"]
        params = dict(model.named_parameters())  # by parameter, so a tied matrix is set once
        with torch.no_grad():
            for name, weight in ema.items():
                params[name].copy_(weight)
        results["ema"] = sts_spearman(embed, examples, rows_per_batch)
    return results
