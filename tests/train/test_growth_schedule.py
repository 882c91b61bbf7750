"""Growth inside one run (``train.growth``) on real DeepSpeed with 2 gloo ranks: width at step 3,
depth at step 5, under ZeRO 0, 2 and 3, with EMA; against the same run without growth and the
two-command flow; kill-and-resume before and after a growth. (Refusals and schedules without
ranks: ``test_growth_config.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth.config import load_config
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

ROOT = Path(__file__).parents[2]
ZERO_STAGES = (0, 2, 3)


def base_overrides(corpus) -> list[str]:
    return [
        *tiny_run_overrides(*corpus),
        "train.max_steps=8",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        "train.ema_decay=0.9",
        "train.save_interval=2",
        "train.warmup_steps=2",
    ]


@pytest.fixture(scope="module", params=ZERO_STAGES)
def suite(request, corpus, tmp_path_factory):
    from tests.support.growth_jobs import growth_suite_job

    stage = request.param
    root = tmp_path_factory.mktemp(f"growth_zero{stage}")
    run_distributed(growth_suite_job, 2, base_overrides(corpus), str(root), stage, True, str(root / "out.pt"))
    return stage, root, torch.load(root / "out.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_the_grown_model_continues_the_small_models_loss(suite):
    """Step 4 is the first batch after the width growth: its loss (computed before the update) is the
    small model's loss on that batch, i.e. step 4 of the run without growth. Steps 1-3 are identical."""
    _, _, result = suite
    grown, small = result["grown"], result["small"]
    assert len(grown) == len(small) == 8
    assert grown[:3] == small[:3]
    assert grown[3] == pytest.approx(small[3], rel=1e-5)
    assert grown[7] != pytest.approx(small[7], rel=1e-4)  # after growing, a different model trains


@pytest.mark.distributed
@pytest.mark.slow
def test_in_run_growth_equals_the_two_command_flow(suite):
    """tools/expand.py on the small run's step-3 checkpoint + init_from + continue_schedule gives the
    same losses for steps 4-8 (weights, Adam moments, EMA, data position and LR schedule all agree)."""
    _, _, result = suite
    assert len(result["two_command"]) == 5
    assert result["two_command"] == pytest.approx(result["grown"][3:], rel=0, abs=1e-6)


@pytest.mark.distributed
@pytest.mark.slow
def test_checkpoints_record_the_model_they_hold_and_the_growth_events(suite):
    _, root, _ = suite
    checkpoints = root / "grown/checkpoints"
    models = {
        step: load_config(checkpoints / f"step_{step:08d}/config.yaml").model for step in (2, 3, 4, 6, 8)
    }
    assert [(m.d_model, m.n_layers) for m in models.values()] == [(32, 2), (32, 2), (64, 2), (64, 4), (64, 4)]
    weights = load_file(str(checkpoints / "step_00000008/model.safetensors"))
    assert weights["embed.weight"].shape == (384, 64) and "layers.3.ffn.sublayer.down_proj.weight" in weights
    events = json.loads((checkpoints / "step_00000008/run_state.json").read_text())["growth_events"]
    assert [(e["stage"], e["source_step"]) for e in events] == [(0, 3), (1, 5)]
    assert all(
        e["max_abs_logit_diff"] <= 1e-5 and abs(e["loss_after"] - e["loss_before"]) <= 1e-5 for e in events
    )
    assert events[0]["params_after"] > 2 * events[0]["params_before"]
    saved = load_config(root / "grown/config.yaml")
    assert saved.model.d_model == 32 and len(saved.train.growth) == 2  # the run's record: the schedule


@pytest.mark.distributed
@pytest.mark.slow
def test_kill_and_resume_before_and_after_a_growth(suite):
    _, _, result = suite
    for keep in (2, 4):
        assert result[f"resumed_from_{keep}"] == pytest.approx(result["grown"][keep:], rel=0, abs=1e-6), keep


@pytest.mark.distributed
@pytest.mark.slow
def test_compare_runs_plots_real_runs_with_growth_marked(suite, tmp_path):
    """tools/compare_runs.py on the grown and the plain run: both curves, the two growth events at
    steps 3 and 5 (and at the FLOPs seen by then), a PNG."""
    import subprocess
    import sys

    from growth.eval.run_curves import read_run

    _, root, _ = suite
    grown, small = read_run(root / "grown", "steps"), read_run(root / "small", "steps")
    assert grown.growth == [3.0, 5.0] and small.growth == []
    assert [x for x, _ in grown.val] == [2.0, 4.0, 6.0, 8.0] and len(grown.val_ema) == 4
    by_flops = read_run(root / "grown", "flops")
    assert by_flops.growth[0] < by_flops.val[1][0] < by_flops.growth[1]  # step 4's FLOPs lie between
    out = tmp_path / "runs.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/compare_runs.py"),
            str(root / "grown"),
            str(root / "small"),
            "--x",
            "flops",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000 and "grown: 4 evaluations" in result.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "tools/compare_runs.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "not a run directory" in bad.stderr
