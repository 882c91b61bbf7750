"""Corpora shipped in the package (``bundled:<name>``), and a file digest read in chunks.

Any other corpus is a file, a directory, a glob or a list of these (``growth/data/sources.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from growth.errors import DataError

BUNDLED_DIR = Path(__file__).parent / "corpus"


def corpus_path(spec: str, key: str = "data.corpus") -> Path:
    """The file of ``bundled:<name>``, or ``spec`` itself when it is an existing file."""
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


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (16 hex digits), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()[:16]
