"""Tokenize a corpus once into packed token files (numpy memmaps), split into train and validation.

Layout under the cache: ``tokens-<corpus digest>-<tokenizer digest>/{train,val}.bin`` plus
``meta.json``. The stream is the whole corpus followed by EOS; the last ``val_fraction`` of it is
the validation split. Files are written to temporary names and renamed, so a killed preparation
never leaves a half-written cache behind, and concurrent ranks cannot corrupt each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from growth.data.corpus import corpus_path, file_digest, read_corpus
from growth.data.errors import DataError
from growth.data.tokenizer import Tokenizer

SPLITS = ("train", "val")


@dataclass
class PackedCorpus:
    train: np.ndarray
    val: np.ndarray
    directory: Path


def default_cache_dir(configured: str = "") -> Path:
    return Path(configured or os.environ.get("GROWTH_CACHE") or Path.home() / ".cache" / "growth").expanduser()


def _atomic_save(path: Path, tokens: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        tokens.tofile(handle)
    tmp.replace(path)


def prepare_tokens(corpus: str, tokenizer: Tokenizer, cache_dir: Path, val_fraction: float) -> Path:
    """Write the packed train/val token files for ``corpus`` (no-op when cached); returns their folder."""
    directory = cache_dir / f"tokens-{file_digest(corpus_path(corpus))}-{file_digest(tokenizer.path)}-{val_fraction}"
    if (directory / "meta.json").is_file():
        return directory
    text = read_corpus(corpus)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    ids = np.asarray(tokenizer.encode(text) + [tokenizer.eos_id], dtype=dtype)
    n_val = max(1, int(len(ids) * val_fraction))
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_save(directory / "train.bin", ids[:-n_val])
    _atomic_save(directory / "val.bin", ids[-n_val:])
    meta = {"dtype": np.dtype(dtype).name, "corpus": corpus, "tokenizer": str(tokenizer.path), "tokens": len(ids)}
    tmp = directory / f"meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(directory / "meta.json")  # last: its presence marks a complete cache entry
    return directory


def load_tokens(directory: Path, seq_len: int) -> PackedCorpus:
    """Memory-map the splits; each must hold at least one sequence (seq_len + 1 tokens)."""
    meta = json.loads((directory / "meta.json").read_text())
    splits = {name: np.memmap(directory / f"{name}.bin", dtype=meta["dtype"], mode="r") for name in SPLITS}
    for name, tokens in splits.items():
        if len(tokens) < seq_len + 1:
            raise DataError(
                f"data.corpus={meta['corpus']}: the {name} split has {len(tokens)} tokens, fewer than one "
                f"sequence (data.seq_len={seq_len} + 1); use a longer corpus or a smaller data.seq_len"
            )
    return PackedCorpus(splits["train"], splits["val"], directory)
