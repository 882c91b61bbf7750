"""Where a corpus is and how its documents are read, in bounded memory.

A corpus spec is a file, a directory (searched recursively for ``FORMATS`` files, hidden names
skipped), a glob (``corpus/**/*.jsonl.gz``, ``**`` recursive), ``bundled:<name>``, or a list of these.
Files are taken in sorted order (each entry's matches sorted, entries in list order, repeats
dropped), so a spec means the same documents in the same order on every machine.

Only regular files are read, each once: a file reached through two paths (a symlink, a hard link, a
linked directory) counts once, by its identity on disk (device and inode), under the first path in
that order; a directory search follows links into directories but never enters one twice, so a
symlink cycle (``ln -s . corpus/sub``) ends the walk instead of repeating the corpus (which would put
copies of held-out documents into training). FIFOs, sockets and devices found by a search are
skipped with a warning naming them (reading a FIFO waits forever for a writer); one named directly
is refused.

Formats, by suffix:
  ``.jsonl`` ``.jsonl.gz`` ``.jsonl.zst``  one JSON object a line, the text in ``text_field``
  ``.parquet``                             the text in the column ``text_field``
  anything else (``.txt``, ``.py``, ...)   UTF-8 text, the whole file one document

Everything is read in chunks of ``CHUNK`` bytes (JSONL by lines, Parquet by record batches of about
``CHUNK`` bytes): nothing reads a whole file into memory. Bad input raises :class:`DataError` naming
the file, as ``FILE:LINE: ...`` for JSONL.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from growth.data.corpus import corpus_path
from growth.errors import DataError

CHUNK = 1 << 20  # bytes read at a time, and the text handed to one encode call
DIGEST_CHUNK = 8 << 20
FORMATS = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")  # what a directory search collects
GLOB_CHARS = set("*?[")
BINARY_PROBE = 65536  # a NUL byte in a text file's first 64 KiB means it is not text


def file_format(path: str | Path) -> str:
    """``jsonl`` | ``jsonl.gz`` | ``jsonl.zst`` | ``parquet`` | ``text``, from the file name."""
    name = str(path).lower()
    for fmt in ("jsonl.gz", "jsonl.zst", "jsonl", "parquet"):
        if name.endswith("." + fmt):
            return fmt
    if name.endswith(".jsonl.zstd"):
        return "jsonl.zst"
    return "text"


def _specs(spec: str | Sequence[str]) -> list[str]:
    return [spec] if isinstance(spec, str) else [str(s) for s in spec]


def describe(spec: str | Sequence[str]) -> str:
    """A spec as messages show it (a long list abbreviated)."""
    items = _specs(spec)
    if len(items) == 1:
        return items[0]
    shown = items if len(items) <= 3 else [*items[:2], f"... ({len(items)} entries)"]
    return "[" + ", ".join(shown) + "]"


def resolve_files(spec: str | Sequence[str], key: str = "data.corpus") -> list[Path]:
    """The files of a corpus spec, in their canonical order (absolute paths, symlinks kept), each
    regular file once (by device and inode)."""
    items = _specs(spec)
    if not items or not all(item.strip() for item in items):
        raise DataError(
            f"{key}={describe(spec)}: empty corpus spec; give a file, a directory, a glob or a list of these"
        )
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for item in items:
        for path in _resolve_one(item, key):
            identity = _identity(path)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    return files


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _sorted(paths) -> list[Path]:
    return sorted((_absolute(p) for p in paths), key=lambda p: p.as_posix())


def _kind(path: str | Path) -> str:
    """``file`` for a regular file (through links), ``directory``, ``cycle`` (a path that goes round a
    symlink cycle too often to resolve: a glob's ``**`` walks into one), else what it is, as the
    warnings name it: ``a FIFO``, ``a socket``, ``a device``, ``a broken link``, ``missing``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as err:
        return "cycle" if err.errno == errno.ELOOP else f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


_WARNED: set[str] = set()


def _skip(path: str | Path, kind: str, key: str) -> None:
    """Warn once per process (and on rank 0 only: every rank resolves the spec) about a skipped entry;
    a path round a cycle is only another name of a file the search finds anyway."""
    if kind in ("cycle", "directory"):
        return
    line = f"warning: {key}: skipped {path} ({kind}, not a regular file)"
    if line not in _WARNED and os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)
    _WARNED.add(line)


