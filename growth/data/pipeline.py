"""The data section of a config (``DataConfig``) as training sees it: sources and weights, the
tokenizer trained on first use, preparation into the cache, and the token corpus to train on.

``prepare_tokens(data, tokenizer, cache)`` prepares whatever the cache lacks (each source of a
mixture, and ``data.val_corpus``, is its own cache entry) and returns a :class:`Prepared`;
``load_token_corpus(prepared, seq_len)`` memory-maps it as a :class:`~growth.data.packed.TokenCorpus`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from growth.data.config import DataConfig
from growth.data.packed import PackedCorpus, TokenCorpus, combine, load_tokens, too_short
from growth.data.prepare import (
    Split,
    cache_entry,
    default_workers,
    prepare_corpus,
    read_meta,
)
from growth.data.sources import corpus_digest, iter_texts, resolve_files
from growth.data.tokenizer import Tokenizer, sample_sentences, train_on_sentences
from growth.errors import DataError

TOKENIZER_SAMPLE_VERSION = 2


@dataclass(frozen=True)
class Source:
    corpus: str | list[str]
    weight: float
    text_field: str
    key: str  # the config key that names it, for messages


def training_sources(data: DataConfig) -> list[Source]:
    if data.sources:
        return [
            Source(s.corpus, s.weight, s.text_field or data.text_field, f"data.sources[{i}].corpus")
            for i, s in enumerate(data.sources)
        ]
    return [Source(data.corpus, 1.0, data.text_field, "data.corpus")]


def _split(data: DataConfig) -> Split:
    return Split(0.0 if data.val_corpus else data.val_fraction, data.seed)


def tokenizer_cache_path(data: DataConfig, vocab_size: int, cache: Path) -> Path:
    """Where the tokenizer trained on first use lives: keyed by the training corpora (file list and
    content), the text fields, the vocabulary size and the sample (size and seed)."""
    parts = [TOKENIZER_SAMPLE_VERSION, vocab_size, data.input_sentence_size, data.seed]
    for source in training_sources(data):
        parts.append([corpus_digest(resolve_files(source.corpus, source.key))[0], source.text_field])
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=8).hexdigest()
    return Path(cache) / f"tokenizer-{digest}-{vocab_size}.model"


def train_corpus_tokenizer(data: DataConfig, vocab_size: int, path: Path) -> Path:
    """Train the tokenizer on a seeded sample of ``data.input_sentence_size`` lines of every training source."""
    files: list[tuple[Path, str]] = []
    for source in training_sources(data):
        files += [(f, source.text_field) for f in resolve_files(source.corpus, source.key)]
    sample = sample_sentences(files, data.input_sentence_size, data.seed, progress=True)
    if not sample:
        where = files[0][0] if len(files) == 1 else f"{len(files)} corpus files"
        raise DataError(
            f"{where}: the file is empty (no text to train a tokenizer on); use a corpus with text in it"
        )
    corpus = f"data.corpus={files[0][0]}" if len(files) == 1 else f"data.corpus ({len(files)} files)"
    return train_on_sentences(sample, path, vocab_size, seed=data.seed, corpus=corpus)


def corpus_tokenizer(data: DataConfig, vocab_size: int, cache: Path) -> Tokenizer:
    """``data.tokenizer``, or the one trained on the corpus (trained now when the cache lacks it)."""
    if data.tokenizer:
        return Tokenizer.load(data.tokenizer)
    path = tokenizer_cache_path(data, vocab_size, cache)
    if not path.is_file():
        train_corpus_tokenizer(data, vocab_size, path)
    return Tokenizer.load(path)


@dataclass(frozen=True)
class Prepared:
    """Cache folders: one per training source (with its weight), and the validation corpus's."""

    sources: list[Path]
    weights: list[float]
    val: Path | None

    @property
    def folders(self) -> list[Path]:
        return [*self.sources, *([self.val] if self.val is not None else [])]

    def complete(self) -> bool:
        return all((folder / "meta.json").is_file() for folder in self.folders)

    def metas(self) -> list[dict]:
        return [read_meta(folder) for folder in self.folders]


def prepare_tokens(
    data: DataConfig, tokenizer: Tokenizer, cache: Path, workers: int | None = None, progress: bool = False
) -> Prepared:
    """Prepare every entry the cache lacks (``workers`` processes; None: ``data.workers``, 0: all cores)."""
    count = data.workers if workers is None else workers
    count = count or default_workers()
    split = _split(data)
    folders = [
        prepare_corpus(
            s.corpus,
            tokenizer,
            cache,
            text_field=s.text_field,
            split=split,
            workers=count,
            progress=progress,
            key=s.key,
        )
        for s in training_sources(data)
    ]
    val = None
    if data.val_corpus:
        val = prepare_corpus(
            data.val_corpus,
            tokenizer,
            cache,
            text_field=data.text_field,
            split=Split(0.0, data.seed),
            workers=count,
            progress=progress,
            key="data.val_corpus",
        )
    return Prepared(folders, [s.weight for s in training_sources(data)], val)


def find_prepared(data: DataConfig, tokenizer: Tokenizer, cache: Path) -> Prepared | None:
    """The prepared entries of ``data``, or None when any is missing (nothing is prepared)."""
    split = _split(data)
    sources = training_sources(data)
    folders = [cache_entry(s.corpus, tokenizer, cache, s.text_field, split, s.key).folder for s in sources]
    val = (
        cache_entry(
            data.val_corpus, tokenizer, cache, data.text_field, Split(0.0, data.seed), "data.val_corpus"
        ).folder
        if data.val_corpus
        else None
    )
    prepared = Prepared(folders, [s.weight for s in sources], val)
    return prepared if prepared.complete() else None


def load_token_corpus(prepared: Prepared, seq_len: int) -> TokenCorpus:
    """Memory-map the prepared entries; every source needs one training sequence, and the validation
    stream (a source's split, or the validation corpus) one validation sequence."""
    needs_val = ("train",) if prepared.val is not None else ("train", "val")
    sources: list[PackedCorpus] = [load_tokens(folder, seq_len, needs_val) for folder in prepared.sources]
    val = None
    if prepared.val is not None:
        val = load_tokens(prepared.val, seq_len, ())
        if len(val.train) < seq_len + 1:
            raise too_short(val.meta, "validation", len(val.train), seq_len)
    return combine(sources, list(prepared.weights), val, seq_len)


def probe_tokens(data: DataConfig, tokenizer: Tokenizer, cache: Path, count: int) -> tuple[np.ndarray, str]:
    """``count`` tokens to probe a model with: from the prepared validation split when the cache has
    it (``"validation"``), else the first documents of the corpus encoded now (``"corpus"``)."""
    prepared = find_prepared(data, tokenizer, cache)
    if prepared is not None:
        folder = prepared.val or prepared.sources[0]
        entry = load_tokens(folder, 0, ())
        tokens = entry.train if prepared.val is not None else entry.val
        if len(tokens) >= count:
            return np.asarray(tokens[:count], dtype=np.int64), "validation"
    ids: list[int] = []
    source = training_sources(data)[0]
    for path in resolve_files(source.corpus, source.key):
        for text, ends_document in iter_texts(path, source.text_field):
            ids += tokenizer.encode(text) + ([tokenizer.eos_id] if ends_document else [])
            if len(ids) >= count:
                return np.asarray(ids[:count], dtype=np.int64), "corpus"
    return np.asarray(ids, dtype=np.int64), "corpus"


def summary(metas: Sequence[dict]) -> tuple[int, int]:
    """(documents, tokens) over prepared entries."""
    return sum(m["documents"] for m in metas), sum(m["tokens"] for m in metas)
