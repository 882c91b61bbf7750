"""The growth benchmark's arithmetic (growth/bench/growth_protocol/): budgets, phases, the saving read
against the scratch curve in both accountings, the slope rule; exact or to 1e-9 unless stated."""

import math

import pytest

from growth.bench import harness
from growth.bench.growth_protocol import curves, runs
from growth.bench.growth_protocol.plan import (
    Phase,
    Protocol,
    flops_at_step,
    grown_phases,
    phase_flops,
    stage_shapes,
)
from growth.bench.growth_protocol.protocol import growth_stages, run_config
from growth.bench.growth_protocol.recipe import ABLATIONS, DEFAULT, ablation_arms
from growth.config import ModelConfig, load_config
from growth.model import build_model
from growth.model.accounting import flops_per_token
from growth.train.growth_schedule import stage_models

PROTOCOL = Protocol(corpus="bundled:tinyshakespeare")


def test_frontier_sorts_and_keeps_only_budgets_that_improve():
    assert curves.frontier([(4.0, 3.0), (1.0, 5.0), (2.0, 3.5), (8.0, 3.2), (16.0, 3.0)]) == [
        (1.0, 5.0),
        (2.0, 3.5),
        (4.0, 3.0),
    ]


def test_a_frontier_of_one_budget_reads_nothing():
    front = curves.frontier([(1.0, 5.0), (2.0, 5.0)])
    cost, extrapolated = curves.cost_at(front, 4.0)
    assert math.isnan(cost) and extrapolated and math.isnan(curves.loss_at(front, 1.5))


def test_loss_and_cost_interpolate_linearly_in_log_cost():
    front = [(1e12, 5.0), (4e12, 4.0), (16e12, 3.5)]
    assert curves.loss_at(front, 2e12) == pytest.approx(
        4.5, abs=1e-12
    )  # halfway in log between 1e12 and 4e12
    cost, extrapolated = curves.cost_at(front, 3.75)
    assert cost == pytest.approx(8e12, rel=1e-12) and not extrapolated
    cost, extrapolated = curves.cost_at(front, 3.25)  # past the end: the last segment extended
    assert cost == pytest.approx(32e12, rel=1e-12) and extrapolated  # half a segment past 16e12


def test_savings_both_accountings_against_a_hand_computation():
    flops = [(1e12, 5.0), (4e12, 4.0), (16e12, 3.5)]
    seconds = [(10.0, 5.0), (40.0, 4.0), (160.0, 3.5)]
    out = curves.savings(
        flops, seconds, final_loss=3.75, flops_total=3e12, flops_after_growth=2e12, seconds=20.0
    )
    assert out["scratch_flops_for_loss"] == pytest.approx(8e12, rel=1e-12)
    assert out["saving_with_small"] == pytest.approx(1 - 3 / 8, abs=1e-12)
    assert out["saving_without_small"] == pytest.approx(1 - 2 / 8, abs=1e-12)
    # scratch at 3e12 FLOPs: 5 - log(3)/log(4) * 1.0
    assert out["loss_gap_at_equal_flops"] == pytest.approx(3.75 - (5 - math.log(3) / math.log(4)), abs=1e-12)
    assert out["wall_ratio"] == pytest.approx(20.0 / 80.0, abs=1e-12)
    assert not out["extrapolated"]


def test_fit_power_law_recovers_an_exact_curve():
    e, a, alpha = 2.0, 30.0, 0.35
    f = [1e10 * 2**k for k in range(12)]
    fit = curves.fit_power_law(f, [e + a * (x / 1e10) ** -alpha for x in f])
    assert fit == pytest.approx((e, a * 1e10**alpha, alpha), rel=1e-4)


def test_slope_rule_grows_where_the_slopes_cross():
    # small: L = 2.5 + F^-0.5 (fast, high floor); large: L = 2 + 2 F^-0.5 (slow, low floor), F in units.
    grid = [2 ** (k / 4) for k in range(0, 60)]
    small = [(f, 2.5 + f**-0.5) for f in grid]
    large = [(f, 2.0 + 2 * f**-0.5) for f in grid]
    point = curves.slope_rule_flops(small, large)
    # slope of small at F: 0.5 F^-1.5; the large model at the same loss L has F' = (2 / (L - 2))^2, slope
    # 0.5 * 2 F'^-1.5 = (L - 2)^3 / 8 ... solve 0.5 F^-1.5 = (0.5 + F^-0.5)^3 / 8 numerically.
    lo, hi = 1.0, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if 0.5 * mid**-1.5 > (0.5 + mid**-0.5) ** 3 / 8 else (lo, mid)
    assert point == pytest.approx(lo, rel=0.03)  # the grid of 400 points in log F


