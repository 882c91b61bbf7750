"""The growth benchmark end to end on the trainer's real path, at a toy size: every path trains, the
decay branches continue the main run exactly, the planned FLOPs are the trainer's, a second ask reuses
the finished runs, runs trained side by side equal runs trained alone, and the report's last line is
the headline figure."""

import json

import pytest

from growth.bench.growth_protocol import protocol as runner
from growth.bench.growth_protocol import report, runs
from growth.bench.growth_protocol.plan import Protocol
from growth.bench.harness import write_json

pytestmark = pytest.mark.slow

TOY = Protocol(
    corpus="bundled:tinyshakespeare",
    base_steps=8,
    scratch_multiples=(1, 2),
    grown_multiples=(1, 2),
    lrs=(1e-3, 2e-3),
    seeds=(0,),
    warmup_steps=2,
    evals_per_run=3,
    eval_batches=4,
)


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory):
    work = tmp_path_factory.mktemp("growth_runs")
    lines: list[str] = []
    runs.set_parallel_runs(2)  # the LR sweep, the branches, the small and grown runs train side by side
    try:
        result = runner.compare(TOY, work, threads=1, log=lines.append)
    finally:
        runs.set_parallel_runs(1)
    return work, result, lines


def test_a_run_trained_beside_others_equals_it_trained_alone(toy_result, tmp_path):
    _, result, _ = toy_result
    lr = result["lr_sweep"]["best"]
    alone = runner.scratch(TOY, tmp_path, 0, lr, threads=1, log=lambda line: None, multiples=(1,))
    assert (
        alone["budgets"][0]["loss"] == result["lr_sweep"]["losses"][str(lr)]
    )  # exact: same process, same data


def test_every_path_ran_and_is_read_in_both_accountings(toy_result):
    _, result, _ = toy_result
    seed = result["seeds"][0]
    budgets = seed["scratch"]["budgets"]
    assert [b["steps"] for b in budgets] == [8, 16]
    assert budgets[1]["loss"] < budgets[0]["loss"]  # the toy's scratch curve falls, so savings can be read
    for path in seed["grown"]:
        assert path["flops_after_growth"] < path["flops"]  # the small model's FLOPs counted only "with"
        assert path["saving_without_small"] > path["saving_with_small"]
        assert path["phases"][0]["steps"] > path["phases"][1]["steps"]  # cheaper steps: more of them
    assert set(result["headline"]) >= {
        "saving_with_small",
        "saving_without_small",
        "saving_with_small_per_seed",
    }
    assert result["lr_sweep"]["best"] in TOY.lrs


def test_the_branch_is_the_main_run_until_it_decays(toy_result):
    _, result, _ = toy_result
    budgets = result["seeds"][0]["scratch"]["budgets"]
    branch, main = budgets[0]["run"], budgets[1]["run"]
    start = 8 - TOY.decay_steps(1)
    assert [v for s, v in branch["val"] if s <= start] == [v for s, v in main["val"] if s <= start]
    assert branch["steps"] == 8 and main["steps"] == 16
    assert branch["flops_seen"] == pytest.approx(main["flops_seen"] / 2, rel=1e-12)


def test_a_second_ask_reuses_the_finished_runs(toy_result):
    work, result, _ = toy_result
    lines: list[str] = []
    again = runner.compare(TOY, work, threads=1, log=lines.append)
    assert not any(" steps in " in line for line in lines)  # nothing trained again
    assert again["headline"] == result["headline"]


def test_report_writes_json_and_plot_and_ends_with_the_headline(toy_result, tmp_path):
    _, result, _ = toy_result
    write_json(tmp_path / "bench_growth.json", result, indent=1)
    report.plot(result, tmp_path / "bench_growth.png")
    assert json.loads((tmp_path / "bench_growth.json").read_text())["headline"][
        "saving_with_small"
    ] == pytest.approx(result["headline"]["saving_with_small"], abs=1e-12)
    assert (tmp_path / "bench_growth.png").stat().st_size > 10_000
    assert report.summary_lines(result)[-1].startswith("headline (largest budget, 1 seeds)")


def test_an_ablation_reads_every_arm_against_the_same_scratch(toy_result):
    work, _, _ = toy_result
    lines: list[str] = []
    result = runner.ablation("optimizer", TOY, work, threads=1, log=lines.append, multiple=1)
    assert [a["arm"] for a in result["arms"]] == ["default recipe", "reset moments"]
    assert sum(" steps in " in line for line in lines) == 1  # only the new arm trained
    assert result["arms"][0]["loss"] != result["arms"][1]["loss"]
