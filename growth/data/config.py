"""The ``data`` section: which documents a run trains and validates on, and how they are tokenized."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from growth.errors import ConfigError
from growth.schema import require_positive

DEFAULT_CORPUS = "bundled:tinyshakespeare"


@dataclass
class SourceConfig:
    """One corpus of a mixture (``data.sources``), drawn in proportion to ``weight``."""

    corpus: str | list[str]  # as data.corpus
    weight: float = 1.0
    text_field: str = ""  # empty: data.text_field


@dataclass
class DataConfig:
    # A file, a directory (recursive), a glob ('corpus/**/*.jsonl.gz'), bundled:<name>, or a list of these.
    # Formats by suffix: .jsonl/.jsonl.gz/.jsonl.zst and .parquet (text in text_field); any other file is
    # UTF-8 text, one document per file. growth/data/sources.py.
    corpus: str | list[str] = DEFAULT_CORPUS
    sources: list[SourceConfig] = field(
        default_factory=list
    )  # a mixture [{corpus, weight}]; replaces data.corpus
    val_corpus: str | list[str] = ""  # validation documents; empty: hold out val_fraction of the documents
    text_field: str = "text"  # the JSONL key / Parquet column holding the text
    # a sentencepiece .model, or a Hugging Face tokenizer (a folder with tokenizer.json, the file itself, or an
    # imported checkpoint's tokenizer.model: growth/data/hf_tokenizer.py); empty: train one on the corpus (cached)
    tokenizer: str = ""
    input_sentence_size: int = 1_000_000  # lines sampled (seeded) to train that tokenizer
    cache_dir: str = ""  # tokenizers and packed token files; empty: $GROWTH_CACHE or ~/.cache/growth
    workers: int = 0  # processes that tokenize a corpus the cache lacks; 0: all cores
    seed: int = 0  # the validation split and the tokenizer's sample
    seq_len: int = 128
    val_fraction: float = 0.05
    mlm_probability: float = 0.15


def validate_data(d: DataConfig, max_seq_len: int) -> None:
    """Reject impossible values with a one-line message naming the key (``model.max_seq_len`` bounds
    ``data.seq_len``)."""
    require_positive("data", d, "seq_len")
    if d.seq_len > max_seq_len:
        raise ConfigError(f"data.seq_len ({d.seq_len}) must be <= model.max_seq_len ({max_seq_len})")
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if not 0.0 < d.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability must be in (0, 1), got {d.mlm_probability}")
    require_positive("data", d, "input_sentence_size")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0: all cores), got {d.workers}")
    if not d.text_field:
        raise ConfigError("data.text_field must name the JSONL key / Parquet column of the text, got ''")
    for key, spec in [
        ("data.corpus", d.corpus),
        ("data.val_corpus", d.val_corpus or ["-"]),
        *((f"data.sources[{i}].corpus", s.corpus) for i, s in enumerate(d.sources)),
    ]:
        items = [spec] if isinstance(spec, str) else spec
        if not items or not all(isinstance(item, str) and item.strip() for item in items):
            raise ConfigError(
                f"{key} must be a file, a directory, a glob or a non-empty list of these, got {spec!r}"
            )
    for i, source in enumerate(d.sources):
        if not (source.weight > 0 and math.isfinite(source.weight)):
            raise ConfigError(
                f"data.sources[{i}].weight must be > 0, got {source.weight} (corpus {source.corpus})"
            )
    if d.sources and d.corpus != DEFAULT_CORPUS:
        raise ConfigError(
            "data.corpus and data.sources are both set; list every corpus in data.sources "
            f"(data.corpus={d.corpus})"
        )
