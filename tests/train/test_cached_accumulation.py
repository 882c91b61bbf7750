"""Cached two-pass accumulation equals one big-batch backward in plain PyTorch (fp32): every gradient
entry within 1e-6 of the reference, relative to the largest entry (CoSENT's lambda = 20 and
tau = 0.05 make entries ~50, where fp32 rounding alone is ~1e-6 absolute; measured <= 1e-7 relative).

The reference embeds the same micro-batches with a graph from the same RNG state and back-propagates
the full-batch loss once, so it uses the dropout masks a single pass would draw. Negative controls:
no RNG replay, and naive per-micro-batch CoSENT.
"""

from __future__ import annotations

import pytest
import torch

from growth.model import build_model
from growth.objectives.cached_accumulation import cached_step, rng_state, set_rng_state
from tests.conftest import tiny_model_config
from tests.support.contrastive_jobs import (
    OBJECTIVES,
    big_batch_reference,
    gradients,
    loss_fn,
    micro_batches,
    random_examples,
)

N = 8
SPLITS = {"k=1": (8,), "k=2": (4, 4), "k=4": (2, 2, 2, 2), "uneven last": (3, 3, 2)}
TOLERANCE = 1e-6
SEED = 11


def tiny(dropout: float):
    torch.manual_seed(0)
    return build_model(tiny_model_config("model.objective=mlm", f"model.dropout={dropout}")).train()


def cached_gradients(
    model, batches, objective: str, replay: bool = True
) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    loss = cached_step(
        batches,
        lambda b: model.sentence_embedding(b["input_ids"], b["attention_mask"]),
        lambda s: s.backward(),
        loss_fn(objective),
        replay_rng=replay,
    )
    return loss, gradients(model)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def relative_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """max |got - expected| over all entries / max |expected|."""
    return max_difference(got, expected) / max(g.abs().max().item() for g in expected.values())


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_cached_equals_one_big_batch_with_dropout(objective, split):
    model = tiny(dropout=0.1)
    batches = micro_batches(random_examples(N, objective, seed=3), SPLITS[split])
    expected_loss, expected = big_batch_reference(model, [batches], objective, [SEED])
    loss, got = cached_gradients(model, batches, objective)
    assert loss == pytest.approx(expected_loss, rel=TOLERANCE)  # the reported loss is the full batch's
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3  # not vacuous
    assert relative_difference(got, expected) <= TOLERANCE


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_without_rng_replay_the_gradient_is_wrong(objective):
    """Negative control: pass 2 under fresh dropout masks back-propagates through other embeddings."""
    model = tiny(dropout=0.1)
    batches = micro_batches(random_examples(N, objective, seed=3), SPLITS["k=2"])
    _, expected = big_batch_reference(model, [batches], objective, [SEED])
    _, got = cached_gradients(model, batches, objective, replay=False)
    assert relative_difference(got, expected) > 1e-2


@pytest.mark.parametrize("objective", ["infonce", "cosent"])  # SimCSE without dropout has identical views
def test_without_dropout_micro_batches_equal_one_literal_forward(objective):
    """Dropout 0: k = 4 micro-batches (each padded to its own longest row) against one forward of all
    rows padded together; padding is masked, so only rounding differs."""
    model = tiny(dropout=0.0)
    examples = random_examples(N, objective, seed=5)
    whole = examples.batch(range(N))
    model.zero_grad(set_to_none=True)
    loss = loss_fn(objective)(
        model.sentence_embedding(whole["input_ids"], whole["attention_mask"]), whole.get("scores")
    )
    loss.backward()
    expected = gradients(model)
    cached_loss, got = cached_gradients(model, micro_batches(examples, SPLITS["k=4"]), objective)
    assert cached_loss == pytest.approx(loss.item(), rel=TOLERANCE)
    assert relative_difference(got, expected) <= TOLERANCE


def test_outer_rng_stream_continues_as_after_one_forward_per_micro_batch():
    model = tiny(dropout=0.1)
    batches = micro_batches(random_examples(N, "simcse", seed=3), SPLITS["k=4"])
    torch.manual_seed(SEED)
    start = rng_state()
    with torch.no_grad():
        for batch in batches:
            model.sentence_embedding(batch["input_ids"], batch["attention_mask"])
    expected_state, expected_draw = torch.get_rng_state(), torch.rand(4)
    set_rng_state(start)
    cached_step(
        batches,
        lambda b: model.sentence_embedding(b["input_ids"], b["attention_mask"]),
        lambda s: s.backward(),
        loss_fn("simcse"),
    )
    assert torch.equal(torch.get_rng_state(), expected_state)
    assert torch.equal(torch.rand(4), expected_draw)
    assert not torch.equal(expected_state, start["cpu"])  # dropout did draw from the stream


def test_naive_per_micro_batch_cosent_is_not_the_full_batch():
    """Why this exists: CoSENT over each micro-batch alone misses every cross-micro-batch pair of pairs,
    so neither its loss nor its gradient is the full batch's (here by far more than the tolerance)."""
    model = tiny(dropout=0.0)
    batches = micro_batches(random_examples(N, "cosent", seed=7), SPLITS["k=4"])
    full_loss, full = big_batch_reference(model, [batches], "cosent", [SEED])
    model.zero_grad(set_to_none=True)
    naive_losses = []
    for batch in batches:
        micro_loss = loss_fn("cosent")(
            model.sentence_embedding(batch["input_ids"], batch["attention_mask"]), batch["scores"]
        )
        (micro_loss / len(batches)).backward()
        naive_losses.append(micro_loss.item())
    naive = gradients(model)
    assert abs(sum(naive_losses) / len(naive_losses) - full_loss) > 0.1
    assert relative_difference(naive, full) > 0.1
    _, cached = cached_gradients(model, batches, "cosent")
    assert relative_difference(cached, full) <= TOLERANCE
