"""The block benchmarks (``growth/bench/blocks/``, ``tools/bench_blocks.py``): their analysis against
hand computations, the per-position evaluation against the trainer's own loss, and end-to-end runs
of two sub-benchmarks with a few steps."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from growth.bench.blocks import common, deepnet, ema, gau_flash, logn
from growth.config import load_config
from growth.eval.per_position import bucket_means, per_position_loss
from growth.model import build_model
from growth.objectives.token_loss import target_count, token_loss_sum
from growth.train.engine import adamw_settings, param_groups
from tests.conftest import tiny_model_config

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.vocab_size=97",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.head_dim=8",
    "model.d_ff=48",
    "model.max_seq_len=64",
    "data.seq_len=16",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- analysis ----------------------------------------------------------------------------------------
def test_divergence_step_finds_skips_non_finite_and_blowups():
    losses = [(1, 6.9), (5, 5.2), (10, 4.8)]
    assert common.divergence_step(losses) is None
    assert common.divergence_step([*losses, (15, 14.0)]) == 15  # > 2 x the first loss (13.8)
    assert common.divergence_step([*losses, (15, 13.7)]) is None
    assert common.divergence_step([(1, 6.9), (5, math.nan), (10, math.inf)]) == 5
    assert common.divergence_step(losses, skipped=[(7, 1.0), (8, 2.0)]) == 7
    assert common.divergence_step([(1, 6.9), (9, 20.0)], skipped=[(12, 1.0)]) == 9


def test_divergence_step_from_the_trainers_message():
    message = "error: 6 non-finite steps in a row at step 17; lower train.lr or check the data; ..."
    assert common.diverged_step_from_message(message) == 17
    assert common.diverged_step_from_message("error: something else") is None


def test_relative_update_by_hand():
    before, after = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 0.0]])
    assert deepnet.relative_update(before, after) == pytest.approx(4.0 / 5.0, rel=1e-12)
    before = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    after = before + torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert deepnet.relative_update(before, after) == pytest.approx(math.sqrt(2) / 5.0, rel=1e-12)


def test_update_sizes_first_step_matches_one_explicit_adamw_step():
    tokens = np.random.default_rng(0).integers(5, 97, size=16 * 20 + 1).astype(np.int64)
    sizes = deepnet.update_sizes(TINY, tokens, steps=3, lr=1e-2, seed=3, batch=2)
    assert len(sizes) == 3 and all(s > 0 for s in sizes)

    config = load_config(overrides=[*TINY, "train.lr=1e-2"])
    torch.manual_seed(3)
    model = build_model(config.model).train()
    optimizer = torch.optim.AdamW(
        param_groups(model, config.train.weight_decay), **adamw_settings(config.train)
    )
    x = torch.from_numpy(tokens[: 2 * 16 + 1])
    fixed = torch.stack([x[0:16], x[16:32]])
    train_ids = [torch.from_numpy(tokens[w * 16 : w * 16 + 17]) for w in (2, 3)]  # windows 2, 3 for step 0
    inputs, labels = torch.stack([t[:-1] for t in train_ids]), torch.stack([t[1:] for t in train_ids])
    with torch.no_grad():
        before = model(fixed)
    F.cross_entropy(model(inputs).flatten(0, 1), labels.flatten()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    optimizer.step()
    with torch.no_grad():
        after = model(fixed)
    expected = float((after.double() - before.double()).norm() / before.double().norm())
    assert sizes[0] == pytest.approx(expected, rel=1e-5)


def test_per_position_loss_against_an_explicit_loop_and_the_trainers_token_mean():
    config = tiny_model_config()
    model = build_model(config).eval()
    tokens = np.random.default_rng(1).integers(5, 97, size=12 * 8 + 1).astype(np.int64)
    length, windows = 12, 5
    losses = per_position_loss(model, tokens, length, max_windows=windows, batch_size=2)
    assert losses.shape == (length,)
    explicit = torch.zeros(length, dtype=torch.float64)
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            window = torch.from_numpy(tokens[w * length : w * length + length + 1])
            logits = model(window[None, :-1])
            for t in range(length):
                explicit[t] += F.cross_entropy(logits[0, t], window[t + 1]).item() / windows
            total += token_loss_sum(logits, window[None, 1:]).item()
            count += target_count(window[None, 1:])
    assert torch.allclose(losses, explicit, rtol=1e-5, atol=1e-6)
    assert float(losses.mean()) == pytest.approx(
        total / count, rel=1e-5
    )  # what TokenLMModule.eval_metrics logs


def test_bucket_means_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert bucket_means(losses, 3) == pytest.approx([2.0, 5.0, 7.0])


def test_seed_stats_and_interpolate():
    stats = common.seed_stats([1.0, 3.0, math.nan])
    assert stats["mean"] == 2.0 and stats["std"] == pytest.approx(math.sqrt(2.0))
    assert common.seed_stats([4.0])["std"] == 0.0
    points = [(0.0, 10.0), (2.0, 6.0), (4.0, 5.0)]
    assert common.interpolate(points, 1.0) == pytest.approx(8.0)
    assert common.interpolate(points, 3.0) == pytest.approx(5.5)
    assert common.interpolate(points, 9.0) == 5.0 and common.interpolate(points, -1.0) == 10.0


def test_ema_gaps_and_the_gap_before_the_anneal():
    raw = [(10, 5.0), (20, 4.5), (30, 4.0)]
    averaged = [(10, 5.2), (20, 4.3), (30, 3.99)]
    points = ema.gaps(raw, averaged)
    assert points == [(10, pytest.approx(-0.2)), (20, pytest.approx(0.2)), (30, pytest.approx(0.01))]
    assert ema.gap_at(points, 25) == pytest.approx(0.2)
    assert ema.stable_end({"steps": 600, "decay_fraction": 0.3}) == 420


def test_flash_kept_quality_and_equal_time():
    assert gau_flash.kept_quality(flash=5.2, gau=5.0, start=7.0) == pytest.approx(0.9)
    runs = {
        "a": [
            {
                "seconds": 10.0,
                "curve": [{"seconds": 0.0, "val_loss": 7.0}, {"seconds": 10.0, "val_loss": 5.0}],
            }
        ],
        "b": [
            {
                "seconds": 20.0,
                "curve": [{"seconds": 0.0, "val_loss": 7.0}, {"seconds": 20.0, "val_loss": 4.0}],
            }
        ],
    }
    t_star, timed = gau_flash.at_equal_time(runs)
    assert t_star == 10.0 and timed == {"a": 5.0, "b": pytest.approx(5.5)}


def test_logn_degradation_is_the_rise_over_the_training_length():
    evaluation = {"1": {"mean": 4.0}, "2": {"mean": 4.25}, "8": {"mean": 5.0}}
    assert logn.degradation(evaluation, 2) == pytest.approx(0.25)
    assert logn.degradation(evaluation, 8) == pytest.approx(1.0)


def test_write_json_is_atomic_and_turns_nan_into_null(tmp_path):
    path = tmp_path / "a" / "r.json"
    common.write_json(path, {"x": math.nan, "y": [1.0, math.inf], "z": {"w": 2}})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.0, None], "z": {"w": 2}}
    assert not list(path.parent.glob("*.tmp"))


# -- end to end (a few steps through launch/pretrain.py) ------------------------------------------
def test_logn_end_to_end_and_its_1x_eval_is_the_trainers_val_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(
        logn, "SHAPE", {"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16, "d_ff": 48}
    )
    monkeypatch.setattr(
        logn,
        "arms",
        lambda t: {
            "sqrt": ["model.attention_scale=sqrt"],
            "logn": ["model.attention_scale=logn", f"model.logn_base={t}"],
            "logn_clamp16": ["model.attention_scale=logn", f"model.logn_base={t}", "model.logn_min_keys=16"],
        },
    )
    # 8 eval batches x micro-batch 4 = 32 windows: 4 windows at 8x are 32 at 1x, the trainer's own windows
    monkeypatch.setattr(
        logn,
        "settings",
        lambda quick: {"train_len": 16, "steps": 2, "eval_every": 2, "batch": 4, "long_windows": 4},
    )
    record = logn.run(tmp_path, quick=True, seeds=1)
    for arm in ("sqrt", "logn", "logn_clamp16"):
        run = record["arms"][arm]["runs"][0]
        assert (
            run["ok"]
            and set(run["eval"]) == {"long_windows", "1", "2", "4", "8"}
            and run["eval"]["long_windows"] == 4
        )
        assert run["eval"]["1"]["mean"] == pytest.approx(run["val_loss"][-1][1], rel=1e-5)
    assert isinstance(record["verdict"]["reproduced"], bool)
    logn.plot(record, tmp_path / "logn.png")
    assert (tmp_path / "logn.png").stat().st_size > 1000


def _cli():
    spec = importlib.util.spec_from_file_location("bench_blocks_cli", ROOT / "tools/bench_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_json_and_png_per_sub_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(
        ema, "SHAPE", {"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16, "d_ff": 48}
    )
    monkeypatch.setattr(
        ema,
        "settings",
        lambda quick: {"decays": [0.5, 0.9], "steps": 4, "eval_every": 2, "decay_fraction": 0.5, "lr": 1e-3},
    )
    cli = _cli()
    monkeypatch.setattr(sys, "argv", ["bench_blocks.py", "--quick", "--only", "ema", "--out", str(tmp_path)])
    assert cli.main() == 0
    record = json.loads((tmp_path / "bench_blocks_ema.json").read_text())
    assert set(record["decays"]) == {"0.5", "0.9"}
    for data in record["decays"].values():
        assert [s for s, _ in data["runs"][0]["gap"]] == [2, 4]
    raw = [r["runs"][0]["val_loss"] for r in record["decays"].values()]
    assert raw[0] == raw[1]  # EMA never feeds back: one seed's raw run is the same for every decay
    assert (tmp_path / "bench_blocks_ema.png").stat().st_size > 1000
    combined = json.loads((tmp_path / "bench_blocks.json").read_text())
    assert set(combined["ema"]["verdict"]) == {"claim", "measured", "reproduced", "parts"}
    assert set(combined["ema"]["verdict"]["parts"]) == {
        "ema_better_while_lr_high",
        "gap_closes_as_lr_anneals",
    }


def test_cli_rejects_an_unknown_sub_benchmark():
    cli = _cli()
    assert cli.selected(["deepnet,ema", "ema"]) == ["deepnet", "ema"]
    assert cli.selected([]) == [
        "deepnet",
        "logn",
        "gau_flash",
        "ema",
        "simcse",
        "rdrop",
        "performer",
        "nystrom",
    ]
    with pytest.raises(ValueError, match="--only flash: no such sub-benchmark; choose from"):
        cli.selected(["flash"])


def test_cli_answers_an_unknown_sub_benchmark_with_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_blocks.py", "--only", "flash", "--out", str(tmp_path / "out")])
    assert _cli().main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --only flash: no such sub-benchmark; choose from deepnet, logn, gau_flash, ema, simcse, rdrop, "
        "performer, nystrom"
    ]
    assert not (tmp_path / "out").exists()


def test_verdict_parts_make_partly():
    assert common.verdict("c", "m", None, {"a": True, "b": False})["reproduced"] == "partly"
    assert common.verdict("c", "m", None, {"a": True, "b": True})["reproduced"] is True
    assert common.verdict("c", "m", None, {"a": False})["reproduced"] is False
    assert common.verdict("c", "m", None)["reproduced"] is None


def test_simcse_honoured_compares_the_first_losses_of_the_two_variants():
    from growth.bench.blocks import simcse

    def record(first: float, second: float) -> dict:
        return {
            "variants": {
                "symmetric": {"runs": [{"train_loss": [(1, first)]}]},
                "paper": {"runs": [{"train_loss": [(1, second)]}]},
            }
        }

    assert simcse.honoured(record(3.4, 2.8)) and not simcse.honoured(record(3.4, 3.4))


@pytest.mark.slow
def test_rdrop_end_to_end_pretrains_once_and_fine_tunes_each_arm_per_seed(tmp_path, monkeypatch):
    """The STS flow the simcse and rdrop sub-benchmarks share (``simcse.pretrain_then_fine_tune``)."""
    from growth.bench.blocks import rdrop, simcse

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny = {"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16, "d_ff": 48}
    monkeypatch.setattr(simcse, "SHAPE", tiny)
    monkeypatch.setattr(
        rdrop, "settings", lambda quick: {"pretrain_steps": 2, "finetune_steps": 2, "batch": 4, "lr": 3e-4}
    )
    record = rdrop.run(tmp_path, quick=True, seeds=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rdrop_pretrain",
        "rdrop_with_s0",
        "rdrop_without_s0",
    ]
    assert -1.0 <= record["pretrained"]["raw"] <= 1.0
    for arm in ("with", "without"):
        (run,) = record["arms"][arm]["runs"]
        assert run["ok"] and -1.0 <= run["spearman"] <= 1.0
        assert [step for step, _ in run["train_loss"]] == [1, 2] and run["flops_seen"][-1][1] > 0
        assert record["arms"][arm]["spearman"]["mean"] == run["spearman"]
    assert record["flops_ratio"] > 1.0  # the R-Drop arm runs each batch twice
    assert "reproduced" in record["verdict"]
