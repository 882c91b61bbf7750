"""Tokenize a corpus into the cache: parallel, streaming, resumable by starting over.

A cache entry ``tokens-<key>/`` holds ``train.bin`` and ``val.bin`` (the packed token streams, every
document followed by EOS, ``uint16`` or ``uint32`` when the vocabulary needs it), ``train.idx`` and
``val.idx`` (int64: where each document ends) and ``meta.json``. The key is a digest of the file list
(paths, sizes, modification times), of every file's content (read in chunks), of the tokenizer file,
the text field and the split, so a corpus that changed is prepared again, never mixed with old tokens.

Preparation plans *units* of about ``UNIT_BYTES`` input bytes from the file sizes alone (small files
grouped, large JSONL files split at line boundaries, Parquet by row group), encodes them with
``workers`` processes (``growth/data/worker.py``) into part files, then concatenates the parts in
unit order while routing each document to its split: the result does not depend on the number of
workers. Everything happens in a hidden ``.tokens-<key>.partial-<host>-<pid>/`` folder renamed to
the entry when complete, so a killed preparation leaves nothing that looks complete; the next run
removes the dead folder and starts again.

The validation split holds out ``round(val_fraction * D)`` of the D documents, chosen by a seeded
hash of their index (exact count, in two streaming passes); when that rounds to 0 (e.g. a corpus of
one text file) it is the last ``val_fraction`` of the token stream instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from growth.data.sources import (
    Unit,
    content_digest,
    corpus_digest,
    describe,
    file_stat,
    plan_units,
    resolve_files,
)
from growth.data.worker import encode_unit, load_processor, part_paths
from growth.errors import DataError

FORMAT_VERSION = 2
UNIT_BYTES = 4 << 20
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Split:
    """How an entry is split: ``val_fraction`` 0 puts every document in ``train``."""

    val_fraction: float
    seed: int = 0


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Entry:
    """Where a corpus's tokens live (or will) in the cache, and what they are made of."""

    folder: Path
    files: list[Path]
    listing: list[dict]
    spec: str
    key: str

    @property
    def complete(self) -> bool:
        return (self.folder / "meta.json").is_file()


def tokenizer_digest(path: Path) -> str:
    """Digest of a tokenizer file, or of every file of a tokenizer folder (Hugging Face)."""
    path = Path(path)
    if not path.is_dir():
        return content_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.blake2b(
        json.dumps([[str(p.relative_to(path)), content_digest(p)] for p in files]).encode(), digest_size=16
    ).hexdigest()


def cache_entry(
    spec: str | Sequence[str],
    tokenizer,
    cache_dir: Path,
    text_field: str,
    split: Split,
    key: str = "data.corpus",
) -> Entry:
    files = resolve_files(spec, key)
    corpus, listing = corpus_digest(files)
    digest = hashlib.blake2b(digest_size=10)
    digest.update(
        json.dumps(
            [
                FORMAT_VERSION,
                corpus,
                tokenizer_digest(tokenizer.path),
                text_field,
                split.val_fraction,
                split.seed,
            ]
        ).encode()
    )
    return Entry(Path(cache_dir) / f"tokens-{digest.hexdigest()}", files, listing, describe(spec), key)


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def prepare_corpus(
    spec: str | Sequence[str],
    tokenizer,
    cache_dir: Path,
    *,
    text_field: str = "text",
    split: Split = Split(0.05),
    workers: int = 1,
    progress: bool = False,
    key: str = "data.corpus",
    unit_bytes: int = UNIT_BYTES,
) -> Path:
    """The cache folder of ``spec``'s tokens, prepared first when missing."""
    entry = cache_entry(spec, tokenizer, cache_dir, text_field, split, key)
    if entry.complete:
        return entry.folder
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(cache_dir)
    partial = cache_dir / f".{entry.folder.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    parts = partial / "parts"
    parts.mkdir(parents=True)
    try:
        started = time.perf_counter()
        units = plan_units(entry.files, text_field, unit_bytes)
        dtype = token_dtype(tokenizer.vocab_size)
        bar = Progress(sum(u.weight for u in units), f"preparing {entry.spec}" if progress else None)
        try:
            stats = encode_units(
                units, str(tokenizer.path), tokenizer.eos_id, text_field, dtype, parts, workers, bar
            )
        finally:
            bar.close()
        for item in entry.listing:  # a file that changed while it was read would make a mixed entry
            if file_stat(Path(item["path"])) != (item["size"], item["mtime_ns"]):
                raise DataError(
                    f"{item['path']}: changed while it was being prepared; nothing was cached, run again"
                )
        documents = sum(s["documents"] for s in stats)
        if documents == 0:
            raise no_text_error(entry)
        meta = assemble(partial, parts, stats, split, dtype)
        meta.update(
            format=FORMAT_VERSION,
            corpus=entry.spec,
            key=key,
            text_field=text_field,
            tokenizer=str(tokenizer.path),
            tokenizer_digest=tokenizer_digest(tokenizer.path),
            vocab_size=tokenizer.vocab_size,
            val_fraction=split.val_fraction,
            seed=split.seed,
            units=len(units),
            input_bytes=sum(u.weight for u in units),
            seconds=round(time.perf_counter() - started, 3),
            files=entry.listing,
        )
        shutil.rmtree(parts)
        _write_json(partial / "meta.json", meta)  # last: its presence marks a complete entry
        try:
            partial.rename(entry.folder)
        except OSError:
            if not entry.complete:  # not another process finishing the same entry first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry.folder


