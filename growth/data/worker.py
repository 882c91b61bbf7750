"""Encode one unit of a corpus into a token part file; ``python -m growth.data.worker`` serves units.

A part is ``<prefix>.bin`` (the tokens, every document followed by EOS, in the cache's dtype) and
``<prefix>.idx`` (int64: where each document ends in the part, EOS included). Tokens are flushed
every ``FLUSH_TOKENS``, so a worker holds about one chunk of text and its tokens at a time.

The process protocol is JSON lines: the parent writes ``{"tokenizer", "text_field", "dtype",
"parts"}`` then one unit a line; the worker answers ``{"unit", "bytes", "documents", "tokens"}``
progress lines, then ``{"unit", "done": true, ...}`` or ``{"unit", "error": message}``. It ends at
the end of its input, or when its parent dies.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from growth.data.sources import Unit, read_piece
from growth.errors import DataError

FLUSH_TOKENS = 1 << 18
Report = Callable[[int, int, int], None]  # (input bytes, documents, tokens) since the last report


def part_paths(parts: Path, index: int) -> tuple[Path, Path]:
    return parts / f"{index:07d}.bin", parts / f"{index:07d}.idx"


def encode_unit(
    unit: Unit, processor, eos_id: int, text_field: str, dtype: np.dtype, parts: Path, report: Report
) -> dict[str, int]:
    """Encode ``unit`` into its part files; a document that encodes to no tokens is left out."""
    tokens_path, index_path = part_paths(parts, unit.index)
    written, documents, doc_tokens = 0, 0, 0
    pending: list[list[int]] = []
    pending_tokens = 0
    ends: list[int] = []
    eos = [eos_id]
    with open(tokens_path, "wb") as out:

        def flush() -> None:
            nonlocal written, pending, pending_tokens
            if pending_tokens:
                np.fromiter(itertools.chain.from_iterable(pending), dtype=dtype, count=pending_tokens).tofile(
                    out
                )
            written += pending_tokens
            pending, pending_tokens = [], 0

        for piece in unit.pieces:
            for segment in read_piece(piece, text_field):
                encoded = processor.encode(segment.texts, num_threads=1) if segment.texts else []
                docs_before, tokens_before = documents, written + pending_tokens
                for ids, ends_doc in zip(encoded, segment.ends):
                    if ids:
                        pending.append(ids)
                        pending_tokens += len(ids)
                        doc_tokens += len(ids)
                    if ends_doc:
                        if doc_tokens:
                            pending.append(eos)
                            pending_tokens += 1
                            ends.append(written + pending_tokens)
                            documents += 1
                        doc_tokens = 0
                report(segment.nbytes, documents - docs_before, written + pending_tokens - tokens_before)
                if pending_tokens >= FLUSH_TOKENS:
                    flush()
        flush()
    np.asarray(ends, dtype=np.int64).tofile(index_path)
    return {"documents": documents, "tokens": written}


def load_processor(path: str):
    from growth.data.hf_tokenizer import is_hf_tokenizer, load_hf_processor  # a Hugging Face tokenizer.json

    if is_hf_tokenizer(path):
        return load_hf_processor(path)[0]
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.load(path)
    return processor


def _die_with_parent() -> None:
    try:  # Linux: SIGTERM when the parent exits, so a killed preparation leaves no worker running
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    _die_with_parent()
    parent = os.getppid()
    out = sys.stdout

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    setup = json.loads(sys.stdin.readline())
    processor = load_processor(setup["tokenizer"])
    dtype, parts, text_field = np.dtype(setup["dtype"]), Path(setup["parts"]), setup["text_field"]
    for line in sys.stdin:
        unit = Unit.from_json(json.loads(line))
        totals = [0, 0, 0]
        last = time.monotonic()

        def report(nbytes: int, docs: int, tokens: int) -> None:  # called within this iteration only
            nonlocal last
            totals[0] += nbytes
            totals[1] += docs
            totals[2] += tokens
            now = time.monotonic()
            if now - last >= 0.25:
                if os.getppid() != parent:
                    sys.exit(1)
                send({"unit": unit.index, "bytes": totals[0], "documents": totals[1], "tokens": totals[2]})
                totals[:] = [0, 0, 0]
                last = now

        try:
            stats = encode_unit(unit, processor, processor.eos_id(), text_field, dtype, parts, report)
        except DataError as err:
            send({"unit": unit.index, "error": str(err)})
            continue
        send({"unit": unit.index, "bytes": totals[0], "documents": totals[1], "tokens": totals[2]})
        send({"unit": unit.index, "done": True, **stats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
