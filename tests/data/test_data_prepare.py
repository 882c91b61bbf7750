"""Preparing a corpus into the cache: token counts over mixed formats, EOS per document, the split held
out by documents, identical results at any number of workers, a killed preparation, a changed corpus,
and one message naming the file for each kind of bad input (nothing cached)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from growth.config import ConfigError, load_config
from growth.data import sources
from growth.data.errors import DataError
from growth.data.pipeline import corpus_tokenizer, load_token_corpus, prepare_tokens, tokenizer_cache_path
from growth.data.prepare import (
    Split,
    document_hashes,
    prepare_corpus,
    read_meta,
    token_dtype,
    validation_documents,
    validation_threshold,
)
from growth.data.tokenizer import Tokenizer, sample_sentences, train_on_sentences

ROOT = Path(__file__).parents[2]
SHAKESPEARE = (ROOT / "growth/data/corpus/tinyshakespeare.txt").read_text()
PARAGRAPHS = [p for p in SHAKESPEARE.split("\n\n") if p.strip()]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("tok")
    (folder / "t.txt").write_text(SHAKESPEARE[:200_000])
    sample = sample_sentences([(folder / "t.txt", "text")], 10_000, 0)
    return Tokenizer.load(train_on_sentences(sample, folder / "tok.model", 400))


def mixed_corpus(root: Path, n: int = 400) -> list[str]:
    """A directory of .txt, .jsonl, .jsonl.gz, .jsonl.zst and .parquet files; its documents in corpus order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = PARAGRAPHS[:n]
    quarter = n // 4
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(docs[0])
    (root / "b.txt").write_text("\n\n".join(docs[1:4]))  # one document: a text file is one document
    (root / "c.jsonl").write_text(
        "".join(json.dumps({"text": d, "n": i}) + "\n" for i, d in enumerate(docs[4:quarter]))
    )
    with gzip.open(root / "sub" / "d.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps({"text": d}) + "\n" for d in docs[quarter : 2 * quarter])
    payload = "".join(json.dumps({"text": d}) + "\n" for d in docs[2 * quarter : 3 * quarter]).encode()
    (root / "sub" / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    pq.write_table(pa.table({"text": docs[3 * quarter :]}), root / "sub" / "f.parquet", row_group_size=16)
    return [docs[0], "\n\n".join(docs[1:4]), *docs[4:]]


def split_documents(folder: Path, split: str) -> list[tuple[int, ...]]:
    meta = read_meta(folder)
    tokens = np.fromfile(folder / f"{split}.bin", dtype=meta["dtype"])
    ends = np.fromfile(folder / f"{split}.idx", dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return [tuple(int(t) for t in tokens[a:b]) for a, b in zip(starts, ends)]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("train.bin", "val.bin", "train.idx", "val.idx"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def test_mixed_directory_token_counts_are_the_encodings_plus_one_eos(tmp_path, tokenizer):
    docs = mixed_corpus(tmp_path / "corpus")
    folder = prepare_corpus(
        str(tmp_path / "corpus"), tokenizer, tmp_path / "cache", split=Split(0.05, 0), unit_bytes=4096
    )
    meta = read_meta(folder)
    encodings = [tokenizer.encode(d) for d in docs]
    assert meta["documents"] == len(docs) and meta["units"] > 5
    assert meta["tokens"] == sum(len(e) + 1 for e in encodings)
    assert meta["train_tokens"] + meta["val_tokens"] == meta["tokens"]
    # every document is one EOS-terminated run in exactly one split, in corpus order within each split
    train, val = split_documents(folder, "train"), split_documents(folder, "val")
    expected = [tuple(e) + (tokenizer.eos_id,) for e in encodings]
    assert Counter(train) + Counter(val) == Counter(expected)
    assert train == [d for d in expected if d in set(train)]
    assert meta["split"] == "documents" and len(val) == validation_documents(len(docs), Split(0.05)) == 20


def test_one_text_file_splits_the_token_stream_tail_as_before(tmp_path, tokenizer):
    (tmp_path / "one.txt").write_text(SHAKESPEARE[:30_000])
    folder = prepare_corpus(str(tmp_path / "one.txt"), tokenizer, tmp_path / "cache", split=Split(0.05, 0))
    ids = tokenizer.encode(SHAKESPEARE[:30_000]) + [tokenizer.eos_id]
    n_val = max(1, int(len(ids) * 0.05))
    corpus = (
        np.fromfile(folder / "train.bin", dtype=np.uint16),
        np.fromfile(folder / "val.bin", dtype=np.uint16),
    )
    assert read_meta(folder)["split"] == "tokens"
    assert corpus[0].tolist() == ids[:-n_val] and corpus[1].tolist() == ids[-n_val:]


def test_validation_threshold_holds_out_exactly_the_requested_count():
    for documents, count in [(1, 1), (10, 1), (1000, 50), (70_000, 3_500), (5, 4)]:
        held = document_hashes(0, documents, 7) <= validation_threshold(
            documents, count, seed=7, block=1 << 12
        )
        assert held.sum() == count
    other_seed = document_hashes(0, 1000, 8) <= validation_threshold(1000, 50, seed=8)
    assert (
        other_seed.sum() == 50
        and other_seed.tolist()
        != (document_hashes(0, 1000, 7) <= validation_threshold(1000, 50, seed=7)).tolist()
    )
    assert validation_documents(9, Split(0.05)) == 0 and validation_documents(10, Split(0.05)) == 1
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


@pytest.mark.distributed
def test_one_and_two_workers_write_identical_shards(tmp_path, tokenizer):
    mixed_corpus(tmp_path / "corpus")
    folders = [
        prepare_corpus(
            str(tmp_path / "corpus"),
            tokenizer,
            tmp_path / f"cache{w}",
            split=Split(0.05, 3),
            workers=w,
            unit_bytes=4096,
        )
        for w in (1, 2)
    ]
    assert folders[0].name == folders[1].name
    assert digest(folders[0]) == digest(folders[1])
    one, two = read_meta(folders[0]), read_meta(folders[1])
    assert {k: v for k, v in one.items() if k != "seconds"} == {
        k: v for k, v in two.items() if k != "seconds"
    }


def test_validation_documents_never_appear_in_training_windows(tmp_path, tokenizer):
    """Each document repeats its own marker; every window of a whole epoch is decoded and searched."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    check_validation_held_out(corpus, tmp_path / "cache", tokenizer)


def test_validation_documents_never_appear_in_training_windows_when_the_directory_holds_links(
    tmp_path, tokenizer
):
    """Issue 26: a symlink cycle (``ln -s . corpus/sub``), a second link to the file and a hard link
    made the search read the corpus 40 times over, so copies of held-out documents were trained on.
    Each file is read once: the same 200 documents, the same 20 held out, none of them in training."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "sub").symlink_to(".")
    (corpus / "copy.jsonl").symlink_to("docs.jsonl")
    check_validation_held_out(
        corpus,
        tmp_path / "cache",
        tokenizer,
        then=lambda: os.link(corpus / "docs.jsonl", corpus / "hard.jsonl"),
    )


def check_validation_held_out(corpus: Path, cache: Path, tokenizer, then=lambda: None) -> None:
    from growth.data.batches import BatchMaker

    texts = [" ".join([f"mark{chr(97 + i // 26)}{chr(97 + i % 26)}"] * 30) for i in range(200)]
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    then()
    config = load_config(
        overrides=[
            f"data.corpus={corpus}",
            "data.val_fraction=0.1",
            "data.seq_len=16",
            "model.max_seq_len=16",
        ]
    )
    data = load_token_corpus(prepare_tokens(config.data, tokenizer, cache), 16)
    val_markers = {tokenizer.decode(list(d)).split()[0] for d in split_documents(data.directory, "val")}
    assert len(val_markers) == 20
    assert len(split_documents(data.directory, "train")) + len(split_documents(data.directory, "val")) == 200
    sampler = data.sampler(16, seed=0)
    maker = BatchMaker(data.train, 16, "clm", tokenizer.vocab_size)
    seen = set()
    for window in sampler.windows(0, sampler.n_windows):
        seen.update(tokenizer.decode(maker.window(window).tolist()).split())
    assert not seen & val_markers
    assert (
        len({w for w in seen if w.startswith("mark") and len(w) == 6}) >= 170
    )  # the training documents are there


def test_a_changed_corpus_is_prepared_again_never_mixed(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in PARAGRAPHS[:50]))
    first = prepare_corpus(str(corpus), tokenizer, tmp_path / "cache")
    before = digest(first)
    with open(corpus / "a.jsonl", "a") as handle:
        handle.write(json.dumps({"text": "a brand new document"}) + "\n")
    second = prepare_corpus(str(corpus), tokenizer, tmp_path / "cache")
    assert second != first and digest(first) == before
    assert read_meta(second)["documents"] == 51
    os.utime(corpus / "a.jsonl", ns=(1, 1))  # same content, new modification time: a new key too
    assert prepare_corpus(str(corpus), tokenizer, tmp_path / "cache") not in (first, second)


def test_a_file_changed_during_preparation_is_refused(tmp_path, tokenizer, monkeypatch):
    import growth.data.prepare as prepare

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(json.dumps({"text": PARAGRAPHS[0]}) + "\n")
    original = prepare.encode_units

    def encode_then_edit(*args, **kwargs):
        result = original(*args, **kwargs)
        (corpus / "a.jsonl").write_text(json.dumps({"text": "edited meanwhile, longer"}) + "\n")
        return result

    monkeypatch.setattr(prepare, "encode_units", encode_then_edit)
    with pytest.raises(DataError, match="a.jsonl: changed while it was being prepared"):
        prepare_corpus(str(corpus), tokenizer, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("tokens-*") if (p / "meta.json").is_file()) if cache.is_dir() else []


def run_tool(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/prepare_data.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.distributed
@pytest.mark.slow
def test_killed_preparation_leaves_nothing_complete_and_reruns_to_the_same_result(tmp_path, tokenizer):
    import psutil

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for shard in range(24):  # ~12 MB of JSONL: 3 units of work, the kill comes while the first is encoded
        (corpus / f"{shard:02d}.jsonl").write_text(
            "".join(
                json.dumps({"text": PARAGRAPHS[(shard * 97 + i) % len(PARAGRAPHS)] * 3}) + "\n"
                for i in range(800)
            )
        )
    args = [f"data.corpus={corpus}", f"data.tokenizer={tokenizer.path}", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/prepare_data.py"), *args, f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while (
        not list((tmp_path / "cache").glob(".tokens-*.partial-*/parts/*.bin")) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(workers) == 2
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), (
        "workers outlived the kill"
    )
    assert entries(tmp_path / "cache") == [] and list((tmp_path / "cache").glob(".tokens-*.partial-*"))

    rerun = run_tool(*args, f"data.cache_dir={tmp_path / 'cache'}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    fresh = run_tool(*args, f"data.cache_dir={tmp_path / 'fresh'}")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (resumed,), (clean,) = entries(tmp_path / "cache"), entries(tmp_path / "fresh")
    assert digest(resumed) == digest(clean)
    assert not list((tmp_path / "cache").glob(".tokens-*.partial-*"))  # the dead one was removed
    meta = read_meta(clean)
    assert (
        rerun.stdout.splitlines()[-1]
        == f"prepared: {meta['documents']} documents, {meta['tokens']} tokens -> {resumed}"
    )
    assert meta["documents"] == 24 * 800 and meta["units"] >= 3


# -- bad input ----------------------------------------------------------------------------------------
def bad_corpus(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """(overrides, the message the one error line must contain) for each kind of bad input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    good = [json.dumps({"text": p}) for p in PARAGRAPHS[:3]]
    if case == "empty glob":
        return [f"data.corpus={d}/*.jsonl.gz"], f"data.corpus={d}/*.jsonl.gz: the glob matches no files"
    if case == "empty directory":
        (d / "empty").mkdir()
        return [f"data.corpus={d}/empty"], f"data.corpus={d}/empty: the directory holds no corpus files"
    if case == "not JSON":
        (d / "x.jsonl").write_text("\n".join([*good, "{not json", *good]) + "\n")
        return [f"data.corpus={d}/x.jsonl"], f"{d}/x.jsonl:4: not valid JSON"
    if case == "no text field":
        (d / "x.jsonl").write_text("\n".join([*good, json.dumps({"body": "b"})]) + "\n")
        return [
            f"data.corpus={d}",
            "data.text_field=text",
        ], f"{d}/x.jsonl:4: no 'text' field (data.text_field=text)"
    if case == "parquet without the column":
        pq.write_table(pa.table({"body": ["a", "b"]}), d / "x.parquet")
        return [
            f"data.corpus={d}"
        ], f"{d}/x.parquet: no column 'text' (data.text_field=text); its columns are body"
    if case == "not UTF-8 text":
        (d / "x.txt").write_bytes(b"fine text\n" * 3 + b"caf\xe9\n")
        return [f"data.corpus={d}/x.txt"], f"{d}/x.txt: not UTF-8 text (byte 33)"
    if case == "not UTF-8 JSONL":
        (d / "x.jsonl").write_bytes(("\n".join(good) + "\n").encode() + b'{"text": "caf\xe9"}\n')
        return [f"data.corpus={d}/x.jsonl"], f"{d}/x.jsonl:4: not UTF-8 text"
    if case == "weight not positive":
        (d / "x.jsonl").write_text("\n".join(good) + "\n")
        return (
            [f"data.sources=[{{corpus: {d}/x.jsonl, weight: 1}}, {{corpus: {d}, weight: 0}}]"],
            f"data.sources[1].weight must be > 0, got 0.0 (corpus {d})",
        )
    raise KeyError(case)


BAD_CASES = [
    "empty glob",
    "empty directory",
    "not JSON",
    "no text field",
    "parquet without the column",
    "not UTF-8 text",
    "not UTF-8 JSONL",
    "weight not positive",
]


@pytest.mark.parametrize("given_tokenizer", [False, True], ids=["tokenizer-trained-first", "tokenizer-given"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_the_file_and_caches_nothing(tmp_path, tokenizer, case, given_tokenizer):
    overrides, message = bad_corpus(tmp_path, case)
    cache = tmp_path / "cache"
    extra = [f"data.tokenizer={tokenizer.path}"] if given_tokenizer else []
    with pytest.raises((DataError, ConfigError)) as raised:
        config = load_config(
            overrides=[*overrides, *extra, f"data.cache_dir={cache}", "model.vocab_size=400"]
        )
        prepare_tokens(config.data, corpus_tokenizer(config.data, 400, cache), cache, workers=1)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_error_line_numbers_of_a_jsonl_file_split_across_units(tmp_path, tokenizer):
    lines = [json.dumps({"text": f"line {i}"}) for i in range(500)]
    lines[437] = '{"text": 1'
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"big\.jsonl:438: not valid JSON"):
        prepare_corpus(str(tmp_path / "big.jsonl"), tokenizer, tmp_path / "cache", unit_bytes=600)


def test_unreadable_file(tmp_path, tokenizer, monkeypatch):
    """Root reads any file whatever its mode, so the permission error is injected where files are opened."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "c" / "b.jsonl").write_text(json.dumps({"text": "b"}) + "\n")
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("b.jsonl"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", guarded_open, raising=False)
    with pytest.raises(DataError, match=rf"^{tmp_path}/c/b\.jsonl: cannot read it \(Permission denied\)$"):
        prepare_corpus(str(tmp_path / "c"), tokenizer, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.distributed
@pytest.mark.parametrize("case", ["not JSON", "weight not positive", "empty glob"])
def test_prepare_data_tool_exits_2_with_one_error_line(tmp_path, tokenizer, case):
    """The command line, with 2 workers (the error comes back from a worker process)."""
    overrides, message = bad_corpus(tmp_path, case)
    result = run_tool(
        *overrides,
        f"data.tokenizer={tokenizer.path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--workers",
        "2",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert entries(tmp_path / "cache") == [] and not list((tmp_path / "cache").glob(".tokens-*"))


@pytest.mark.distributed
def test_prepare_data_tool_trains_the_tokenizer_training_would_use(tmp_path):
    """Without data.tokenizer the tool trains the one a run would train on first use, and a second call
    only reports the cached entry."""
    corpus = tmp_path / "corpus"
    mixed_corpus(corpus, n=200)
    args = [
        f"data.corpus={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "model.vocab_size=400",
        "data.input_sentence_size=2000",
    ]
    first, second = run_tool(*args), run_tool(*args, "--workers", "1")
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]
    assert first.stdout.splitlines()[-1].startswith("prepared: 198 documents, ")
    assert "docs" in first.stderr and "B/s" in first.stderr  # the progress bar: documents and MB/s
    config = load_config(overrides=args)
    assert tokenizer_cache_path(config.data, 400, tmp_path / "cache").is_file()


def test_probe_tokens_read_the_prepared_validation_split(tmp_path, tokenizer):
    """tools/expand.py probes a grown model with validation tokens: from the cache entry when the corpus
    was prepared (found by content, so a run directory's copy of the tokenizer finds it too), else the
    corpus's first documents, encoded on the spot."""
    import shutil

    from growth.data.pipeline import probe_tokens

    corpus = tmp_path / "corpus"
    mixed_corpus(corpus, n=120)
    config = load_config(overrides=[f"data.corpus={corpus}"])
    ids, source = probe_tokens(config.data, tokenizer, tmp_path / "cache", 64)
    first = tokenizer.encode(PARAGRAPHS[0]) + [tokenizer.eos_id]
    assert source == "corpus" and ids.tolist()[: len(first)] == first[:64]
    prepared = prepare_tokens(config.data, tokenizer, tmp_path / "cache", workers=1)
    copy = tmp_path / "run" / "tokenizer.model"
    copy.parent.mkdir()
    shutil.copyfile(tokenizer.path, copy)
    ids, source = probe_tokens(config.data, Tokenizer.load(copy), tmp_path / "cache", 64)
    val = np.fromfile(prepared.sources[0] / "val.bin", dtype=np.uint16)
    assert source == "validation" and ids.tolist() == val[:64].tolist()
