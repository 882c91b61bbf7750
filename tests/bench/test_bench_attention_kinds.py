"""The Performer and Nystromformer sub-benchmarks (growth/bench/blocks/performer.py, nystrom.py): their
verdicts against hand-made records, and a quick run of each end to end (seconds)."""

from __future__ import annotations

import pytest
import torch

from growth.bench.blocks import common, nystrom, performer


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_log_log_slope_recovers_a_power_law():
    xs = [16, 64, 256, 1024]
    assert common.log_log_slope(xs, [3.0 * x**-0.5 for x in xs]) == pytest.approx(-0.5, abs=1e-12)


def performer_record(moderate: list[float], performer_cost: list[float]) -> dict:
    m = [16, 64, 256]
    return {
        "features": m,
        "error": {
            "moderate": {"causal": moderate, "bidirectional": moderate},
            "peaked": {"causal": [1.0, 0.9, 0.8], "bidirectional": [1.0, 0.9, 0.8]},
        },
        "lengths": [256, 8192],
        "microseconds_per_token": {"softmax": [2.0, 40.0], "performer": performer_cost},
    }


def test_performer_verdict():
    law = [0.4, 0.2, 0.1]  # exactly m^-1/2
    assert performer.judge(performer_record(law, [5.0, 5.5]))["reproduced"] is True
    assert performer.judge(performer_record(law, [5.0, 9.0]))["reproduced"] == "partly"  # x1.8: not flat
    assert performer.judge(performer_record([0.4, 0.39, 0.38], [5.0, 9.0]))["reproduced"] is False


def test_nystrom_verdict():
    record = {
        "landmarks": [8, 64, 512],
        "settings": {"error_length": 1024, "cost_length": 4096},
        "error": [0.3, 0.2, 0.1],
        "microseconds_per_token": {"softmax": 40.0, "nystrom": [1.0, 3.0, 200.0]},
    }
    assert nystrom.judge(record)["reproduced"] is True
    record["error"] = [0.3, 0.25, 0.2]  # falls, but not by half
    assert nystrom.judge(record)["reproduced"] == "partly"


@pytest.mark.parametrize("suite", [performer, nystrom])
def test_quick_runs_end_to_end(suite, tmp_path):
    record = suite.run(tmp_path, quick=True, seeds=1)
    assert record["verdict"]["reproduced"] in (True, "partly", False)
    suite.plot(record, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 10_000
