"""The envelope protocol end to end on the trainer's real path, at a toy size (3 sizes, 2 seeds, tiny budgets):
every size's LR sweep, scratch with fully decayed branches, the grown path as one train.growth run with its
branches, the trainer's FLOPs equal to the plan, readings against the envelope and the large model alone, the
interval over seeds, the figure, and a second ask served from the run cache."""

import dataclasses
import math

import pytest

from growth.bench.growth_protocol import envelope, envelope_report, runs
from growth.bench.growth_protocol.envelope_plan import from_options

pytestmark = pytest.mark.slow

TOY = from_options(
    "quick",
    seeds=2,
    base_steps=20,
    small="d_model=16,n_layers=1,head_dim=8",
    large="d_model=32,n_layers=2,head_dim=8",
    corpus="bundled:tinyshakespeare",
)
TOY = dataclasses.replace(
    TOY,
    scratch_multiples={"small": (1, 2), "mid": (1, 2), "large": (1, 2, 3)},
    grown_multiples=(2,),
    lrs=(2e-3, 4e-3),
    sweep_extensions=0,
    warmup_steps=2,
    eval_batches=4,
    evals_per_run=3,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    work = tmp_path_factory.mktemp("envelope_runs")
    lines: list[str] = []
    runs.set_parallel_runs(2)
    try:
        result = envelope.compare(TOY, envelope.Bench(work, 1, lines.append))
    finally:
        runs.set_parallel_runs(1)
    return work, result, lines


def test_every_size_every_budget_and_the_grown_path_ran_fully_decayed(toy):
    _, result, _ = toy
    assert set(result["lr_sweeps"]) == {"small", "mid", "large"}
    for seed in (0, 1):
        data = result["seeds"][seed]
        for size in ("small", "mid", "large"):
            multiples = sorted(p["multiple"] for p in data["scratch"] if p["size"] == size)
            assert multiples == list(TOY.scratch_multiples[size])
        assert [p["multiple"] for p in data["grown"]] == list(TOY.grown_multiples)
        for p in data["grown"]:
            assert p["flops_after_growth"] < p["flops"] and p["at_step"] == TOY.steps_per_unit(TOY.small)
            assert p["loss_se"] > 0


def test_readings_are_consistent_with_the_envelope(toy):
    _, result, _ = toy
    for data in result["seeds"].values():
        front = data["envelope"]
        assert all(b[1] < a[1] and b[0] > a[0] for a, b in zip(front, front[1:]))  # falls as compute grows
        best = min(p["loss"] for p in data["scratch"])
        assert front[-1][1] == best
        for p in data["grown"]:
            expected = 1 - p["flops"] / p["envelope_flops_for_loss"]
            assert p["saving_vs_envelope"] == pytest.approx(expected, rel=1e-12)
    for h in result["headline"].values():
        values = h["saving_vs_envelope"]["per_seed"]
        assert h["saving_vs_envelope"]["mean"] == pytest.approx(sum(values) / 2, rel=1e-12)
        assert (
            h["saving_vs_envelope"]["low"]
            <= h["saving_vs_envelope"]["mean"]
            <= h["saving_vs_envelope"]["high"]
        )
    assert math.isfinite(result["scaling_law"]["E"]) and result["crossover"]["checked_at"] == [1, 2]


def test_a_second_ask_reuses_every_run_and_the_report_is_written(toy, tmp_path):
    work, result, _ = toy
    lines: list[str] = []
    again = envelope.compare(TOY, envelope.Bench(work, 1, lines.append))
    assert not [line for line in lines if " steps in " in line]  # nothing trained
    assert again["headline"] == result["headline"]
    envelope_report.plot(result, tmp_path / "envelope.png")
    assert (tmp_path / "envelope.png").stat().st_size > 10_000
    assert any(line.startswith("headline 2x") for line in envelope_report.summary_lines(result))
