"""The checkpoint layer's file formats: streaming safetensors (read back by the library), atomic
writes that leave nothing behind on failure, EMA files, run-state round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from growth.checkpoint import LazyWeights, RunState, read_ema, read_run_state, save_safetensors_streaming
from growth.checkpoint.atomic import write_atomic
from growth.checkpoint.ema_file import write_ema
from growth.checkpoint.safetensors_io import write_streaming


def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 5, generator=gen),
        "b.bias": torch.randn(7, generator=gen).bfloat16(),
        "c": torch.arange(6, dtype=torch.int64).view(2, 3),
        "empty": torch.zeros(0, 4),
    }


def test_streaming_writer_round_trips_through_the_library(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors_streaming(tensors(), path, metadata={"note": "x"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors().keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in tensors().items())
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"note": "x"}
    lazy = LazyWeights(path)
    assert (
        lazy.shape("a") == (3, 5)
        and torch.equal(lazy["c"], tensors()["c"])
        and lazy.metadata == {"note": "x"}
    )


def test_a_rank_that_does_not_write_only_drains_the_gathers(tmp_path):
    walked = []

    def nothing():
        for name in ("a", "b"):
            walked.append(name)
            yield None

    write_streaming(
        tmp_path / "x.safetensors", [("a", (2,), torch.float32), ("b", (1,), torch.float32)], nothing()
    )
    assert walked == ["a", "b"] and not list(tmp_path.iterdir())


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    path = tmp_path / "w.safetensors"

    def broken():
        yield torch.zeros(2)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_streaming(path, [("a", (2,), torch.float32), ("b", (2,), torch.float32)], broken())
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"b: expected \(3,\)"):
        write_streaming(
            path,
            [("a", (2,), torch.float32), ("b", (3,), torch.float32)],
            iter([torch.zeros(2), torch.zeros(2)]),
        )
    assert not list(tmp_path.iterdir())


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "latest"
    write_atomic(target, b"step_00000002")
    write_atomic(target, b"step_00000004")
    assert target.read_bytes() == b"step_00000004" and [p.name for p in tmp_path.iterdir()] == ["latest"]


class FakeEMA:
    decay, updates = 0.99, 7

    def __init__(self):
        self.weights = {"w": torch.randn(4, 2), "v": torch.randn(3)}

    def specs(self):
        return [(n, tuple(t.shape), torch.float32) for n, t in self.weights.items()]

    def full_tensors(self):
        yield from self.weights.values()


def test_ema_file_round_trip(tmp_path):
    ema = FakeEMA()
    write_ema(ema, tmp_path)
    saved = read_ema(tmp_path)
    assert saved["decay"] == 0.99 and saved["updates"] == 7
    assert all(torch.equal(saved["weights"][n], t) for n, t in ema.weights.items())
    assert read_ema(tmp_path / "missing") is None


def test_run_state_round_trip(tmp_path):
    state = RunState(
        step=3,
        tokens_seen=10,
        sampler={"consumed": 8},
        callbacks={"X": {"k": 1}},
        growth_events=[{"source_step": 2}],
    )
    (tmp_path / "run_state.json").write_text(state.to_json())
    assert read_run_state(tmp_path) == state and json.loads(state.to_json())["callbacks"] == {"X": {"k": 1}}
