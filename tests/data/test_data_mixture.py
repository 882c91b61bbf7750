"""Mixtures (data.sources): sampling frequencies match the weights, resume and world size do not change
the stream, windows come from the right source; the validation corpus and the mixture's validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from growth.config import load_config
from growth.data.batches import BatchMaker
from growth.data.mixture import MIX_BLOCK, MixtureSampler, MixtureSchedule, WindowedTokens, apportion
from growth.data.pipeline import load_token_corpus, prepare_tokens
from growth.data.sampler import WindowSampler
from tests.data.test_data_prepare import PARAGRAPHS, split_documents, tokenizer  # noqa: F401 (a fixture)

WEIGHTS = (5.0, 3.0, 2.0)
SOURCE_TOKENS = (40_001, 9_001, 120_001)  # windows of 100 tokens: 400, 90, 1200


def sampler(seed: int = 0) -> MixtureSampler:
    return MixtureSampler(sum(SOURCE_TOKENS), 100, seed, source_tokens=SOURCE_TOKENS, weights=WEIGHTS)


def source_of(s: MixtureSampler, window: int) -> int:
    return int(np.searchsorted(s._bases, window, side="right")) - 1


def test_apportion_is_exact_and_keeps_every_source():
    assert apportion([5, 3, 2], 4096) == [2048, 1229, 819]
    assert sum(apportion([1e-9, 1, 1], 4096)) == 4096 and apportion([1e-9, 1, 1], 4096)[0] == 1
    assert apportion([1, 1, 1], 10) in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


def test_frequencies_match_the_weights():
    """Over whole blocks the share of source s is n_s / MIX_BLOCK, within 1 / MIX_BLOCK of its weight;
    over any 1024 consecutive draws it is within 5 binomial standard deviations of the weight."""
    s = sampler()
    draws = np.array([source_of(s, w) for w in s.windows(0, 20 * MIX_BLOCK)])
    counts = np.bincount(draws, minlength=3)
    shares = apportion(WEIGHTS, MIX_BLOCK)
    assert counts.tolist() == [20 * n for n in shares]
    expected = np.array(WEIGHTS) / sum(WEIGHTS)
    assert np.all(np.abs(counts / counts.sum() - expected) < 1 / MIX_BLOCK)
    for start in range(0, len(draws), 1024):
        local = np.bincount(draws[start : start + 1024], minlength=3) / 1024
        assert np.all(np.abs(local - expected) <= 5 * np.sqrt(expected * (1 - expected) / 1024))


def test_each_source_runs_through_its_own_epochs():
    """Every source visits each of its windows once per epoch of its own (small ones repeat sooner)."""
    s = sampler()
    windows = s.windows(0, 3 * MIX_BLOCK)
    for source, n in enumerate(SOURCE_TOKENS):
        mine = [w - int(s._bases[source]) for w in windows if source_of(s, w) == source]
        n_windows = (n - 1) // 100
        assert all(0 <= w < n_windows for w in mine)
        for epoch in range(len(mine) // n_windows):
            assert sorted(mine[epoch * n_windows : (epoch + 1) * n_windows]) == list(range(n_windows))


def test_resume_and_world_size_do_not_change_the_stream():
    full = sampler(seed=4)
    reference = full.windows(0, 5000)
    resumed = sampler(seed=4)
    resumed.load_state_dict({**full.state_dict(), "consumed": 1234})
    assert resumed.same_stream(full.state_dict())
    assert resumed.windows(resumed.consumed, 5000 - 1234) == reference[1234:]
    # 2 ranks x 2 micro-batches of 8 take the global batch 1 rank takes in 4 micro-batches of 8
    one = [w for m in range(4) for w in resumed.windows(resumed.micro_batch_positions(m, 0, 1, 8).start, 8)]
    two = sorted(
        w
        for m in range(2)
        for r in range(2)
        for w in resumed.windows(resumed.micro_batch_positions(m, r, 2, 8).start, 8)
    )
    assert sorted(one) == two == sorted(reference[1234 : 1234 + 32])
    assert sampler(seed=5).windows(0, 100) != reference[:100]
    other = MixtureSampler(sum(SOURCE_TOKENS), 100, 4, source_tokens=SOURCE_TOKENS, weights=(5.0, 3.0, 2.5))
    assert not other.same_stream(full.state_dict()) and isinstance(other, WindowSampler)
    assert not full.same_stream(
        WindowSampler(sum(SOURCE_TOKENS), 100, 4).state_dict()
    )  # one corpus is another stream


def test_schedule_is_a_function_of_the_position():
    a, b = MixtureSchedule(WEIGHTS, 1), MixtureSchedule(WEIGHTS, 1)
    forward = [a.draw(p) for p in range(3 * MIX_BLOCK)]
    backward = [b.draw(p) for p in reversed(range(3 * MIX_BLOCK))][::-1]
    assert forward == backward


def test_windowed_tokens_serve_whole_windows_of_each_array():
    arrays = [np.arange(0, 41), np.arange(1000, 1025)]  # 4 and 2 windows of 10
    stream = WindowedTokens(arrays, 10)
    assert len(stream) == 6 * 10 + 1 and stream.n_windows == 6
    assert stream[30:41].tolist() == list(range(30, 41))
    assert stream[40:51].tolist() == list(range(1000, 1011))
    assert stream[50:61].tolist() == list(range(1010, 1021))
    with pytest.raises(IndexError):
        stream[0:5]
    ordered = WindowedTokens(arrays, 10, order=np.array([5, 0]))
    assert ordered[0:11].tolist() == list(range(1010, 1021)) and len(ordered) == 21


def write_source(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def test_a_prepared_mixture_trains_on_both_sources_and_validates_on_both(tmp_path, tokenizer):  # noqa: F811
    a = write_source(tmp_path / "a", [p.replace("\n", " alpha ") for p in PARAGRAPHS[:300]])
    b = write_source(tmp_path / "b", [p.replace("\n", " omega ") for p in PARAGRAPHS[300:400]])
    config = load_config(
        overrides=[
            f"data.sources=[{{corpus: {a}, weight: 1}}, {{corpus: {b}, weight: 3}}]",
            "data.seq_len=32",
            "model.max_seq_len=32",
            "data.val_fraction=0.1",
        ]
    )
    prepared = prepare_tokens(config.data, tokenizer, tmp_path / "cache", workers=1)
    corpus = load_token_corpus(prepared, 32)
    assert len(prepared.sources) == 2 and prepared.weights == [1.0, 3.0]
    s = corpus.sampler(32, seed=0)
    assert isinstance(s, MixtureSampler)
    maker = BatchMaker(corpus.train, 32, "clm", tokenizer.vocab_size)
    sources = [s.draw(p)[0] for p in range(800)]
    texts = [tokenizer.decode(maker.window(w).tolist()) for w in s.windows(0, 800)]
    assert abs(np.mean(sources) - 0.75) < 0.05  # source b is drawn 3x as often, though it is 3x smaller
    assert not any("omega" in t for t, src in zip(texts, sources) if src == 0)
    assert not any("alpha" in t for t, src in zip(texts, sources) if src == 1)
    assert sum("alpha" in t for t in texts) > 50 and sum("omega" in t for t in texts) > 300
    val = [
        tokenizer.decode(corpus.val[w * 32 : w * 32 + 33].tolist())
        for w in range((len(corpus.val) - 1) // 32)
    ]
    assert any("alpha" in t for t in val) and any("omega" in t for t in val)
    assert sum("omega" in t for t in val) > sum("alpha" in t for t in val)


def test_val_corpus_replaces_the_split(tmp_path, tokenizer):  # noqa: F811
    train = write_source(tmp_path / "train", PARAGRAPHS[:100])
    val = write_source(tmp_path / "val", PARAGRAPHS[500:520])
    config = load_config(
        overrides=[
            f"data.corpus={train}",
            f"data.val_corpus={val}",
            "data.seq_len=32",
            "model.max_seq_len=32",
        ]
    )
    prepared = prepare_tokens(config.data, tokenizer, tmp_path / "cache", workers=1)
    corpus = load_token_corpus(prepared, 32)
    assert (
        len(split_documents(prepared.sources[0], "train")) == 100
    )  # nothing held out of the training corpus
    expected = [t for p in PARAGRAPHS[500:520] for t in tokenizer.encode(p) + [tokenizer.eos_id]]
    assert np.asarray(corpus.val).tolist() == expected
