"""R-Drop's loss (growth/objectives/rdrop.py) in fp32 on CPU: the KL term is 0 without dropout, symmetric,
equal to the reference's ``compute_kl_loss`` (dropreg/R-Drop, written out below), and its gradient
is autograd's of the written formula and the closed form; the token loss is exact under any split of
the batch (fixed logits, unequal target counts); the contrastive form through cached accumulation
equals one big-batch backward; bad input is one ``error:`` line naming the key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from growth.bench.blocks.common import seed_stats
from growth.config import ConfigError, load_config
from growth.data.mlm import IGNORE_INDEX
from growth.model import build_model
from growth.objectives.cached_accumulation import cached_step
from growth.objectives.contrastive_losses import simcse_logits, similarity_logits
from growth.objectives.rdrop import (
    doubled,
    forward_copies,
    rdrop_contrastive_loss,
    rdrop_token_loss_sum,
    symmetric_kl,
)
from growth.objectives.token_loss import target_count, token_loss_sum
from tests.conftest import tiny_model_config
from tests.support.contrastive_jobs import TEMPERATURE, gradients, loss_fn, micro_batches, random_examples

ROOT = Path(__file__).parents[2]


def reference_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """dropreg/R-Drop's ``compute_kl_loss`` (README / vit_src/models/modeling.py) with sums, no pad mask."""
    p_loss = F.kl_div(F.log_softmax(p, dim=-1), F.softmax(q, dim=-1), reduction="none")
    q_loss = F.kl_div(F.log_softmax(q, dim=-1), F.softmax(p, dim=-1), reduction="none")
    return (p_loss.sum() + q_loss.sum()) / 2


def written_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """½ [Σ p log(p/q) + Σ q log(q/p)] per row, literally (float64)."""
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    return 0.5 * ((p * torch.log(p / q)).sum(-1) + (q * torch.log(q / p)).sum(-1))


def test_symmetric_and_equal_to_the_reference():
    p, q = torch.randn(6, 50) * 3, torch.randn(6, 50) * 3
    assert torch.equal(symmetric_kl(p, q), symmetric_kl(q, p))
    assert symmetric_kl(p, q).sum().item() == pytest.approx(reference_kl(p, q).item(), rel=1e-6)
    assert torch.allclose(symmetric_kl(p, q).double(), written_kl(p, q), rtol=1e-6, atol=1e-7)
    assert symmetric_kl(p, p).abs().max().item() == 0.0


def test_gradient_matches_autograd_of_the_written_formula_and_the_closed_form():
    """d/dz_p of ½[KL(p‖q) + KL(q‖p)] = ½[p ⊙ (log p − log q − KL(p‖q)) + (p − q)]."""
    p_logits, q_logits = torch.randn(5, 40) * 2, torch.randn(5, 40) * 2
    weights = torch.rand(5)  # a non-uniform upstream gradient per row
    ours = p_logits.clone().requires_grad_(True)
    (symmetric_kl(ours, q_logits) * weights).sum().backward()
    literal = p_logits.double().requires_grad_(True)
    (written_kl(literal, q_logits) * weights.double()).sum().backward()
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    kl_pq = (p * (p.log() - q.log())).sum(-1, keepdim=True)
    closed = 0.5 * (p * (p.log() - q.log() - kl_pq) + (p - q)) * weights.double()[:, None]
    assert (ours.grad.double() - literal.grad).abs().max().item() <= 1e-6
    assert (ours.grad.double() - closed).abs().max().item() <= 1e-6


