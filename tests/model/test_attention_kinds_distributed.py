"""Performer and Nystrom attention on real DeepSpeed (2 gloo ranks, ZeRO-2): train, grow inside the run
exactly, resume bit for bit (Performer across feature redraws, which happen before every step here);
``tools/expand.py`` grows their checkpoints. (Without ranks: tests/model/test_performer.py, tests/model/test_nystrom.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth.model.performer import orthogonal_gaussian
from growth.train.callbacks.feature_redraw import redraw_seed
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
KINDS = {
    "performer": ("model.attention=performer", "model.performer_redraw_interval=1"),
    "nystrom": (
        "model.attention=nystrom",
        "model.objective=mlm",
        "model.nystrom_landmarks=8",
        "model.nystrom_conv_kernel=3",
    ),
}


def base_overrides(corpus, kind: str) -> list[str]:
    return [*tiny_run_overrides(*corpus), "train.micro_batch_size=2", "train.grad_accum=2", *KINDS[kind]]


@pytest.mark.parametrize("kind", list(KINDS))
def test_trains_grows_in_run_and_resumes_exactly(corpus, tmp_path, kind):
    from tests.support.attention_kind_jobs import grow_and_resume_job

    run_distributed(
        grow_and_resume_job, 2, base_overrides(corpus, kind), str(tmp_path), str(tmp_path / "out.pt")
    )
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    full, resumed = result["full"], result["resumed"]
    assert len(full) == 4 and all(torch.isfinite(torch.tensor(full)))
    assert resumed == pytest.approx(full[2:], rel=0, abs=1e-6)
    a, b = result["full_weights"], result["resumed_weights"]
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    event = result["events"][0]
    assert event["function_preserving"] and event["max_abs_logit_diff"] <= 1e-5 * 10  # logits are O(1-10)
    assert abs(event["loss_after"] - event["loss_before"]) <= 1e-5
    assert a["layers.0.attention.sublayer.q_proj.weight"].shape == (64, 64)  # grown
    if kind == "performer":  # the checkpoints hold the redrawn features: step s+1 ran with the draw of step s
        for step, weights in ((2, result["step2_weights"]), (4, a)):
            assert torch.equal(weights["layers.0.attention.sublayer.projection"], redrawn(step - 1, 0))
            assert torch.equal(b["layers.1.attention.sublayer.projection"], redrawn(3, 1))


def redrawn(step: int, layer: int) -> torch.Tensor:
    """The features FeatureRedraw draws before step ``step`` + 1 (train.seed 1234, m = floor(16 ln 16))."""
    return orthogonal_gaussian(44, 16, torch.Generator().manual_seed(redraw_seed(1234, step, layer)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_tools_expand_grows_the_checkpoint_exactly(corpus, tmp_path, kind):
    """2x width and depth from a 2-step run's checkpoint: the report's logit difference is within 1e-5, and
    the old layers (now 0 and 2) keep their random features."""
    from growth.config import load_config
    from tests.support.attention_kind_jobs import run_one

    small = tmp_path / "small"
    run_distributed(
        run_one, 1, [*base_overrides(corpus, kind), "train.max_steps=2", f"train.out_dir={small}"]
    )
    config = load_config(
        small / "checkpoints/step_00000002/config.yaml",
        ["model.d_model=64", "model.n_heads=4", "model.d_ff=128"],
    )
    config.model.n_layers = 4
    config.save(tmp_path / "target.yaml")
    command = [
        sys.executable,
        str(ROOT / "tools/expand.py"),
        "--from",
        str(small),
        "--to",
        str(tmp_path / "target.yaml"),
    ]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "grown")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "grown/expand_report.json").read_text())
    assert report["max_abs_logit_diff"] <= 1e-5 * max(1.0, report["logit_scale"])
    if kind == "performer":
        before = load_file(str(small / "checkpoints/step_00000002/model.safetensors"))
        after = load_file(str(tmp_path / "grown/model.safetensors"))
        for old, new in ((0, 0), (1, 2)):
            name = "layers.{}.attention.sublayer.projection"
            assert torch.equal(after[name.format(new)], before[name.format(old)])
