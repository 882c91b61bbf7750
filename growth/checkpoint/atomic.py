"""Write a file under a temporary name, then rename it: a reader never sees half a file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success and remove
    it on any failure (a full disk leaves no ``*.tmp<pid>`` behind)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def torch_save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def failed_write_line(err: OSError, out: Path | str) -> str:
    """The one ``error:`` line of a tool whose write into ``out`` failed (a full disk, no permission);
    the tools write under a temporary name, so nothing was left at ``out``."""
    return f"error: {err.filename or out}: {err.strerror or err}; nothing was written to --out {out}"
