"""SimCSE, InfoNCE and CoSENT against loops written out the slow way (float64), and Spearman."""

from __future__ import annotations

import math

import pytest
import torch

from growth.objectives.contrastive_losses import (
    contrastive_loss,
    cosent_loss,
    infonce_loss,
    simcse_loss,
    simcse_paper_loss,
)
from growth.objectives.spearman import average_ranks, spearman


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_simcse_equals_the_explicit_sum():
    e = torch.randn(6, 5, dtype=torch.float64)
    tau = 0.05
    total = 0.0
    for i in range(6):
        twin = i ^ 1
        denominator = sum(math.exp(cos(e[i], e[j]) / tau) for j in range(6) if j != i)
        total += -math.log(math.exp(cos(e[i], e[twin]) / tau) / denominator)
    assert simcse_loss(e, tau).item() == pytest.approx(total / 6, rel=1e-6)


def test_simcse_paper_equals_the_explicit_sum_of_eq_1():
    """Gao et al. 2021 Eq. 1: anchor h_i (row 2i) against every second view h_j+ (row 2j+1), mean over N."""
    e = torch.randn(8, 5, dtype=torch.float64)
    tau = 0.05
    n = 4
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp(cos(e[2 * i], e[2 * j + 1]) / tau) for j in range(n))
        total += -math.log(math.exp(cos(e[2 * i], e[2 * i + 1]) / tau) / denominator)
    assert simcse_paper_loss(e, tau).item() == pytest.approx(total / n, rel=1e-6)


def test_simcse_variant_picks_the_form_and_symmetric_is_the_default():
    e = torch.randn(8, 5, dtype=torch.float64)
    assert contrastive_loss("simcse", 0.05)(e, None) == simcse_loss(e, 0.05)
    assert contrastive_loss("simcse", 0.05, simcse_variant="symmetric")(e, None) == simcse_loss(e, 0.05)
    assert contrastive_loss("simcse", 0.05, simcse_variant="paper")(e, None) == simcse_paper_loss(e, 0.05)
    assert simcse_loss(e, 0.05) != simcse_paper_loss(e, 0.05)
    with pytest.raises(ValueError, match="simcse_variant must be one of symmetric | paper"):
        contrastive_loss("simcse", simcse_variant="both")


def test_infonce_equals_the_explicit_sum():
    e = torch.randn(8, 5, dtype=torch.float64)
    tau = 0.1
    a, b = e[0::2], e[1::2]
    total = 0.0
    for i in range(4):
        denominator = sum(math.exp(cos(a[i], b[j]) / tau) for j in range(4))
        total += -math.log(math.exp(cos(a[i], b[i]) / tau) / denominator)
    assert infonce_loss(e, tau).item() == pytest.approx(total / 4, rel=1e-6)


def test_cosent_equals_the_explicit_sum():
    e = torch.randn(10, 5, dtype=torch.float64)
    scores = torch.tensor([4.0, 1.0, 4.0, 2.5, 0.0])  # a tie: (0, 2) contributes no term
    lam = 20.0
    c = [cos(e[2 * i], e[2 * i + 1]) for i in range(5)]
    terms = [math.exp(lam * (c[j] - c[i])) for i in range(5) for j in range(5) if scores[i] > scores[j]]
    assert len(terms) == 9
    assert cosent_loss(e, scores, lam).item() == pytest.approx(math.log(1 + sum(terms)), rel=1e-6)


def test_cosent_is_near_zero_when_pairs_are_ranked_by_a_wide_margin():
    # Pairs ranked correctly by a wide cosine margin: every term exp(20 (cos_j - cos_i)) is tiny.
    pairs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert cosent_loss(pairs, torch.tensor([5.0, 0.0])).item() <= 1e-6  # log(1 + e^-20)
    assert cosent_loss(pairs, torch.tensor([0.0, 5.0])).item() == pytest.approx(
        math.log1p(math.exp(20)), rel=1e-6
    )


def test_losses_are_chosen_by_name():
    e, scores = torch.randn(8, 4), torch.rand(4) * 5
    assert contrastive_loss("simcse", 0.05)(e, None) == simcse_loss(e, 0.05)
    assert contrastive_loss("infonce", 0.07)(e, None) == infonce_loss(e, 0.07)
    assert contrastive_loss("cosent", cosent_scale=10.0)(e, scores) == cosent_loss(e, scores, 10.0)
    with pytest.raises(ValueError):
        contrastive_loss("triplet")


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_against_pearson_of_hand_ranks():
    x = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2])
    y = torch.tensor([1.0, 3.0, 3.0, 5.0, 0.5])
    rx = torch.tensor([1.0, 4.0, 3.0, 5.0, 2.0], dtype=torch.float64)
    ry = torch.tensor([2.0, 3.5, 3.5, 5.0, 1.0], dtype=torch.float64)
    expected = torch.corrcoef(torch.stack([rx, ry]))[0, 1].item()
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert spearman(x, x * 3 + 1) == pytest.approx(1.0, abs=1e-12)
    assert spearman(x, -x) == pytest.approx(-1.0, abs=1e-12)