def no_text_error(entry: Entry) -> DataError:
    if len(entry.files) == 1:
        return DataError(
            f"{entry.files[0]}: the file is empty (no document with text); use a corpus with text in it"
        )
    return DataError(
        f"{entry.key}={entry.spec}: none of its {len(entry.files)} files holds a document with text"
    )


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_partials(cache_dir: Path) -> None:
    """Remove the partial folders of preparations on this host whose process is gone."""
    host = socket.gethostname()
    for folder in cache_dir.glob(".tokens-*.partial-*"):
        owner, _, pid = folder.name.split(".partial-", 1)[1].rpartition("-")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


# -- progress -----------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over input bytes (so it shows MB/s) with documents and tokens; silent without a name."""

    def __init__(self, total_bytes: int, name: str | None):
        self.documents = self.tokens = 0
        self.bar = None
        if name:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                desc=name,
                file=sys.stderr,
                mininterval=0.5,
                smoothing=0.1,
            )

    def update(self, nbytes: int, documents: int, tokens: int) -> None:
        self.documents += documents
        self.tokens += tokens
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.documents:,} docs, {self.tokens:,} tokens", refresh=False)
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- encoding the units -------------------------------------------------------------------------------
def encode_units(
    units: list[Unit],
    tokenizer_path: str,
    eos_id: int,
    text_field: str,
    dtype: np.dtype,
    parts: Path,
    workers: int,
    progress: Progress,
) -> list[dict]:
    """Per-unit ``{"documents", "tokens"}``, in unit order; units run in ``workers`` processes."""
    workers = max(1, min(workers, len(units)))
    if workers == 1:
        processor = load_processor(tokenizer_path)
        return [encode_unit(u, processor, eos_id, text_field, dtype, parts, progress.update) for u in units]
    return _encode_in_processes(
        units,
        {"tokenizer": tokenizer_path, "text_field": text_field, "dtype": dtype.name, "parts": str(parts)},
        workers,
        progress,
    )


class _Worker:
    def __init__(self, setup: dict):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "growth.data.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.buffer = b""
        self.unit: int | None = None
        self.send(setup)

    def send(self, message: dict) -> None:
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def messages(self) -> list[dict] | None:
        """Whole lines read so far; None at the end of the worker's output."""
        data = os.read(self.process.stdout.fileno(), 1 << 16)
        if not data:
            return None
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        return [json.loads(line) for line in lines if line]