def _walk(top: Path, key: str) -> list[Path]:
    """The corpus files under ``top``: links into directories followed, each directory entered once."""
    found, entered = [], set()
    for root, dirs, names in os.walk(top, followlinks=True):
        info = os.stat(root)
        if (info.st_dev, info.st_ino) in entered:  # a cycle, or a second way into a directory
            dirs[:] = []
            continue
        entered.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or not name.lower().endswith(FORMATS):
                continue
            kind = _kind(Path(root) / name)
            if kind == "file":
                found.append(Path(root) / name)
            else:
                _skip(Path(root) / name, kind, key)
    return found


def _resolve_one(item: str, key: str) -> list[Path]:
    if item.startswith("bundled:"):
        return [_absolute(corpus_path(item, key))]
    path = Path(item).expanduser()
    kind = _kind(path)
    if kind == "file":
        return [_absolute(path)]
    if kind == "directory":
        found = _walk(path, key)
        if not found:
            raise DataError(f"{key}={item}: the directory holds no corpus files ({', '.join(FORMATS)})")
        return _sorted(found)
    if kind not in ("missing", "a broken link"):
        raise DataError(
            f"{key}={item} is {kind}, not a regular file; point it at a file, a directory or a glob"
        )
    if GLOB_CHARS & set(item):
        matches = []
        for match in glob.glob(os.path.expanduser(item), recursive=True):
            kind = _kind(match)
            if kind == "file":
                matches.append(match)
            else:
                _skip(match, kind, key)
        if not matches:
            raise DataError(f"{key}={item}: the glob matches no files")
        return _sorted(matches)
    raise DataError(
        f"{key}={item}: file not found; point it at a file, a directory or a glob of .txt/.jsonl/.parquet files"
    )


# -- reading ------------------------------------------------------------------------------------------
def open_binary(path: str | Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from None


def _read(handle: BinaryIO, size: int, path: str | Path) -> bytes:
    try:
        return handle.read(size)
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from None
    except EOFError as err:  # gzip: a truncated stream
        raise DataError(f"{path}: the compressed stream is truncated ({err})") from None


def file_stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def content_digest(path: Path) -> str:
    """Digest of a file's bytes, read in chunks (memoised per process by path, size, mtime, inode)."""
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo not in _DIGESTS:
        digest = hashlib.blake2b(digest_size=16)
        with open_binary(path) as handle:
            while block := _read(handle, DIGEST_CHUNK, path):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def corpus_digest(files: Sequence[Path]) -> tuple[str, list[dict]]:
    """Digest of the file list (paths, sizes, modification times) and of every file's content."""
    digest = hashlib.blake2b(digest_size=16)
    listing = []
    for path in files:
        size, mtime = file_stat(path)
        entry = {"path": str(path), "size": size, "mtime_ns": mtime}
        listing.append(entry)
        digest.update(json.dumps([entry["path"], size, mtime, content_digest(path)]).encode())
    return digest.hexdigest(), listing


@dataclass(frozen=True)
class Piece:
    """Part of one file: a byte range of a text/JSONL file, or row groups [start, end) of a Parquet file."""

    path: str
    fmt: str
    start: int
    end: int
    size_hint: int = 0  # Parquet: compressed bytes of the row groups

    @property
    def weight(self) -> int:
        """Input bytes of the piece (what the progress bar counts)."""
        return self.size_hint if self.fmt == "parquet" else self.end - self.start


@dataclass
class Segment:
    """Texts read from a piece; ``ends[i]`` says whether ``texts[i]`` ends its document."""

    texts: list[str]
    ends: list[bool]
    nbytes: int  # input bytes consumed since the previous segment


def read_piece(piece: Piece, text_field: str) -> Iterator[Segment]:
    if piece.fmt == "text":
        yield from _text_segments(piece.path)
    elif piece.fmt == "parquet":
        yield from _parquet_segments(piece, text_field)
    else:
        yield from _jsonl_segments(piece, text_field)


def iter_texts(path: Path, text_field: str) -> Iterator[tuple[str, bool]]:
    """(text, whether it ends its document) for a whole file in order; a long text document comes as
    several line-aligned chunks."""
    for piece in file_pieces(path, text_field, split_bytes=0):
        for segment in read_piece(piece, text_field):
            yield from zip(segment.texts, segment.ends)


def iter_documents(path: Path, text_field: str) -> Iterator[str]:
    """The texts of :func:`iter_texts` alone (e.g. to sample lines from)."""
    for text, _ in iter_texts(path, text_field):
        yield text


def _decode_text(data: bytes, path: str, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {offset + err.start}); re-encode it as UTF-8"
        ) from None


