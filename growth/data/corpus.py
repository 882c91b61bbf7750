"""Locate and read a text corpus: a file path, or ``bundled:<name>`` for one shipped in the package."""

from __future__ import annotations

import hashlib
from pathlib import Path

from growth.data.errors import DataError

BUNDLED_DIR = Path(__file__).parent / "corpus"


def corpus_path(spec: str, key: str = "data.corpus") -> Path:
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        path = BUNDLED_DIR / f"{name}.txt"
        if not path.is_file():
            known = ", ".join(f"bundled:{p.stem}" for p in sorted(BUNDLED_DIR.glob("*.txt")))
            raise DataError(f"{key}={spec}: no such bundled corpus (bundled: {known})")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"{key}={spec}: file not found; point it at a UTF-8 text file")
    return path


def read_corpus(spec: str, key: str = "data.corpus") -> str:
    """The corpus text; empty, binary or non-UTF-8 files are refused with a clear message."""
    path = corpus_path(spec, key)
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise DataError(f"{key}={spec}: looks binary (NUL bytes); use a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{key}={spec}: not UTF-8 text (byte {err.start}); re-encode it as UTF-8") from None
    if not text.strip():
        raise DataError(f"{key}={spec}: the file is empty; use a corpus with text in it")
    return text


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
