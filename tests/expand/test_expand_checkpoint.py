"""Growing real checkpoints: 2-rank ZeRO-2/ZeRO-3 sources, continuing on 2 ranks, the CLI, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from growth.checkpoint import read_ema
from growth.config import load_config
from growth.expand.grow_checkpoint import expand_checkpoint
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides, train_many_job

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
SMALL = {
    "vocab_size": 384,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "head_dim": 16,
    "d_ff": 64,
    "max_seq_len": 32,
}
LARGE = {**SMALL, "d_model": 64, "n_heads": 4, "d_ff": 128, "n_layers": 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grow")
    corpus = root / "corpus.txt"
    corpus.write_text((ROOT / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000])
    base = [
        *tiny_run_overrides(corpus, root / "cache"),
        "train.ema_decay=0.9",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
    ]
    runs = [
        (
            [*base, f"train.zero_stage={z}", f"train.out_dir={root}/small{z}"],
            str(root / f"small{z}.pt"),
            False,
        )
        for z in (2, 3)
    ]
    run_distributed(train_many_job, 2, runs)
    target = root / "large.yaml"
    target.write_text(
        yaml.safe_dump(
            {
                "model": LARGE,
                "data": {"seq_len": 32, "corpus": str(corpus), "cache_dir": str(root / "cache")},
                "train": {
                    "max_steps": 10,
                    "warmup_steps": 2,
                    "lr": 3e-3,
                    "eval_interval": 5,
                    "save_interval": 5,
                    "eval_batches": 2,
                    "log_interval": 1,
                    "micro_batch_size": 2,
                    "grad_accum": 2,
                    "ema_decay": 0.9,
                },
            }
        )
    )
    return root, target


@pytest.mark.parametrize("stage", [2, 3])
def test_grow_a_two_rank_zero_checkpoint(setup, stage):
    root, target = setup
    out = root / f"grown{stage}"
    report = expand_checkpoint(root / f"small{stage}", target, out, noise_std=1e-3, seed=0)
    assert report["relative_logit_diff"] <= 1e-5 and report["probe"]["source"] == "validation"
    assert report["params_after"] > 3 * report["params_before"]
    assert abs(report["loss_after"] - report["loss_before"]) <= 1e-5
    moments = torch.load(out / "optimizer_state.pt")
    source_state = json.loads((root / f"small{stage}/checkpoints/step_00000004/run_state.json").read_text())
    assert float(moments["embed.weight"]["step"]) == 4 and moments["embed.weight"]["exp_avg"].shape == (
        384,
        64,
    )
    assert moments["embed.weight"]["exp_avg"].abs().max() > 0
    ema = read_ema(out)
    assert ema["weights"]["embed.weight"].shape == (384, 64)
    state = json.loads((out / "run_state.json").read_text())
    assert (
        state["tokens_seen"] == source_state["tokens_seen"] and state["growth_events"][0]["source_step"] == 4
    )
    config = load_config(out / "config.yaml")
    assert config.model.d_model == 64 and config.train.init_from == str(out.resolve())


def test_continue_on_two_ranks_from_a_grown_checkpoint(setup):
    """10 steps on 2 ranks under ZeRO-2 and ZeRO-0 from the grown ZeRO-3 checkpoint: the grown Adam
    moments load into both optimizers identically (same losses), the first loss continues the small
    model's (no jump), the growth event and both phases' tokens are in TensorBoard."""
    root, target = setup
    grown = root / "grown_for_continue"
    report = expand_checkpoint(root / "small3", target, grown, noise_std=1e-3, seed=0)
    runs = [
        ([f"train.zero_stage={z}", f"train.out_dir={root}/large{z}"], str(root / f"large{z}.pt"), False)
        for z in (2, 0)
    ]
    from tests.support.jobs import train_from_config_job

    run_distributed(train_from_config_job, 2, str(grown / "config.yaml"), runs)
    zero2, zero0 = torch.load(root / "large2.pt")["losses"], torch.load(root / "large0.pt")["losses"]
    assert len(zero2) == 10 and zero2 == pytest.approx(zero0, abs=1e-5)
    small_losses = torch.load(root / "small3.pt")["losses"]
    assert abs(zero2[0] - small_losses[-1]) < 0.1  # the grown model starts where the small one ended
    assert all(torch.isfinite(torch.tensor(zero2)))
    events = EventAccumulator(str(root / "large2/tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"growth/loss_before", "growth/loss_after", "by_tokens/val_loss"} <= tags
    assert events.Scalars("growth/loss_after")[0].value == pytest.approx(report["loss_after"], rel=1e-6)
    state = json.loads((root / "large2/checkpoints/step_00000010/run_state.json").read_text())
    source_tokens = json.loads((grown / "run_state.json").read_text())["tokens_seen"]
    assert state["tokens_seen"] == source_tokens + 10 * 8 * 32


def run_expand(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/expand.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_end_to_end(setup):
    root, target = setup
    result = run_expand(
        "--from", str(root / "small2"), "--to", str(target), "--out", str(root / "cli_grown"), "--seed", "3"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((root / "cli_grown/expand_report.json").read_text())
    assert report["max_abs_logit_diff"] <= 1e-5 * max(1, report["logit_scale"]) and report["seed"] == 3
    assert any("depth 2 -> 4" in op for op in report["operators"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"d_model": 16, "n_heads": 1}, "model.d_model=16 is smaller than the source's 32"),
        (
            {"d_model": 72, "n_heads": 4},
            "model.n_heads * model.head_dim must equal model.d_model (4 * 16 != 72)",
        ),
        ({"vocab_size": 512}, "model.vocab_size changes from 384 to 512"),
        ({"layer": "gau"}, "model.layer changes from 'transformer' to 'gau'"),
    ],
)
def test_cli_refuses_impossible_targets(setup, tmp_path, change, message):
    root, _ = setup
    target = tmp_path / "bad.yaml"
    target.write_text(yaml.safe_dump({"model": {**LARGE, **change}, "data": {"seq_len": 32}}))
    result = run_expand("--from", str(root / "small2"), "--to", str(target), "--out", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_cli_refuses_bad_sources_and_existing_out(setup, tmp_path):
    root, target = setup
    missing = run_expand(
        "--from", str(tmp_path / "nothing"), "--to", str(target), "--out", str(tmp_path / "o1")
    )
    assert missing.returncode == 2 and "is not a checkpoint" in missing.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text((root / "small2/config.yaml").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    bad = run_expand("--from", str(corrupt), "--to", str(target), "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "unreadable checkpoint" in bad.stderr, bad.stderr[-2000:]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    taken = run_expand("--from", str(root / "small2"), "--to", str(target), "--out", str(existing))
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert (existing / "keep.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1
