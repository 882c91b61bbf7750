"""Readers for contrastive data: scored pairs (STS-B layout), sentence pairs, unlabeled sentences.

    sts     genre<TAB>file<TAB>year<TAB>id<TAB>score<TAB>sentence1<TAB>sentence2[<TAB>extra ...]
            (the STS Benchmark files; some rows carry extra source fields, which are ignored);
            score in [0, 5]
    pairs   sentence1<TAB>sentence2
    text    one sentence a line (blank lines skipped, repeats dropped)

``bundled:<name>`` names a file shipped in the package: ``bundled:sts-train`` and ``bundled:sts-dev``
(STS-B, CC BY-SA 4.0, see ``growth/data/sts/LICENSE.txt``) or a bundled corpus such as
``bundled:tinyshakespeare``. A malformed row is a :class:`DataError` naming ``file:line``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from growth.data.corpus import BUNDLED_DIR as CORPUS_DIR
from growth.errors import DataError

STS_DIR = Path(__file__).parent / "sts"
STS_FIELDS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
SCORE_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    score: float | None  # None for unscored pairs
    line: int  # 1-based line in the file it came from


def data_path(spec: str, key: str) -> Path:
    """The file behind ``spec``: a path, or ``bundled:<name>`` (STS-B files, then bundled corpora)."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        for path in (STS_DIR / f"{name}.csv", CORPUS_DIR / f"{name}.txt"):
            if path.is_file():
                return path
        known = sorted(f"bundled:{p.stem}" for p in [*STS_DIR.glob("*.csv"), *CORPUS_DIR.glob("*.txt")])
        raise DataError(f"{key}={spec}: no such bundled file (bundled: {', '.join(known)})")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"{key}={spec}: file not found")
    return path


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path}: looks binary (NUL bytes); use a UTF-8 text file")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text; re-encode the file as UTF-8") from None


def _sentence(value: str, name: str, path: Path, line: int) -> str:
    text = value.strip()
    if not text:
        raise DataError(f"{path}:{line}: {name} is empty")
    return text


def _score(value: str, path: Path, line: int) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DataError(f"{path}:{line}: score {value!r} is not a number") from None
    low, high = SCORE_RANGE
    if not (math.isfinite(score) and low <= score <= high):
        raise DataError(f"{path}:{line}: score {value} is outside [{low:g}, {high:g}]")
    return score


def read_sts(path: Path) -> list[Pair]:
    """Scored pairs in the STS-B layout (at least 7 tab-separated fields)."""
    pairs = []
    for line, row in enumerate(_lines(path), start=1):
        if not row.strip():
            continue
        fields = row.split("\t")
        if len(fields) < len(STS_FIELDS):
            raise DataError(
                f"{path}:{line}: expected at least {len(STS_FIELDS)} tab-separated fields "
                f"({', '.join(STS_FIELDS)}), got {len(fields)}"
            )
        score = _score(fields[4], path, line)
        pairs.append(
            Pair(
                _sentence(fields[5], "sentence1", path, line),
                _sentence(fields[6], "sentence2", path, line),
                score,
                line,
            )
        )
    return _non_empty(pairs, path)


def read_pairs(path: Path) -> list[Pair]:
    """Unscored pairs, exactly two tab-separated fields a line."""
    pairs = []
    for line, row in enumerate(_lines(path), start=1):
        if not row.strip():
            continue
        fields = row.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{line}: expected 2 tab-separated fields (sentence1, sentence2), got {len(fields)}"
            )
        pairs.append(
            Pair(
                _sentence(fields[0], "sentence1", path, line),
                _sentence(fields[1], "sentence2", path, line),
                None,
                line,
            )
        )
    return _non_empty(pairs, path)


def read_sentences(path: Path) -> list[str]:
    """Unique non-blank lines in file order (a repeated sentence would be its own negative)."""
    sentences = list(dict.fromkeys(row.strip() for row in _lines(path) if row.strip()))
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty or blank)")
    return sentences


def _non_empty(pairs: list[Pair], path: Path) -> list[Pair]:
    if not pairs:
        raise DataError(f"{path}: no pairs (the file is empty or blank)")
    return pairs


READERS = {"sts": read_sts, "pairs": read_pairs}