def test_grown_phases_spend_the_budget():
    budget = PROTOCOL.budget_flops(4)
    for recipe in (
        DEFAULT,
        DEFAULT.changed(stages="two"),
        DEFAULT.changed(dims="width"),
        DEFAULT.changed(dims="depth"),
    ):
        shapes = stage_shapes(PROTOCOL, recipe)
        phases = grown_phases(PROTOCOL, shapes, budget, 0.5)
        spent = phase_flops(PROTOCOL, phases)
        assert sum(spent[:-1]) == pytest.approx(0.5 * budget, rel=0.01)
        assert abs(sum(spent) - budget) <= PROTOCOL.step_flops(PROTOCOL.large)  # within one large step
        assert shapes[-1] == PROTOCOL.large
        steps = sum(p.steps for p in phases)
        assert flops_at_step(PROTOCOL, phases, steps) == pytest.approx(sum(spent), rel=1e-12)
        assert flops_at_step(PROTOCOL, phases, phases[0].steps) == pytest.approx(spent[0], rel=1e-12)


def test_step_flops_is_the_trainers_accounting():
    shape = PROTOCOL.large
    model = build_model(ModelConfig(**shape, vocab_size=PROTOCOL.vocab_size, max_seq_len=256))
    tokens = PROTOCOL.micro_batch_size * PROTOCOL.seq_len
    assert PROTOCOL.step_flops(shape) == tokens * model.flops_per_token(PROTOCOL.seq_len)
    assert PROTOCOL.step_flops(shape) == tokens * flops_per_token(model.config, PROTOCOL.seq_len)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_arm_is_a_valid_run_config(tmp_path, name):
    """Each arm's in-run growth stages pass the trainer's config validation and end at the large model."""
    for _, recipe in ablation_arms(name):
        shapes = stage_shapes(PROTOCOL, recipe)
        phases = grown_phases(PROTOCOL, shapes, PROTOCOL.budget_flops(2), recipe.fraction)
        stages = growth_stages(shapes, phases, recipe, seed=0)
        steps = sum(p.steps for p in phases)
        config = run_config(PROTOCOL, shapes[0], 0, 1e-3, steps, growth=stages)
        path = tmp_path / "run.yaml"
        import yaml

        path.write_text(yaml.safe_dump(config))
        loaded = load_config(path)
        final = stage_models(loaded)[-1]
        assert {k: getattr(final, k) for k in PROTOCOL.large} == PROTOCOL.large
        assert [s.at_step for s in loaded.train.growth] == [
            sum(p.steps for p in phases[: i + 1]) for i in range(len(phases) - 1)
        ]


def test_flops_at_step_counts_each_phase_at_its_rate():
    phases = [Phase(PROTOCOL.small, 10), Phase(PROTOCOL.large, 5)]
    small, large = PROTOCOL.step_flops(PROTOCOL.small), PROTOCOL.step_flops(PROTOCOL.large)
    assert flops_at_step(PROTOCOL, phases, 7) == 7 * small
    assert flops_at_step(PROTOCOL, phases, 12) == 10 * small + 2 * large
    assert flops_at_step(PROTOCOL, phases, 99) == 10 * small + 5 * large


