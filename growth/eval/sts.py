"""STS evaluation of a checkpoint on disk (``tools/eval_sts.py``): Spearman of the raw weights and,
if the checkpoint holds them, of the EMA weights (the metric: ``growth/objectives/spearman.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from growth import checkpoint as ckpt
from growth.config import load_config
from growth.data.contrastive_batches import sts_examples
from growth.data.tokenizer import Tokenizer
from growth.errors import ConfigError, DataError
from growth.model import build_model
from growth.objectives.spearman import sts_spearman


def evaluate_checkpoint(
    checkpoint: Path, data: str, tokenizer: Path | None = None, rows_per_batch: int = 64
) -> dict[str, float]:
    """Spearman on ``data`` (STS-B layout) for the raw weights and, if saved, the EMA weights."""
    folder = ckpt.resolve_checkpoint(Path(checkpoint), "--checkpoint")
    config = load_config(folder / ckpt.CONFIG)
    tokenizer_path = (
        tokenizer
        or ckpt.run_tokenizer(folder)
        or (Path(config.data.tokenizer) if config.data.tokenizer else None)
    )
    if tokenizer_path is None:
        raise ConfigError(
            f"--checkpoint={checkpoint}: no tokenizer.model in its run directory; pass --tokenizer"
        )
    examples = sts_examples(data, Tokenizer.load(tokenizer_path), config.contrastive.max_len, "--data")
    check_rankable(examples, data)
    model = build_model(config.model).eval()
    model.load_state_dict(ckpt.load_weights(folder), strict=True)

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.sentence_embedding(batch["input_ids"], batch["attention_mask"])

    results = {"raw": defined(sts_spearman(embed, examples, rows_per_batch), data, "raw")}
    ema = ckpt.read_ema(folder)
    if ema is not None:
        params = dict(model.named_parameters())  # by parameter, so a tied matrix is set once
        with torch.no_grad():
            for name in ema["weights"]:
                params[name].copy_(ema["weights"][name])
        results["ema"] = defined(sts_spearman(embed, examples, rows_per_batch), data, "ema")
    return results


def check_rankable(examples, data: str) -> None:
    """Spearman needs at least two pairs with different gold scores (else it is 0/0, ``nan``)."""
    if len(examples) < 2:
        raise DataError(
            f"--data={data} has {len(examples)} scored pair(s); Spearman needs at least 2 with different "
            "scores"
        )
    if examples.scores is not None and bool((examples.scores == examples.scores[0]).all()):
        raise DataError(
            f"--data={data}: every pair has the same score ({float(examples.scores[0]):g}), so there is "
            "nothing to rank; use a file with varied scores"
        )


def defined(rho: float, data: str, weights: str) -> float:
    if not math.isfinite(rho):
        raise DataError(
            f"--data={data}: the {weights} weights give every pair the same cosine, so Spearman is "
            "undefined (the model does not tell the sentences apart)"
        )
    return rho