def _encode_in_processes(units: list[Unit], setup: dict, workers: int, progress: Progress) -> list[dict]:
    pending = iter(units)
    results: dict[int, dict] = {}
    pool = [_Worker(setup) for _ in range(workers)]
    selector = selectors.DefaultSelector()

    def feed(worker: _Worker) -> None:
        unit = next(pending, None)
        worker.unit = None if unit is None else unit.index
        if unit is None:
            worker.process.stdin.close()
        else:
            worker.send(unit.to_json())

    try:
        for worker in pool:
            selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
            feed(worker)
        while len(results) < len(units):
            for key, _ in selector.select():
                worker = key.data
                messages = worker.messages()
                if messages is None:
                    selector.unregister(key.fileobj)
                    if worker.unit is not None:
                        code = worker.process.wait()
                        raise RuntimeError(
                            f"a data preparation worker died (exit code {code}) on unit {worker.unit}"
                        )
                    continue
                for message in messages:
                    if "error" in message:
                        raise DataError(message["error"])
                    if message.get("done"):
                        results[message["unit"]] = {
                            "documents": message["documents"],
                            "tokens": message["tokens"],
                        }
                        feed(worker)
                    else:
                        progress.update(message["bytes"], message["documents"], message["tokens"])
    finally:
        selector.close()
        for worker in pool:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait()
            for stream in (worker.process.stdin, worker.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
    return [results[u.index] for u in units]


# -- the validation split -----------------------------------------------------------------------------
_M1, _M2, _GOLDEN = (
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
    np.uint64(0x9E3779B97F4A7C15),
)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64, so distinct indices get distinct hashes."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def document_hashes(first: int, count: int, seed: int) -> np.ndarray:
    salt = _mix64(np.array([seed], dtype=np.uint64))[0]
    return _mix64(np.arange(first, first + count, dtype=np.uint64) ^ salt)


def validation_threshold(documents: int, count: int, seed: int, block: int = 1 << 20) -> np.uint64:
    """The hash at or below which exactly ``count`` of ``documents`` documents fall: a histogram of the
    top 16 bits, then the one bucket that holds the boundary (memory: the histogram and that bucket)."""
    histogram = np.zeros(1 << 16, dtype=np.int64)
    for first in range(0, documents, block):
        hashes = document_hashes(first, min(block, documents - first), seed)
        histogram += np.bincount((hashes >> np.uint64(48)).astype(np.int64), minlength=1 << 16)
    cumulative = np.cumsum(histogram)
    bucket = int(np.searchsorted(cumulative, count))
    rank = count - int(cumulative[bucket] - histogram[bucket])
    members = []
    for first in range(0, documents, block):
        hashes = document_hashes(first, min(block, documents - first), seed)
        members.append(hashes[(hashes >> np.uint64(48)) == np.uint64(bucket)])
    return np.sort(np.concatenate(members))[rank - 1]


def validation_documents(documents: int, split: Split) -> int:
    """How many whole documents the split holds out (0: split the token stream's tail instead)."""
    if split.val_fraction <= 0:
        return 0
    return min(int(np.floor(split.val_fraction * documents + 0.5)), documents - 1)


DOC_BLOCK = 1 << 20  # documents routed at a time


class _SplitWriter:
    def __init__(self, folder: Path, name: str):
        self.tokens = open(folder / f"{name}.bin", "wb")
        self.index = open(folder / f"{name}.idx", "wb")
        self.written = self.documents = self.last_end = 0

    def write_tokens(self, tokens: np.ndarray) -> None:
        np.asarray(tokens).tofile(self.tokens)
        self.written += len(tokens)

    def write_ends(self, ends: np.ndarray) -> None:
        np.asarray(ends, dtype=np.int64).tofile(self.index)
        self.documents += len(ends)
        if len(ends):
            self.last_end = int(ends[-1])

    def write_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        self.write_ends(self.written + np.cumsum(lengths, dtype=np.int64))
        self.write_tokens(tokens)

    def close(self) -> None:
        self.tokens.close()
        self.index.close()


def assemble(folder: Path, parts: Path, stats: list[dict], split: Split, dtype: np.dtype) -> dict:
    """Concatenate the parts into ``train``/``val`` in unit order, routing whole documents (or, split by
    tokens, the stream's tail) and deleting each part once copied; returns the counts."""
    documents, total = sum(s["documents"] for s in stats), sum(s["tokens"] for s in stats)
    held_out = validation_documents(documents, split)
    mode = "documents" if held_out else ("tokens" if split.val_fraction > 0 else "none")
    threshold = validation_threshold(documents, held_out, split.seed) if held_out else None
    cut = total - max(1, int(total * split.val_fraction)) if mode == "tokens" else total
    train, val = _SplitWriter(folder, "train"), _SplitWriter(folder, "val")
    first_doc = first_token = 0
    try:
        for index, stat in enumerate(stats):
            tokens_path, index_path = part_paths(parts, index)
            count = stat["documents"]
            tokens = np.memmap(tokens_path, dtype=dtype, mode="r") if stat["tokens"] else np.zeros(0, dtype)
            ends = np.memmap(index_path, dtype=np.int64, mode="r") if count else np.zeros(0, np.int64)
            previous = 0
            for a in range(0, count, DOC_BLOCK):
                block_ends = np.asarray(ends[a : a + DOC_BLOCK])
                block_starts = np.concatenate([[previous], block_ends[:-1]]).astype(np.int64)
                previous = int(block_ends[-1])
                if mode == "tokens":
                    first, last, local_cut = int(block_starts[0]), int(block_ends[-1]), cut - first_token
                    if local_cut > first:
                        train.write_tokens(tokens[first : min(last, local_cut)])
                    if last > local_cut:
                        val.write_tokens(tokens[max(first, local_cut) : last])
                    absolute = first_token + block_ends
                    train.write_ends(absolute[absolute <= cut])
                    val.write_ends(absolute[absolute > cut] - cut)
                    continue
                held = (
                    document_hashes(first_doc + a, len(block_ends), split.seed) <= threshold
                    if threshold is not None
                    else np.zeros(len(block_ends), dtype=bool)
                )
                edges = np.concatenate([[0], np.flatnonzero(np.diff(held)) + 1, [len(block_ends)]])
                for lo, hi in zip(edges[:-1], edges[1:]):
                    (val if held[lo] else train).write_documents(
                        tokens[block_starts[lo] : block_ends[hi - 1]], block_ends[lo:hi] - block_starts[lo:hi]
                    )
            first_doc += count
            first_token += stat["tokens"]
            del tokens, ends
            tokens_path.unlink()
            index_path.unlink()
        if mode == "tokens" and train.last_end < cut:
            train.write_ends(np.array([cut]))  # the document cut in two ends the train split
    finally:
        train.close()
        val.close()
    return {
        "dtype": dtype.name,
        "documents": documents,
        "tokens": total,
        "split": mode,
        "train_documents": train.documents,
        "train_tokens": train.written,
        "val_documents": val.documents,
        "val_tokens": val.written,
    }