def _bench_growth_tool():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_growth", Path(__file__).parents[2] / "tools/bench_growth.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "{tmp}/none/*.txt"], "matches no files"),
        (["--jobs", "0"], "--jobs 0: give at least 1"),
        (["--threads", "0"], "--threads 0: give at least 1"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    tool = _bench_growth_tool()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert tool.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cores, threads, jobs", [(2, 1, 2), (16, 1, 8), (16, 4, 4), (1, 1, 1), (2, 4, 1)])
def test_default_jobs_is_one_run_per_threads_cores(monkeypatch, cores, threads, jobs):
    import os

    tool = _bench_growth_tool()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert tool.default_jobs(threads) == jobs


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_parallel_runs_never_exceed_the_slots_and_keep_their_keys(monkeypatch, tmp_path, jobs):
    import threading
    import time

    running, most, guard = [0], [0], threading.Lock()

    def fake_trainer(out_dir, overrides, config, threads):  # stands in for one training process
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return 0.05

    monkeypatch.setattr(harness, "run_trainer", fake_trainer)
    runs.set_parallel_runs(jobs)
    try:

        def call(key):
            return lambda: (
                harness.launch(tmp_path / str(key), {"train": {"max_steps": 1}}, 1, lambda line: None),
                key,
            )[1]

        assert runs.in_parallel({k: call(k) for k in range(6)}) == {k: k for k in range(6)}
    finally:
        runs.set_parallel_runs(1)
    assert most[0] == jobs


def test_in_parallel_raises_a_failure_once_all_have_finished():
    finished = []

    def fails():
        raise RuntimeError("run failed")

    def slow():
        import time

        time.sleep(0.05)
        finished.append(True)
        return 1

    with pytest.raises(RuntimeError, match="run failed"):
        runs.in_parallel({"a": fails, "b": slow})
    assert finished == [True]


def test_slope_rule_runs_train_after_the_curves_they_read_and_fixed_ones_beside_them(monkeypatch, tmp_path):
    """``train_with_grown``: grown runs at a fixed growth point train in the first batch, beside scratch and the
    small model; the slope rule's train after them and grow where their seed's curves say."""
    from growth.bench.growth_protocol import protocol as runner

    batches, order = [], []
    real_in_parallel = runs.in_parallel
    monkeypatch.setattr(
        runs,
        "in_parallel",
        lambda calls: (batches.append(sorted(map(str, calls))), real_in_parallel(calls))[1],
    )
    monkeypatch.setattr(
        runner,
        "grown",
        lambda protocol, work, seed, lr, multiple, recipe, fraction, threads, log: (
            order.append((seed, recipe.growth_point, fraction)) or {"fraction": fraction}
        ),
    )
    monkeypatch.setattr(
        curves, "slope_rule_flops", lambda small, large: small * large
    )  # stands in for the rule
    budget = PROTOCOL.budget_flops(2)
    first = {
        "small": lambda: {"constant_curve": 0.25 * budget},
        ("scratch", 0): lambda: {"constant_curve": 1.0},
        ("scratch", 1): lambda: {"constant_curve": 2.0},
    }
    slope = DEFAULT.changed(growth_point="slope")
    grown_runs = {
        "fixed": runner.GrownRun(0, 2, DEFAULT, ("scratch", 0)),
        "slope0": runner.GrownRun(0, 2, slope, ("scratch", 0)),
        "slope1": runner.GrownRun(1, 2, slope, ("scratch", 1)),
    }
    done = runner.train_with_grown(PROTOCOL, tmp_path, 1e-3, 1, print, first, grown_runs)
    assert batches == [sorted(["small", "('scratch', 0)", "('scratch', 1)", "fixed"]), ["slope0", "slope1"]]
    assert done["fixed"]["fraction"] == DEFAULT.fraction
    assert done["slope0"]["fraction"] == pytest.approx(0.25) and done["slope1"]["fraction"] == pytest.approx(
        0.5
    )
    assert order[0][1] == "fixed" and {o[1] for o in order[1:]} == {"slope"}


# Digests of the first config each protocol path trains, computed before the harness moved the run cache and the
# config split (aeacbe2): a change here retrains every cached run of bench_out/ instead of reading it back.
# The corpus the measured runs used (docs/growth_benchmark.md); only hashed here, never read. The default,
# this checkout's own virtualenv sources, would make the digests depend on where the checkout lies.
BENCH_CORPUS = "/work/corpus/python_sources/**/*.py"
CACHED_RUN_DIGESTS = {
    "default/scratch/small": "bbf29d2be7",
    "default/scratch/mid": "4341c18808",
    "default/scratch/large": "b8de28bdf2",
    "default/grown": "f4320b1e08",
    "default/branch": "56da42fbfe",
    "quick/scratch/small": "7efd645dc2",
    "quick/scratch/mid": "fc42ff72a4",
    "quick/scratch/large": "b14dad1f6f",
    "quick/grown": "c0fdef6ed1",
    "quick/branch": "ebfff0ed8e",
    "large_only/scratch": "cea6e40139",
}


def test_run_configs_keep_their_digests_so_cached_runs_are_reused(monkeypatch, tmp_path):
    from growth.bench.growth_protocol import envelope
    from growth.bench.growth_protocol import protocol as protocol_runs
    from growth.bench.growth_protocol.envelope_plan import from_options
    from growth.bench.growth_protocol.plan import QUICK

    class Asked(Exception):  # the first run a path asks for: its digest, before anything trains
        pass

    real = harness.digest

    def capture(config):
        raise Asked(real(config))

    monkeypatch.setattr(harness, "digest", capture)
    monkeypatch.setattr(runs, "digest", capture)

    def first_digest(call, *args, **kwargs) -> str:
        with pytest.raises(Asked) as asked:
            call(*args, **kwargs)
        return str(asked.value)

    found, quiet = {}, lambda line: None
    for preset in ("default", "quick"):
        env, bench = from_options(preset, corpus=BENCH_CORPUS), envelope.Bench(tmp_path, 1, quiet)
        seed, lr = env.seeds[0], env.lrs[0]
        for size in env.sizes:
            found[f"{preset}/scratch/{size}"] = first_digest(envelope.scratch, env, bench, size, seed, lr)
        found[f"{preset}/grown"] = first_digest(envelope.grown, env, bench, seed, lr, DEFAULT)
        main = envelope._config(
            env, env.sizes["large"], 0, lr, 400, 80, save_interval=40, save_steps=[120, 200]
        )
        fake = runs.Run("/nonexistent", 400, 1.0, [(100, 3.0)], [(0, 0.0), (100, 1.0)])
        found[f"{preset}/branch"] = first_digest(
            runs.branch, tmp_path, "x", fake, main, 200, 40, 1, quiet, evals=1
        )
    found["large_only/scratch"] = first_digest(
        protocol_runs.scratch, Protocol(**{**QUICK, "corpus": BENCH_CORPUS}), tmp_path, 0, 1e-3, 1, quiet
    )
    assert found == CACHED_RUN_DIGESTS
