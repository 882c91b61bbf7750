"""Contrastive data: STS-B / pair / text readers, bad rows named by file:line, batch layout, batch geometry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from growth.config import ConfigError, load_config
from growth.data.contrastive_batches import (
    ContrastiveExamples,
    example_sampler,
    split_validation,
    sts_examples,
    training_examples,
)
from growth.data.errors import DataError
from growth.data.sentence_pairs import data_path, read_pairs, read_sentences, read_sts
from growth.train.contrastive_module import global_batch_size, micro_batch_sizes

STS_ROW = "main-captions\tMSRvid\t2012test\t0001\t{score}\t{a}\t{b}"


class CharTokenizer:
    """Stands in for sentencepiece: one id per character (ids >= 5)."""

    def encode(self, text: str) -> list[int]:
        return [5 + ord(ch) % 90 for ch in text]


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bundled_sts_files_parse_with_their_extra_fields():
    train, dev = read_sts(data_path("bundled:sts-train", "k")), read_sts(data_path("bundled:sts-dev", "k"))
    assert (len(train), len(dev)) == (5749, 1500)  # the STS-B readme's counts
    assert all(0.0 <= p.score <= 5.0 for p in train + dev)
    first = train[0]
    assert (first.first, first.second, first.score, first.line) == (
        "A plane is taking off.",
        "An air plane is taking off.",
        5.0,
        1,
    )
    assert (
        Path(data_path("bundled:sts-train", "k")).parent / "LICENSE.txt"
    ).is_file()  # CC BY-SA 4.0 travels with it


def test_bundled_names_resolve_to_sts_or_corpus_files():
    assert data_path("bundled:tinyshakespeare", "contrastive.data").name == "tinyshakespeare.txt"
    with pytest.raises(
        DataError, match=r"contrastive.data=bundled:nope: no such bundled file \(bundled: .*sts-dev"
    ):
        data_path("bundled:nope", "contrastive.data")
    with pytest.raises(DataError, match="contrastive.data=/no/such.tsv: file not found"):
        data_path("/no/such.tsv", "contrastive.data")


@pytest.mark.parametrize(
    "row, message",
    [
        (
            "main-captions\tMSRvid\t2012test\t0001\t4.0\tonly one sentence",
            "expected at least 7 tab-separated fields",
        ),
        (STS_ROW.format(score="5.5", a="A cat.", b="A dog."), "score 5.5 is outside [0, 5]"),
        (STS_ROW.format(score="-1", a="A cat.", b="A dog."), "score -1 is outside [0, 5]"),
        (STS_ROW.format(score="nan", a="A cat.", b="A dog."), "score nan is outside [0, 5]"),
        (STS_ROW.format(score="high", a="A cat.", b="A dog."), "score 'high' is not a number"),
        (STS_ROW.format(score="3", a="A cat.", b="  "), "sentence2 is empty"),
        (STS_ROW.format(score="3", a="", b="A dog."), "sentence1 is empty"),
    ],
)
def test_malformed_sts_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, "bad.csv", [STS_ROW.format(score="1.0", a="A man.", b="A woman."), row])
    with pytest.raises(DataError) as err:
        read_sts(path)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_pairs_reader_counts_columns(tmp_path):
    good = write(tmp_path, "pairs.tsv", ["a cat\ta kitten", "", "a car\tan automobile"])
    assert [(p.first, p.second, p.line) for p in read_pairs(good)] == [
        ("a cat", "a kitten", 1),
        ("a car", "an automobile", 3),
    ]
    bad = write(tmp_path, "bad.tsv", ["a cat\ta kitten", "a car\tan automobile\textra"])
    with pytest.raises(
        DataError, match=r"bad.tsv:2: expected 2 tab-separated fields \(sentence1, sentence2\), got 3"
    ):
        read_pairs(bad)
    with pytest.raises(DataError, match=r"empty.tsv: no pairs"):
        read_pairs(write(tmp_path, "empty.tsv", ["", " "]))


def test_text_reader_drops_blank_and_repeated_lines(tmp_path):
    path = write(
        tmp_path, "text.txt", ["First Citizen:", "Before we proceed.", "", "First Citizen:", "Speak."]
    )
    assert read_sentences(path) == ["First Citizen:", "Before we proceed.", "Speak."]


def test_non_utf8_file_names_its_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        STS_ROW.format(score="1", a="a", b="b").encode() + b"\n" + "caf\u00e9\tx".encode("latin-1")
    )
    with pytest.raises(DataError, match=r"latin1.csv:2: not UTF-8"):
        read_sts(path)


def test_batches_interleave_pairs_and_pad_with_a_mask():
    examples = ContrastiveExamples([[5, 6, 7], [8]], [[9], [10, 11]], torch.tensor([4.0, 1.0]))
    batch = examples.batch([1, 0])
    assert batch["input_ids"].tolist() == [[8, 0, 0], [10, 11, 0], [5, 6, 7], [9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert batch["scores"].tolist() == [1.0, 4.0]


def config(*overrides: str):
    return load_config(overrides=list(overrides)).contrastive


def test_objectives_shape_the_examples():
    tok = CharTokenizer()
    cosent = training_examples(config("contrastive.objective=cosent", "contrastive.max_len=8"), tok)
    assert len(cosent) == 5749 and cosent.scores is not None and max(len(r) for r in cosent.first) == 8
    infonce = training_examples(config("contrastive.objective=infonce"), tok)
    assert len(infonce) == 1406 and infonce.scores is None  # the 1406 train pairs scored >= 4
    simcse = training_examples(
        config(
            "contrastive.objective=simcse",
            "contrastive.format=text",
            "contrastive.data=bundled:tinyshakespeare",
        ),
        tok,
    )
    assert simcse.first is simcse.second and len(simcse) > 10_000  # every line its own positive
    dev = sts_examples("bundled:sts-dev", tok, 64, "contrastive.eval_data")
    assert len(dev) == 1500 and dev.scores.min() == 0.0 and dev.scores.max() == 5.0


def test_validation_split_is_seeded_and_disjoint():
    examples = ContrastiveExamples([[i + 5] for i in range(100)], [[i + 5] for i in range(100)])
    train, val = split_validation(examples, 0.1, seed=3)
    again, _ = split_validation(examples, 0.1, seed=3)
    assert (len(train), len(val)) == (90, 10) and train.first == again.first
    assert not {r[0] for r in train.first} & {r[0] for r in val.first}


def test_example_sampler_visits_every_example_once_per_epoch():
    sampler = example_sampler(10, seed=1)
    assert sorted(sampler.windows(0, 10)) == list(range(10))
    assert sorted(sampler.windows(10, 10)) == list(range(10)) and sampler.windows(10, 10) != sampler.windows(
        0, 10
    )


def test_batch_geometry():
    cfg = load_config(
        overrides=["contrastive.objective=cosent", "train.micro_batch_size=3", "train.grad_accum=4"]
    )
    assert global_batch_size(cfg, world_size=2, n_train=100) == 24
    assert micro_batch_sizes(10, micro=3, accum=4) == [3, 3, 3, 1]  # an uneven last micro-batch
    with pytest.raises(ConfigError, match=r"use train.grad_accum=4"):
        micro_batch_sizes(10, micro=3, accum=3)
    with pytest.raises(ConfigError, match=r"= 12 exceeds the 10 training examples"):
        global_batch_size(cfg, world_size=1, n_train=10)


def test_a_batch_too_small_for_negatives_names_the_setting():
    cfg = load_config(
        overrides=["contrastive.objective=infonce", "train.micro_batch_size=1", "train.grad_accum=1"]
    )
    with pytest.raises(
        ConfigError, match=r"train.micro_batch_size \* train.grad_accum \* world size = 1 is too small"
    ):
        global_batch_size(cfg, world_size=1, n_train=100)
    assert global_batch_size(cfg, world_size=2, n_train=100) == 2  # two ranks make a batch of two
    with pytest.raises(ConfigError, match=r"contrastive.batch_size=1 is too small for in-batch negatives"):
        load_config(overrides=["contrastive.objective=infonce", "contrastive.batch_size=1"])
    sized = load_config(overrides=["contrastive.objective=infonce", "contrastive.batch_size=9"])
    with pytest.raises(ConfigError, match=r"contrastive.batch_size=9 must be divisible by the world size 2"):
        global_batch_size(sized, world_size=2, n_train=100)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["contrastive.objective=cosent", "contrastive.format=pairs"],
            "contrastive.objective=cosent needs scored pairs",
        ),
        (
            ["contrastive.objective=infonce", "contrastive.format=text"],
            "contrastive.objective=infonce needs sentence pairs",
        ),
        (
            ["contrastive.objective=triplet"],
            "contrastive.objective must be one of none | simcse | infonce | cosent",
        ),
        (
            ["contrastive.objective=simcse", "contrastive.temperature=0"],
            "contrastive.temperature must be > 0",
        ),
        (
            ["contrastive.objective=simcse", "contrastive.max_len=512"],
            "contrastive.max_len (512) must be <= model.max_seq_len",
        ),
    ],
)
def test_contrastive_config_errors(overrides, message):
    with pytest.raises(
        ConfigError, match=message.replace("|", r"\|").replace("(", r"\(").replace(")", r"\)")
    ):
        load_config(overrides=overrides)
