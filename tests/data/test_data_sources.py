"""growth.data.sources: corpus specs (file, directory, glob, list, bundled), formats, streaming readers,
JSONL byte ranges; the tokenizer's seeded reservoir sample."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

from growth.data.errors import DataError
from growth.data.sources import (
    Piece,
    file_format,
    file_pieces,
    iter_documents,
    plan_units,
    read_piece,
    resolve_files,
)
from growth.data.tokenizer import Reservoir, sample_sentences, sentences


def write_jsonl(path: Path, texts: list[str], **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, **extra}) + "\n" for t in texts))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    write_jsonl(root / "b" / "c.jsonl", ["gamma"])
    with gzip.open(root / "b" / "d.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"text": "delta"}) + "\n")
    (root / "README.md").write_text("not a corpus file")  # skipped in a directory search
    (root / ".hidden.txt").write_text("skipped")
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("skipped")
    return root


def names(files: list[Path], root: Path) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def test_formats_by_suffix():
    assert [
        file_format(n) for n in ("a.jsonl", "a.JSONL.GZ", "a.jsonl.zst", "a.parquet", "a.txt", "a.py")
    ] == ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "text", "text"]


def test_directory_is_searched_recursively_in_sorted_order(tree):
    assert names(resolve_files(str(tree)), tree) == ["a.txt", "b/c.jsonl", "b/d.jsonl.gz"]


def test_glob_list_and_bundled(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert names(resolve_files("**/*.jsonl*"), tree) == ["b/c.jsonl", "b/d.jsonl.gz"]
    # a list keeps its entries' order, each entry sorted, and drops repeats
    files = resolve_files(["b/*.jsonl", "a.txt", str(tree / "b"), "README.md"])
    assert names(files, tree) == ["b/c.jsonl", "a.txt", "b/d.jsonl.gz", "README.md"]
    assert resolve_files("bundled:tinyshakespeare")[0].name == "tinyshakespeare.txt"


def test_links_and_cycles_give_each_regular_file_once(tree, monkeypatch):
    """Issue 26: a symlink cycle, a second link to a file, a hard link and a linked directory: the
    search ends, and every file is read once, under its first path in sorted order."""
    (tree / "loop").symlink_to(".")
    (tree / "alias.txt").symlink_to("a.txt")
    os.link(tree / "a.txt", tree / "b" / "hard.txt")
    (tree / "z_b_again").symlink_to("b")
    assert names(resolve_files(str(tree)), tree) == ["a.txt", "b/c.jsonl", "b/d.jsonl.gz"]
    monkeypatch.chdir(tree)
    assert names(resolve_files("**/*.txt"), tree) == ["a.txt"]
    assert names(resolve_files(["alias.txt", "a.txt", "loop/b"]), tree) == [
        "alias.txt",  # a.txt and b/hard.txt are this file again
        "loop/b/c.jsonl",
        "loop/b/d.jsonl.gz",
    ]


def test_fifos_and_sockets_are_skipped_with_a_warning_and_refused_when_named(tree, capsys):
    """Issue 26: a FIFO named ``*.txt`` hung the run forever (opening it waits for a writer)."""
    import socket

    os.mkfifo(tree / "pipe.txt")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tree / "b" / "sock.jsonl"))
    try:
        assert names(resolve_files(str(tree)), tree) == ["a.txt", "b/c.jsonl", "b/d.jsonl.gz"]
        assert names(resolve_files(str(tree / "*.txt")), tree) == ["a.txt"]
        warnings = capsys.readouterr().err.splitlines()
        assert warnings == [
            f"warning: data.corpus: skipped {tree / 'pipe.txt'} (a FIFO, not a regular file)",
            f"warning: data.corpus: skipped {tree / 'b' / 'sock.jsonl'} (a socket, not a regular file)",
        ]
        with pytest.raises(DataError, match=r"^data\.corpus=\S+pipe\.txt is a FIFO, not a regular file"):
            resolve_files(str(tree / "pipe.txt"))
        if Path("/dev/null").exists():
            with pytest.raises(DataError, match=r"^data\.corpus=/dev/null is a device, not a regular file"):
                resolve_files("/dev/null")
    finally:
        server.close()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.txt", "data.corpus=missing.txt: file not found"),
        ("nothing/**/*.jsonl", "data.corpus=nothing/**/*.jsonl: the glob matches no files"),
        ("empty", "data.corpus=empty: the directory holds no corpus files"),
        ("bundled:nope", "data.corpus=bundled:nope: no such bundled corpus"),
    ],
)
def test_bad_specs_name_themselves(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(DataError, match="^" + message.replace("*", r"\*").replace(".", r"\.")):
        resolve_files(spec)


def test_text_files_stream_in_line_aligned_chunks(tmp_path, monkeypatch):
    import growth.data.sources as sources

    monkeypatch.setattr(sources, "CHUNK", 64)
    lines = [f"line {i} " + "x" * (i % 17) for i in range(200)]
    path = tmp_path / "doc.txt"
    path.write_text("\n".join(lines))
    segments = list(read_piece(Piece(str(path), "text", 0, path.stat().st_size), "text"))
    assert "".join(t for s in segments for t in s.texts) == path.read_text()
    assert all(t.endswith("\n") for s in segments[:-1] for t in s.texts)  # cut after newlines only
    assert [e for s in segments for e in s.ends] == [False] * (len(segments) - 1) + [True]
    assert sum(s.nbytes for s in segments) == path.stat().st_size


@pytest.mark.parametrize("split_bytes", [1, 7, 50, 333, 10_000])
def test_jsonl_byte_ranges_cover_every_line_once(tmp_path, split_bytes):
    texts = [f"document {i} " + "é" * (i % 5) for i in range(60)]
    path = write_jsonl(tmp_path / "c.jsonl", texts)
    with open(path, "a") as handle:
        handle.write("\n  \n")  # blank lines are skipped
    pieces = file_pieces(path, "text", split_bytes)
    got = [t for p in pieces for s in read_piece(p, "text") for t in s.texts]
    assert got == texts
    assert sum(s.nbytes for p in pieces for s in read_piece(p, "text")) == path.stat().st_size


def test_units_depend_on_sizes_only(tmp_path):
    files = [write_jsonl(tmp_path / f"{i}.jsonl", ["x" * 100] * (i + 1)) for i in range(6)]
    units = plan_units(files, "text", 350)
    assert [u.index for u in units] == list(range(len(units)))
    assert [p.path for u in units for p in u.pieces if p.start == 0] == [str(f) for f in files]
    assert all(u.weight <= 350 or len(u.pieces) == 1 for u in units)


def test_iter_documents_reads_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    (tmp_path / "z.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(b'{"text": "zeta"}\n{"body": 1, "text": "eta"}\n')
    )
    pq.write_table(
        pa.table({"id": [1, 2, 3], "text": ["p1", None, "p3"]}), tmp_path / "p.parquet", row_group_size=2
    )
    assert list(iter_documents(tmp_path / "z.jsonl.zst", "text")) == ["zeta", "eta"]
    assert list(iter_documents(tmp_path / "p.parquet", "text")) == ["p1", "p3"]  # nulls are no documents


def test_reservoir_is_seeded_bounded_and_uniform():
    stream = [str(i) for i in range(10_000)]

    def sample(seed: int) -> list[str]:
        reservoir = Reservoir(100, seed)
        for start in range(0, len(stream), 37):
            reservoir.extend(stream[start : start + 37])
        return reservoir.shuffled()

    assert sample(1) == sample(1) and sample(1) != sample(2)
    assert len(sample(1)) == 100 and len(set(sample(1))) == 100
    # each item is kept with probability 100/10000: over 200 seeds the first and second halves of the
    # stream are drawn equally often (a biased reservoir would favour one end)
    first_half = sum(int(x) < 5000 for seed in range(200) for x in sample(seed))
    assert abs(first_half / (200 * 100) - 0.5) < 0.02
    small = Reservoir(100, 0)
    small.extend(["a", "b"])
    assert sorted(small.shuffled()) == ["a", "b"]


def test_sentence_sample_is_bounded_and_covers_all_sources(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [f"apple {i}\nsecond line" for i in range(500)])
    (tmp_path / "b.txt").write_text("\n".join(f"banana {i}" for i in range(500)))
    files = [(tmp_path / "a.jsonl", "text"), (tmp_path / "b.txt", "text")]
    sample = sample_sentences(files, 300, seed=3)
    assert len(sample) == 300 and sample == sample_sentences(files, 300, seed=3)
    assert any(s.startswith("apple") for s in sample) and any(s.startswith("banana") for s in sample)
    assert sentences("  a \n\n" + "y" * 9000) == ["a", "y" * 4096, "y" * 4096, "y" * 808]
    rng = random.Random(0)
    assert len(sample_sentences(files, 10**6, seed=rng.randrange(9))) == 1500  # all of them
