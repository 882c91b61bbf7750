"""Growth operators on real DeepSpeed ranks (2 gloo ranks): a DeepNorm stack grown from 12 to 48 layers
inside one run with the ramp (exact at the growth step, keeps training, resumes mid-ramp exactly, no gate
left after the fold); G_stack inside a run (its event records the loss change); ``tools/expand.py`` with
the operator flags and the continued run that adopts the ramp. (Without ranks: test_growth_operators.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).parents[2]


def base_overrides(corpus, *extra: str) -> list[str]:
    return [
        *tiny_run_overrides(*corpus),
        "train.micro_batch_size=2",
        "train.grad_accum=1",
        "train.warmup_steps=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def deep(corpus, tmp_path_factory):
    from tests.support.growth_operator_jobs import deep_ramp_job

    root = tmp_path_factory.mktemp("deep_ramp")
    base = base_overrides(
        corpus, "train.max_steps=10", "train.save_interval=2", "train.zero_stage=2", "train.eval_interval=5"
    )
    run_distributed(deep_ramp_job, 2, base, str(root), str(root / "out.pt"))
    return torch.load(root / "out.pt", weights_only=False)


def test_deepnorm_grows_from_12_to_48_layers_in_one_run_and_keeps_training(deep):
    """Step 4 is the first step of the 48-layer model, at m = 0: its loss is the 12-layer model's on that
    batch. The 36 new layers' gates go 0, 1/4, 2/4, 3/4, then are folded; the run trains on (finite, lower)."""
    grown, small = deep["grown"], deep["small"]
    assert len(grown["losses"]) == 10 and grown["losses"][:3] == small["losses"][:3]
    assert grown["losses"][3] == pytest.approx(small["losses"][3], rel=1e-5)
    assert grown["layers"] == 48
    ms = [sorted(set(g.values())) for g in grown["gates"]]
    assert ms == [[]] * 3 + [[0.0], [0.25], [0.5], [0.75]] + [[]] * 3
    assert all(len(g) == 36 for g in grown["gates"][3:7])
    assert all(torch.isfinite(torch.tensor(grown["losses"]))) and grown["losses"][-1] < grown["losses"][0]


def test_a_resume_mid_ramp_is_exact(deep):
    for keep in (4, 6, 8):
        resumed = deep[f"resumed_from_{keep}"]
        assert resumed["losses"] == pytest.approx(deep["grown"]["losses"][keep:], rel=0, abs=1e-6), keep
        assert resumed["gates"] == deep["grown"]["gates"][keep:]


def test_checkpoints_carry_the_ramp_and_the_event(deep):
    states = deep["run_states"]
    new_layers = [i for i in range(48) if i % 4]  # old layer i sits at 4i
    for step in (4, 6):  # mid-ramp: the ramp, started at step 3
        assert states[step]["callbacks"]["DepthRamp"] == {
            "ramps": [{"layers": new_layers, "steps": 4, "start": 3}]
        }
    assert states[8]["callbacks"]["DepthRamp"] == {"ramps": []}  # folded: nothing left of the gate
    event = states[8]["growth_events"][0]
    assert event["depth_operator"] == "ramp" and event["function_preserving"] and event["ramp_steps"] == 4
    assert (
        event["max_abs_logit_diff"] <= 1e-5 * 10 and abs(event["loss_after"] - event["loss_before"]) <= 1e-5
    )


def test_stacking_inside_a_run_records_its_loss_change(corpus, tmp_path):
    from tests.support.growth_operator_jobs import stack_job

    run_distributed(stack_job, 2, base_overrides(corpus), str(tmp_path), str(tmp_path / "out.pt"))
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    event = result["events"][0]
    assert event["depth_operator"] == "stack" and event["function_preserving"] is False
    assert event["loss_after"] != event["loss_before"] and event["max_abs_logit_diff"] > 1e-4
    assert len(result["losses"]) == 4 and result["layers"] == 4 and result["gates"] == [{}] * 4


def test_tools_expand_operator_flags_and_the_continued_run_adopts_the_ramp(corpus, tmp_path):
    from tests.support.growth_operator_jobs import two_command_ramp_job

    target = tmp_path / "large.yaml"
    model = {
        "vocab_size": 384,
        "d_model": 64,
        "n_layers": 4,
        "n_heads": 4,
        "head_dim": 16,
        "d_ff": 128,
        "max_seq_len": 32,
        "residual": "post",
    }
    target.write_text(
        yaml.safe_dump(
            {
                "model": model,
                "data": {"seq_len": 32, "corpus": str(corpus[0]), "cache_dir": str(corpus[1])},
                "train": {
                    "micro_batch_size": 2,
                    "warmup_steps": 1,
                    "lr": 3e-3,
                    "eval_interval": 2,
                    "eval_batches": 2,
                    "log_interval": 1,
                },
            }
        )
    )
    run_distributed(
        two_command_ramp_job, 2, base_overrides(corpus), str(tmp_path), str(target), str(tmp_path / "out.pt")
    )
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    assert result["cli"]["returncode"] == 0, result["cli"]["stderr"]
    report = result["report"]
    assert report["depth_operator"] == "ramp" and report["split"] == "lemon" and report["noise"] == "relative"
    assert (
        report["relative_logit_diff"] <= 1e-5
        and report["ramp_layers"] == [1, 3]
        and report["ramp_steps"] == 3
    )
    continued = result["continued"]
    assert [sorted(set(g.values())) for g in continued["gates"]] == [
        [0.0],
        pytest.approx([1 / 3]),
        pytest.approx([2 / 3]),
        [],
        [],
        [],
    ]
    assert result["run_state_2"]["callbacks"]["DepthRamp"] == {
        "ramps": [{"layers": [1, 3], "steps": 3, "start": 0}]
    }
    assert result["resumed"]["losses"] == pytest.approx(continued["losses"][2:], rel=0, abs=1e-6)
    assert abs(continued["losses"][0] - result["small"]["losses"][-1]) < 0.2  # no jump at the growth
