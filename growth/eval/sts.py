"""STS evaluation of a checkpoint on disk (``tools/eval_sts.py``): Spearman of the raw weights and,
if the checkpoint holds them, of the EMA weights (the metric: ``growth/objectives/spearman.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

from growth import checkpoint as ckpt
from growth.config import ConfigError, load_config
from growth.data.contrastive_batches import sts_examples
from growth.data.tokenizer import Tokenizer
from growth.model import build_model
from growth.objectives.spearman import sts_spearman


def evaluate_checkpoint(checkpoint: Path, data: str, tokenizer: Path | None = None,
                        rows_per_batch: int = 64) -> dict[str, float]:
    """Spearman on ``data`` (STS-B layout) for the raw weights and, if saved, the EMA weights."""
    folder = ckpt.resolve_checkpoint(Path(checkpoint), "--checkpoint")
    config = load_config(folder / ckpt.CONFIG)
    tokenizer_path = tokenizer or ckpt.run_tokenizer(folder) or (Path(config.data.tokenizer) if config.data.tokenizer else None)
    if tokenizer_path is None:
        raise ConfigError(f"--checkpoint={checkpoint}: no tokenizer.model in its run directory; pass --tokenizer")
    examples = sts_examples(data, Tokenizer.load(tokenizer_path), config.contrastive.max_len, "--data")
    model = build_model(config.model).eval()
    model.load_state_dict(ckpt.load_weights(folder), strict=True)

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.sentence_embedding(batch["input_ids"], batch["attention_mask"])

    results = {"raw": sts_spearman(embed, examples, rows_per_batch)}
    ema = ckpt.read_ema(folder)
    if ema is not None:
        params = dict(model.named_parameters())  # by parameter, so a tied matrix is set once
        with torch.no_grad():
            for name in ema["weights"]:
                params[name].copy_(ema["weights"][name])
        results["ema"] = sts_spearman(embed, examples, rows_per_batch)
    return results
