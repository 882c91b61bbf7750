"""Samples while training (``train.sample_interval``) on real DeepSpeed with 2 gloo ranks: the losses are
those of the same run without samples, bit for bit, also resumed before and after a growth; the texts reach
TensorBoard, and the small and the grown model write the same text at the growth step. The summary's commands
and the console line's LR and ETA, by running a non-default shape with plain ``python`` and then the commands
it printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

ROOT = Path(__file__).parents[2]
GROWTH = "train.growth=[{at_step: 3, model: {d_model: 64, n_heads: 4, d_ff: 128}}]"


@pytest.fixture(scope="module")
def sampled(corpus, tmp_path_factory) -> dict:
    from tests.support.generate_jobs import samples_job

    root = tmp_path_factory.mktemp("samples")
    base = [*tiny_run_overrides(*corpus), "train.max_steps=6", "train.save_interval=2", GROWTH]
    run_distributed(samples_job, 2, base, str(root), str(root / "out.pt"))
    return torch.load(root / "out.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_samples_leave_the_losses_bit_identical_also_resumed(sampled):
    assert len(sampled["plain"]) == 6 and sampled["sampled"] == sampled["plain"]
    assert sampled["sampled_zero3"] == sampled["plain_zero3"]
    assert sampled["resumed_from_4"] == sampled["sampled"][4:]  # after the growth
    assert sampled["resumed_from_2"] == sampled["sampled"][2:]  # before it: grows again at step 3


@pytest.mark.distributed
@pytest.mark.slow
def test_samples_reach_tensorboard_and_are_equal_across_the_growth(sampled):
    texts = sampled["texts"]
    assert set(texts) == {f"samples/{p}" for p in (0, 1)} | {
        f"samples/{when}_growth/{p}" for when in ("before", "after") for p in (0, 1)
    }
    assert sorted(texts["samples/0"]) == [2, 4, 6]  # step 3 grows: its samples are the growth's
    for prompt in (0, 1):
        before, after = texts[f"samples/before_growth/{prompt}"], texts[f"samples/after_growth/{prompt}"]
        assert list(before) == list(after) == [3] and before[3] == after[3]
    assert texts["samples/before_growth/0"][3].startswith("```\nROMEO:")
    assert len(texts["samples/0"][6]) > len("```\nROMEO:\n```")  # it wrote something


def python_run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for launcher_variable in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "CROSS_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(launcher_variable, None)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def printed(stdout: str, label: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.strip().startswith(f"{label}:"))
    tokens = shlex.split(line.split(":", 1)[1])
    return [sys.executable, *tokens[1:]] if tokens[0] == "python" else tokens


@pytest.mark.distributed
@pytest.mark.slow
def test_the_summary_commands_run_as_printed_for_a_non_default_shape(corpus, tmp_path):
    """A GAU run of another width: configs/grow_2x.yaml (a transformer of d_model 256) cannot grow it; the
    summary's grow command (a 2x target written beside the run) can, and its continue and sample commands run."""
    out = tmp_path / "gau"
    shape = ["model.layer=gau", "model.d_model=48", "model.gau_key_size=16", "model.n_layers=2"]
    steps = ["train.max_steps=2", "train.eval_interval=2", "train.save_interval=2", "train.log_interval=1"]
    done = python_run(
        [
            sys.executable,
            "launch/pretrain.py",
            *tiny_run_overrides(*corpus),
            *shape,
            *steps,
            f"train.out_dir={out}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| lr " in done.stdout and "| ETA " in done.stdout
    grow = printed(done.stdout, "grow")
    assert grow[1:] == [
        "tools/expand.py",
        "--from",
        str(out),
        "--to",
        str(out / "grow_2x.yaml"),
        "--out",
        f"{out}_2x",
    ]
    grown = python_run(grow)
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert '"params_after"' in grown.stdout and (Path(f"{out}_2x") / "model.safetensors").is_file()
    sample = python_run([*printed(done.stdout, "sample"), "--max-new-tokens", "8"])
    assert sample.returncode == 0 and sample.stdout.startswith("ROMEO:"), sample.stderr[-3000:]
    continued = python_run(printed(done.stdout, "continue"))
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert f"resumed from {out}/checkpoints/step_00000002 at step 2" in continued.stdout
    assert "done: step 4" in continued.stdout
