"""``at_step: auto`` on real DeepSpeed with 2 gloo ranks (ZeRO 2): the run decides after an evaluation, grows
exactly, and a run killed before the decision or right after it resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides
from tests.train.test_auto_growth import GROWS_FIRST_CHANCE, STAGE

ROOT = Path(__file__).parents[2]


@pytest.mark.distributed
@pytest.mark.slow
def test_auto_growth_decides_grows_and_resumes_bit_exactly_on_two_ranks(corpus, tmp_path):
    from tests.support.auto_growth_jobs import auto_growth_job

    base = [
        *tiny_run_overrides(*corpus),
        "train.max_steps=10",
        "train.micro_batch_size=2",
        "train.lr_schedule=constant",  # a shorter first leg must see the same LR as the whole run
        "train.zero_stage=2",
        f"train.growth=[{STAGE.format(law=GROWS_FIRST_CHANCE, extra='')}]",
    ]
    run_distributed(auto_growth_job, 2, base, str(tmp_path), str(tmp_path / "out.pt"))
    result = torch.load(tmp_path / "out.pt")
    # evaluations at steps 2, 4, 6: the third gives a slope, and the law's large model falls faster
    assert result["decided"] == 6
    assert [e["source_step"] for e in result["events"] if "stage" in e] == [6]
    assert result["events"][-1]["max_abs_logit_diff"] <= 1e-5
    whole = result["whole"]
    for keep, losses in result["resumed"].items():
        assert losses == whole[keep:], f"resumed after step {keep}"  # bit for bit