def test_excluded_self_similarity_adds_nothing_and_keeps_gradients_finite():
    """SimCSE's -inf diagonal: the KL equals the one over the off-diagonal entries only."""
    a, b = torch.randn(6, 8).requires_grad_(True), torch.randn(6, 8)
    got = symmetric_kl(simcse_logits(a, TEMPERATURE), simcse_logits(b, TEMPERATURE))
    got.sum().backward()
    off = ~torch.eye(6, dtype=torch.bool)
    la, lb = (simcse_logits(x.detach(), TEMPERATURE)[off].view(6, 5) for x in (a, b))
    assert torch.allclose(got.detach().double(), written_kl(la, lb), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(a.grad).all() and a.grad.abs().max() > 0


def tiny_lm(dropout: float):
    torch.manual_seed(0)
    return build_model(tiny_model_config("model.objective=mlm", f"model.dropout={dropout}")).train()


def mlm_labels(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Targets at a random ~30% of positions: the micro-batches get unequal target counts."""
    chosen = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    return torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))


def test_kl_is_exactly_zero_with_dropout_zero_and_positive_with_dropout():
    ids = torch.randint(5, 97, (4, 16))
    labels = mlm_labels(ids, 1)
    targets = labels != IGNORE_INDEX
    for dropout, zero in ((0.0, True), (0.1, False)):
        first, second = tiny_lm(dropout)(doubled(ids)).chunk(2)
        kl = symmetric_kl(first[targets], second[targets]).sum().item()
        assert (kl == 0.0) if zero else (kl > 1e-4), (dropout, kl)
    logits = tiny_lm(0.0)(doubled(ids))
    plain = token_loss_sum(logits[:4], labels).item()
    assert rdrop_token_loss_sum(logits, labels, alpha=1.0).item() == plain


def test_token_loss_is_exact_under_any_split_of_the_batch():
    """Fixed logits of [x; x] for 8 examples with unequal target counts: the sum of the micro-batches'
    R-Drop sums over the global target count, and its gradient, equal the whole batch's to 1e-6."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 8, 12, 30, generator=gen) * 2  # (pass, example, position, vocab)
    labels = mlm_labels(torch.randint(0, 30, (8, 12), generator=gen), 4)
    n = target_count(labels)

    def loss_and_grad(split: list[int]) -> tuple[float, torch.Tensor]:
        leaf = logits.clone().requires_grad_(True)
        total, start = torch.zeros(()), 0
        for size in split:
            micro = leaf[:, start : start + size].flatten(0, 1)  # [x_m; x_m]
            total = total + rdrop_token_loss_sum(micro, labels[start : start + size], 2.0) / n
            start += size
        total.backward()
        return total.item(), leaf.grad

    assert target_count(labels[:4]) != target_count(labels[4:])  # a mean of micro-batch means is wrong
    whole, whole_grad = loss_and_grad([8])
    for split in ([4, 4], [1, 3, 4], [2, 2, 2, 2]):
        value, grad = loss_and_grad(split)
        assert value == pytest.approx(whole, rel=1e-6)
        assert (grad - whole_grad).abs().max().item() <= 1e-6
    # The pieces: mean CE of both passes + alpha * token mean of the symmetric KL.
    first, second = logits[0], logits[1]
    targets = labels != IGNORE_INDEX
    expected = 0.5 * (token_loss_sum(first, labels) + token_loss_sum(second, labels)) / n
    expected += 2.0 * symmetric_kl(first[targets], second[targets]).sum() / n
    assert whole == pytest.approx(expected.item(), rel=1e-6)


def test_forward_copies():
    assert forward_copies(0.0) == 1 and forward_copies(0.5) == 2


@pytest.mark.parametrize("objective", ["simcse", "infonce"])
def test_contrastive_rdrop_through_cached_accumulation_equals_one_big_batch(objective):
    """Cached accumulation with every micro-batch embedded as [x; x] (masks replayed) equals one
    backward of the R-Drop loss of the whole batch, embedded in the same order from the same seed."""
    model = tiny_lm(0.1)
    batches = micro_batches(random_examples(8, objective, seed=5), (3, 3, 2))
    rdrop_loss = rdrop_contrastive_loss(loss_fn(objective), similarity_logits(objective, TEMPERATURE), 1.0)

    def embed(batch):
        first, second = model.sentence_embedding(
            doubled(batch["input_ids"]), doubled(batch["attention_mask"])
        ).chunk(2)
        return torch.stack([first, second], dim=1)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    loss = cached_step(batches, embed, lambda s: s.backward(), rdrop_loss)
    cached = gradients(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    reference = rdrop_loss(torch.cat([embed(b) for b in batches]), None)
    reference.backward()
    expected = gradients(model)
    scale = max(g.abs().max().item() for g in expected.values())
    assert loss == pytest.approx(reference.item(), rel=1e-6)
    assert max((cached[k] - expected[k]).abs().max().item() for k in expected) <= 1e-6 * scale


def test_contrastive_rdrop_of_identical_passes_is_the_plain_loss():
    e = torch.randn(8, 16)
    views = torch.stack([e, e], dim=1)
    for objective in ("simcse", "infonce"):
        rdrop = rdrop_contrastive_loss(loss_fn(objective), similarity_logits(objective, TEMPERATURE), 5.0)
        assert rdrop(views, None).item() == pytest.approx(loss_fn(objective)(e, None).item(), rel=1e-6)


BAD = {
    "alpha below zero": (["train.rdrop_alpha=-0.5"], "train.rdrop_alpha must be >= 0"),
    "dropout zero": (
        ["train.rdrop_alpha=1", "model.dropout=0"],
        "train.rdrop_alpha=1.0 needs model.dropout > 0",
    ),
    "cosent": (
        ["train.rdrop_alpha=1", "model.dropout=0.1", "contrastive.objective=cosent"],
        "train.rdrop_alpha=1.0 with contrastive.objective=cosent",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_settings_are_config_errors(case):
    overrides, message = BAD[case]
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(overrides=overrides)


def test_good_settings_load():
    assert load_config(overrides=["train.rdrop_alpha=1", "model.dropout=0.1"]).train.rdrop_alpha == 1.0
    load_config(overrides=["train.rdrop_alpha=1", "model.dropout=0.1", "contrastive.objective=infonce"])


@pytest.mark.slow
@pytest.mark.distributed  # it starts launch/pretrain.py
@pytest.mark.parametrize("case", BAD)
def test_bad_settings_on_the_command_line_are_one_error_line(case, tmp_path):
    overrides, message = BAD[case]
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch/pretrain.py"), f"train.out_dir={tmp_path}/run", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def bench_record(first_losses: tuple[float, float], spearman: tuple[list, list], flops=(1.0, 2.0)) -> dict:
    def arm(loss: float, values: list, flops_seen: float) -> dict:
        # flops_seen starts from the pretrained run's count (100): only the growth is compared
        runs = [{"train_loss": [(1, loss)], "flops_seen": [(1, 100 + flops_seen), (3, 100 + 3 * flops_seen)]}]
        return {"runs": runs, "spearman": seed_stats(values)}

    return {
        "pretrained": {"raw": 0.5},
        "arms": {
            "without": arm(first_losses[0], spearman[0], flops[0]),
            "with": arm(first_losses[1], spearman[1], flops[1]),
        },
    }


def test_bench_verdict_flops_ratio_and_honoured_flag():
    from growth.bench.blocks import rdrop

    def verdict(without: list, with_: list, losses=(1.8, 2.1)) -> object:
        record = bench_record(losses, (without, with_))
        record["flag_honoured"], record["flops_ratio"] = rdrop.honoured(record), rdrop.flops_ratio(record)
        return rdrop.judge(record)["reproduced"]

    assert rdrop.flops_ratio(bench_record((1.8, 2.1), ([0.5], [0.5]), flops=(3.0, 6.0))) == 2.0
    assert verdict([0.58, 0.59], [0.61, 0.62]) is True  # +0.03 > max(0.01, std)
    assert verdict([0.58, 0.59], [0.585, 0.595]) == "partly"  # higher, within the noise
    assert verdict([0.58, 0.59], [0.57, 0.58]) is False
    assert verdict([0.58], [0.62], losses=(1.8, 1.8)) is None  # the flag was ignored: undecidable
