"""``train.growth[i].at_step: auto``: the rule's math and its refusals (the 2-rank run: test_auto_growth_distributed.py)."""

from __future__ import annotations

import pytest

from growth.config import ConfigError, load_config
from growth.train.auto_growth import Law, decide, small_slope

GROWS_FIRST_CHANCE = "[0, 0, 1, 1, 1]"  # L = 1/D: the large model's slope is enormous at any loss
STAGE = (
    "{{at_step: auto, model: {{d_model: 64, n_heads: 4, d_ff: 128}}, auto_law: {law}, auto_window: 3{extra}}}"
)


def test_large_slope_is_the_laws_derivative_along_compute():
    law, params, loss = Law(E=1.5, A=50.0, alpha=0.3, B=300.0, beta=0.3), 1e6, 3.2
    slope = law.slope_at_loss(params, loss)
    tokens = (law.B / (loss - law.E - law.A * params**-law.alpha)) ** (1 / law.beta)
    flops, h = 6 * params * tokens, 1e-4

    def law_loss(n: float, d: float) -> float:  # the written-out law, beside the rule's closed form
        return law.E + law.A * n**-law.alpha + law.B * d**-law.beta

    numeric = (
        law_loss(params, flops * (1 + h) / (6 * params)) - law_loss(params, flops * (1 - h) / (6 * params))
    ) / (2 * h * flops)
    assert slope == pytest.approx(numeric, rel=1e-6)
    assert law.slope_at_loss(params, 1.0) is None  # below E: the law never gets there


def test_decide_waits_for_evidence_then_compares_slopes_and_honours_the_deadline():
    law, params = Law(E=1.5, A=50.0, alpha=0.3, B=300.0, beta=0.3), 1e6
    steep = [(1e12, 4.0), (2e12, 3.6), (3e12, 3.2)]  # -4e-13 per FLOP
    flat = [(1e12, 3.2002), (2e12, 3.2001), (3e12, 3.2)]  # -1e-16 per FLOP
    assert small_slope(steep, 3) == pytest.approx(-4e-13, rel=1e-9)
    large = law.slope_at_loss(params, 3.2)
    assert -4e-13 < large < -1e-16  # the two histories straddle the law's -1.8e-16
    assert not decide(steep[:2], 3, law, params, step=20, latest=0).grow
    assert not decide(steep, 3, law, params, step=30, latest=0).grow
    flat_decision = decide(flat, 3, law, params, step=30, latest=0)
    assert flat_decision.grow and flat_decision.large_slope == pytest.approx(large)
    assert decide(steep[:1], 3, law, params, step=40, latest=40).grow


@pytest.mark.parametrize(
    "growth, message",
    [
        (
            f"[{STAGE.format(law=GROWS_FIRST_CHANCE, extra='')}, {{at_step: 9, model: {{n_layers: 4}}}}]",
            "only the last stage",
        ),
        (f"[{STAGE.format(law='[1, 2]', extra='')}]", "auto_law must be"),
        (f"[{STAGE.format(law='[1, 2, 0, 1, 1]', extra='')}]", "alpha and beta must be > 0"),
        (f"[{STAGE.format(law=GROWS_FIRST_CHANCE, extra=', auto_window: 1')}]", "auto_window must be >= 2"),
        (f"[{STAGE.format(law=GROWS_FIRST_CHANCE, extra=', auto_latest: 50')}]", "auto_latest must be in"),
        ("[{at_step: soon, model: {n_layers: 4}}]", "must be a step number or auto"),
    ],
)
def test_bad_auto_stages_are_one_line_errors_naming_the_key(growth, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, ["train.max_steps=20", f"train.growth={growth}"])
    assert "train.growth[" in str(err.value) and "\n" not in str(err.value)
