"""The envelope's math: the lower hull, readings along it, the saving, the 95% interval, and L(N, D)."""

import math

import pytest

from growth.bench.growth_protocol import scaling
from growth.bench.growth_protocol.envelope_plan import Envelope, from_options, middle_shape, parse_shape


def test_envelope_is_the_lower_convex_hull_in_log_flops_down_to_the_lowest_loss():
    points = [(1e12, 4.0), (2e12, 3.9), (4e12, 3.0), (8e12, 2.9), (8e12, 3.5), (16e12, 3.2)]
    # (2e12, 3.9) lies above the chord (1e12, 4.0)-(4e12, 3.0); (16e12, 3.2) is worse than the lowest loss.
    assert scaling.envelope(points) == [(1e12, 4.0), (4e12, 3.0), (8e12, 2.9)]


def test_readings_interpolate_log_linearly_and_flag_the_outside():
    front = [(1e12, 4.0), (4e12, 3.0)]
    cost, inside = scaling.cost_for_loss(front, 3.5)
    assert inside and cost == pytest.approx(2e12, rel=1e-12)  # halfway in loss = halfway in log FLOPs
    assert scaling.loss_for_cost(front, 2e12) == pytest.approx(3.5, abs=1e-12)
    cost, inside = scaling.cost_for_loss(front, 2.5)
    assert not inside and cost == pytest.approx(8e12, rel=1e-12)
    read = scaling.saving_vs_envelope(front, 3.5, 1e12)
    assert read["saving_vs_envelope"] == pytest.approx(0.5, abs=1e-12)  # reached at half the compute
    assert read["loss_gap_to_envelope"] == pytest.approx(-0.5, abs=1e-12)
    assert scaling.saving_vs_envelope(front, 3.5, 4e12)["saving_vs_envelope"] == pytest.approx(
        -1.0, abs=1e-12
    )


def test_interval95_uses_student_t():
    stats = scaling.interval95([0.1, 0.2, 0.3])
    assert stats["mean"] == pytest.approx(0.2, abs=1e-15)
    assert stats["half_width"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-12)
    assert math.isnan(scaling.interval95([0.5])["half_width"])


def test_scaling_law_fit_recovers_a_known_law_and_its_optimum_and_crossover():
    truth = scaling.ScalingLaw(E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28, rms_residual=0.0)
    runs = [(n, d, truth.loss(n, d)) for n in (1e5, 3e5, 1e6) for d in (1e6, 4e6, 1.6e7, 6.4e7)]
    fit = scaling.fit_scaling_law(runs)
    assert fit.rms_residual < 1e-4
    for n, d, loss in runs:
        assert fit.loss(n, d) == pytest.approx(loss, abs=1e-3)
    c = 1e14
    n_star = truth.optimal_params(c)
    for factor in (0.8, 1.25):  # the optimum is a minimum along the iso-FLOP line
        assert truth.loss_at_compute(n_star, c) < truth.loss_at_compute(n_star * factor, c)
    crossing = truth.crossover(1e5, 1e6)
    assert truth.loss_at_compute(1e5, crossing) == pytest.approx(
        truth.loss_at_compute(1e6, crossing), abs=1e-9
    )


def test_presets_give_whole_branch_points_and_bad_options_one_line():
    for preset in ("default", "quick", "gpu"):
        env = Envelope.of(preset)
        for shape in env.sizes.values():
            assert env.steps_per_unit(shape) % 5 == 0
        assert env.steps_per_unit(env.large) == env.base_steps
    assert parse_shape("d_model=256,n_layers=8", "--large")["n_heads"] == 8
    assert middle_shape(
        parse_shape("d_model=64,n_layers=2", "--small"), parse_shape("d_model=128,n_layers=4", "--large")
    ) == {"d_model": 96, "n_layers": 3, "n_heads": 3, "head_dim": 32, "d_ff": 288}
    for kwargs, flag in (
        ({"small": "d_model=64"}, "--small"),
        ({"growth_at": 5.0}, "--growth-at"),
        ({"seeds": 0}, "--seeds"),
        ({"small": "d_model=x,n_layers=2", "large": "d_model=128,n_layers=4"}, "--small"),
    ):
        with pytest.raises(ValueError, match=flag):
            from_options("default", **kwargs)