def _cut(buffer: bytes, final: bool) -> int:
    """Where to split ``buffer``: after its last newline; once it is long (a line of over 4 MiB), after
    its last space, else before its last UTF-8 lead byte; 0: read more first."""
    if final:
        return len(buffer)
    cut = buffer.rfind(b"\n") + 1
    if cut or len(buffer) < 4 * CHUNK:
        return cut
    cut = buffer.rfind(b" ") + 1
    if cut:
        return cut
    cut = len(buffer) - 1
    while cut > 0 and (buffer[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or len(buffer)


def _text_segments(path: str) -> Iterator[Segment]:
    """One document: the file's text in line-aligned chunks of about ``CHUNK`` bytes (reading one chunk
    ahead, so a file shorter than a chunk is one piece of text)."""
    with open_binary(path) as handle:
        data = _read(handle, CHUNK, path)
        if b"\x00" in data[:BINARY_PROBE]:
            raise DataError(f"{path}: looks binary (NUL bytes); use a UTF-8 text file")
        offset, carry = 0, b""
        while True:
            following = _read(handle, CHUNK, path) if data else b""
            final = not following
            buffer = carry + data
            cut = _cut(buffer, final)
            if cut or final:
                chunk, carry = buffer[:cut], buffer[cut:]
                text = _decode_text(chunk, path, offset)
                offset += len(chunk)
                yield Segment([text], [final], len(chunk))
            else:
                carry = buffer
            if final:
                return
            data = following


def line_number(path: str, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset`` (counted in chunks; error path only)."""
    count = 0
    with open_binary(path) as handle:
        remaining = offset
        while remaining > 0:
            block = _read(handle, min(DIGEST_CHUNK, remaining), path)
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count + 1


def _lines(stream: BinaryIO, path: str, first_offset: int) -> Iterator[tuple[int, bytes]]:
    """(offset of the line in the stream, line without its newline), read in chunks."""
    offset, carry = first_offset, b""
    while True:
        data = _read(stream, CHUNK, path)
        if not data:
            if carry:
                yield offset, carry
            return
        buffer = carry + data
        start = 0
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            yield offset, buffer[start:newline]
            offset += newline + 1 - start
            start = newline + 1
        carry = buffer[start:]


def _open_jsonl(piece: Piece) -> tuple[BinaryIO, BinaryIO, int]:
    """(raw file, decompressed stream, offset of the first whole line at or after piece.start)."""
    raw = open_binary(piece.path)
    if piece.fmt == "jsonl.gz":
        import gzip

        return raw, gzip.GzipFile(fileobj=raw, mode="rb"), 0
    if piece.fmt == "jsonl.zst":
        import zstandard

        return raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), 0
    start = piece.start
    if start > 0:  # a line belongs to the piece its first byte is in
        raw.seek(start - 1)
        if _read(raw, 1, piece.path) != b"\n":
            while True:
                block = _read(raw, 65536, piece.path)
                if not block:
                    start = piece.end
                    break
                newline = block.find(b"\n")
                if newline >= 0:
                    start = raw.tell() - len(block) + newline + 1
                    raw.seek(start)
                    break
    return raw, raw, start


def _jsonl_segments(piece: Piece, text_field: str) -> Iterator[Segment]:
    raw, stream, start = _open_jsonl(piece)
    compressed = piece.fmt != "jsonl"
    texts: list[str] = []
    size, reported = 0, 0
    # Line numbers are counted from the file's start; a piece that starts mid-file learns its first
    # line number only when it has an error to report.
    first_line = 1 if start == 0 else None
    path = piece.path

    def where(index: int, offset: int) -> str:
        number = first_line + index if first_line is not None else line_number(path, offset)
        return f"{path}:{number}"

    def consumed() -> int:
        return (raw.tell() if compressed else position) - piece.start

    position = start
    try:
        if start >= piece.end and not compressed:  # the piece's bytes all belong to a line begun before it
            yield Segment([], [], piece.weight)
            return
        for index, (offset, line) in enumerate(_lines(stream, path, start)):
            if not compressed and offset >= piece.end:
                break
            position = offset + len(line) + 1
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{where(index, offset)}: not UTF-8 text (byte {err.start} of the line)"
                ) from None
            except ValueError as err:
                reason = getattr(err, "msg", str(err))
                column = getattr(err, "colno", None)
                raise DataError(
                    f"{where(index, offset)}: not valid JSON ({reason}"
                    + (f" at column {column})" if column else ")")
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{where(index, offset)}: expected a JSON object with a {text_field!r} field, "
                    f"got {type(record).__name__}"
                )
            if text_field not in record:
                raise DataError(
                    f"{where(index, offset)}: no {text_field!r} field (data.text_field={text_field}); "
                    f"its keys are {', '.join(map(str, list(record)[:8])) or 'none'}"
                )
            text = record[text_field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise DataError(
                    f"{where(index, offset)}: the {text_field!r} field is a {type(text).__name__}, not a string"
                )
            texts.append(text)
            size += len(line)
            if size >= CHUNK:
                now = consumed()
                yield Segment(texts, [True] * len(texts), now - reported)
                texts, size, reported = [], 0, now
        yield Segment(texts, [True] * len(texts), piece.weight - reported)
    finally:
        stream.close()
        raw.close()


def _parquet_file(path: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except OSError as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise DataError(f"{path}: cannot read it ({err.strerror or err})") from None
        raise DataError(f"{path}: not a Parquet file ({str(err).splitlines()[0]})") from None
    except Exception as err:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path}: not a Parquet file ({str(err).splitlines()[0]})") from None


def _parquet_column(parquet, path: str, text_field: str) -> int:
    import pyarrow as pa

    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise DataError(
            f"{path}: no column {text_field!r} (data.text_field={text_field}); "
            f"its columns are {', '.join(schema.names[:8]) or 'none'}"
        )
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: the column {text_field!r} holds {kind}, not text")
    return schema.get_field_index(text_field)


def _parquet_segments(piece: Piece, text_field: str) -> Iterator[Segment]:
    parquet = _parquet_file(piece.path)
    try:
        _parquet_column(parquet, piece.path, text_field)
        meta = parquet.metadata
        for group in range(piece.start, piece.end):
            info = meta.row_group(group)
            row_bytes = max(1, info.total_byte_size // max(1, info.num_rows))
            batch_rows = max(1, CHUNK // row_bytes)
            compressed = sum(info.column(c).total_compressed_size for c in range(info.num_columns))
            batches = parquet.iter_batches(
                batch_size=batch_rows, row_groups=[group], columns=[text_field], use_threads=False
            )
            for batch in batches:
                texts = [t for t in batch.column(0).to_pylist() if t is not None]
                yield Segment(texts, [True] * len(texts), 0)
            yield Segment([], [], compressed)
    finally:
        parquet.close()


# -- planning work ------------------------------------------------------------------------------------
def file_pieces(path: Path, text_field: str, split_bytes: int) -> list[Piece]:
    """A file as pieces: uncompressed JSONL in byte ranges of ``split_bytes`` (0: whole), Parquet by row group."""
    fmt, name = file_format(path), str(path)
    if fmt == "parquet":
        parquet = _parquet_file(name)
        try:
            _parquet_column(parquet, name, text_field)
            meta = parquet.metadata
            return [
                Piece(
                    name,
                    fmt,
                    g,
                    g + 1,
                    sum(
                        meta.row_group(g).column(c).total_compressed_size
                        for c in range(meta.row_group(g).num_columns)
                    ),
                )
                for g in range(meta.num_row_groups)
            ]
        finally:
            parquet.close()
    size = path.stat().st_size
    if fmt == "jsonl" and split_bytes and size > split_bytes:
        return [Piece(name, fmt, s, min(s + split_bytes, size)) for s in range(0, size, split_bytes)]
    return [Piece(name, fmt, 0, size)]


@dataclass
class Unit:
    """Pieces one worker encodes into one part file; units are planned from file sizes alone, so the
    parts, and their order, do not depend on the number of workers."""

    index: int
    pieces: list[Piece]

    @property
    def weight(self) -> int:
        return sum(p.weight for p in self.pieces)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "pieces": [[p.path, p.fmt, p.start, p.end, p.size_hint] for p in self.pieces],
        }

    @classmethod
    def from_json(cls, data: dict) -> Unit:
        return cls(data["index"], [Piece(*p) for p in data["pieces"]])


def plan_units(files: Sequence[Path], text_field: str, unit_bytes: int) -> list[Unit]:
    """Group small files, split large JSONL files: units of about ``unit_bytes`` input bytes each."""
    units: list[Unit] = []
    current: list[Piece] = []
    weight = 0
    for path in files:
        for piece in file_pieces(path, text_field, unit_bytes):
            if current and weight + piece.weight > unit_bytes:
                units.append(Unit(len(units), current))
                current, weight = [], 0
            current.append(piece)
            weight += piece.weight
    if current:
        units.append(Unit(len(units), current))
    return units
