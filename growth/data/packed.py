"""Memory-map prepared token files (``growth/data/prepare.py`` writes them) for training.

:class:`PackedCorpus` is one cache entry's two splits; :class:`TokenCorpus` is what training reads:
``train`` and ``val`` (numpy memmaps, or :class:`~growth.data.mixture.WindowedTokens` over several
sources) and ``sampler(seq_len, seed)``, the matching deterministic window sampler.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from growth.data.mixture import MixtureSampler, WindowedTokens, interleave_validation
from growth.data.sampler import WindowSampler
from growth.errors import DataError

SPLITS = ("train", "val")


@dataclass
class PackedCorpus:
    train: np.ndarray
    val: np.ndarray
    directory: Path
    meta: dict = field(default_factory=dict, repr=False)


def default_cache_dir(configured: str = "") -> Path:
    return Path(
        configured or os.environ.get("GROWTH_CACHE") or Path.home() / ".cache" / "growth"
    ).expanduser()


def _map(path: Path, dtype: str) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def too_short(meta: dict, split: str, tokens: int, seq_len: int, hint: str = "") -> DataError:
    return DataError(
        f"{meta.get('key', 'data.corpus')}={meta['corpus']}: the {split} split has {tokens} tokens, fewer than one "
        f"sequence (data.seq_len={seq_len} + 1); use a longer corpus or a smaller data.seq_len{hint}"
    )


def load_tokens(directory: Path, seq_len: int, splits: tuple[str, ...] = SPLITS) -> PackedCorpus:
    """Memory-map an entry's splits; each split in ``splits`` must hold one sequence (seq_len + 1 tokens)."""
    meta = json.loads((Path(directory) / "meta.json").read_text())
    arrays = {name: _map(Path(directory) / f"{name}.bin", meta["dtype"]) for name in SPLITS}
    for name in splits:
        if len(arrays[name]) < seq_len + 1:
            hint = "; or a larger data.val_fraction, or data.val_corpus" if name == "val" else ""
            raise too_short(meta, name, len(arrays[name]), seq_len, hint)
    return PackedCorpus(arrays["train"], arrays["val"], Path(directory), meta)


@dataclass
class TokenCorpus:
    """Training's view of the data: one corpus, or a mixture of ``weights`` over several."""

    train: np.ndarray | WindowedTokens
    val: np.ndarray | WindowedTokens
    directories: list[Path]
    weights: list[float]
    source_tokens: list[int]

    @property
    def directory(self) -> Path:
        return self.directories[0]

    def sampler(self, seq_len: int, seed: int) -> WindowSampler:
        if len(self.weights) == 1:
            return WindowSampler(len(self.train), seq_len, seed)
        return MixtureSampler(
            sum(self.source_tokens),
            seq_len,
            seed,
            source_tokens=tuple(self.source_tokens),
            weights=tuple(self.weights),
        )


def combine(
    sources: list[PackedCorpus], weights: list[float], val: PackedCorpus | None, seq_len: int
) -> TokenCorpus:
    """The training view of prepared entries: sources with weights, and the validation tokens
    (``val``'s whole stream when given, else each source's own validation split)."""
    folders = [s.directory for s in sources] + ([val.directory] if val is not None else [])
    if len(sources) == 1:
        return TokenCorpus(
            sources[0].train,
            val.train if val is not None else sources[0].val,
            folders,
            weights,
            [len(sources[0].train)],
        )
    train = WindowedTokens([s.train for s in sources], seq_len)
    if val is not None:
        val_tokens = val.train
    else:
        counts = [(len(s.val) - 1) // seq_len for s in sources]
        val_tokens = WindowedTokens([s.val for s in sources], seq_len, interleave_validation(counts, weights))
    return TokenCorpus(train, val_tokens, folders, weights, [len(s.train) for s in sources])
