"""Validation loss per position of a trained run, at any sequence length up to ``model.max_seq_len``
(length extrapolation: train at ``data.seq_len``, evaluate at 2x, 4x, 8x; ``growth/bench/blocks/logn.py``).

Windows are cut from the run's own validation stream the way the trainer cuts them (window ``i`` is
tokens ``[i L, (i + 1) L + 1)``, ``growth/data/batches.py``), so at the training length the mean over
positions is the trainer's ``val/loss`` on the same windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from growth import checkpoint as ckpt
from growth.config import Config, load_config
from growth.data.batches import BatchMaker
from growth.data.packed import default_cache_dir
from growth.data.pipeline import find_prepared, load_token_corpus
from growth.data.tokenizer import Tokenizer
from growth.errors import ConfigError
from growth.model import GrowthLM, build_model


def load_run(run: Path, ema: bool = False) -> tuple[GrowthLM, Config, Path]:
    """The newest complete checkpoint of ``run`` as an eval-mode model (its EMA weights if ``ema``)."""
    folder = ckpt.resolve_checkpoint(Path(run), "run")
    config = load_config(folder / ckpt.CONFIG)
    model = build_model(config.model).eval()
    model.load_state_dict(ckpt.load_weights(folder), strict=True)
    if ema:
        averaged = ckpt.read_ema(folder)
        if averaged is None:
            raise ConfigError(f"{run}: the checkpoint holds no EMA weights (train.ema_decay=0)")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name in averaged["weights"]:
                params[name].copy_(averaged["weights"][name])
    return model, config, folder


def validation_tokens(config: Config, folder: Path) -> np.ndarray:
    """The validation token stream the run trained against (its prepared cache entry)."""
    tokenizer_path = ckpt.run_tokenizer(folder) or (
        Path(config.data.tokenizer) if config.data.tokenizer else None
    )
    if tokenizer_path is None:
        raise ConfigError(f"{folder}: no tokenizer.model in its run directory")
    prepared = find_prepared(
        config.data, Tokenizer.load(tokenizer_path), default_cache_dir(config.data.cache_dir)
    )
    if prepared is None:
        raise ConfigError(
            f"{folder}: the run's corpus is not prepared in the cache any more; run launch/pretrain.py once"
        )
    val = load_token_corpus(prepared, config.data.seq_len).val
    if not isinstance(val, np.ndarray):  # a mixture's windowed view only cuts windows of data.seq_len
        raise ConfigError(f"{folder}: per-position evaluation needs one corpus (data.sources mixes several)")
    return val


@torch.no_grad()
def per_position_loss(
    model: GrowthLM, tokens: np.ndarray, length: int, max_windows: int = 64, batch_size: int = 8
) -> torch.Tensor:
    """(length,) mean next-token cross-entropy at each position over the first ``max_windows`` windows
    of ``length`` tokens (fewer when the stream is shorter); float64."""
    windows = min(max_windows, (len(tokens) - 1) // length)
    if windows < 1:
        raise ConfigError(
            f"the validation stream ({len(tokens)} tokens) is shorter than one window of {length + 1}"
        )
    maker = BatchMaker(tokens, length, "clm", model.config.vocab_size)
    total = torch.zeros(length, dtype=torch.float64)
    for start in range(0, windows, batch_size):
        ids = list(range(start, min(start + batch_size, windows)))
        batch = maker.batch(ids, ids)
        logits = model(batch["input_ids"]).float()
        losses = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")  # (B, T)
        total += losses.double().sum(0)
    return total / windows


def bucket_means(losses: torch.Tensor, width: int) -> list[float]:
    """Mean loss over consecutive blocks of ``width`` positions: [0, w), [w, 2w), ... (the last may be short)."""
    return [float(losses[start : start + width].mean()) for start in range(0, len(losses), width)]
