"""Cached accumulation through real DeepSpeed engines on 2 gloo ranks: the gradient DeepSpeed applies
equals one big-batch backward in plain PyTorch (dropout on; each rank's masks replayed from its seed),
for k = 1, 2, 4 micro-batches and an uneven last one under ZeRO-2, and for k = 2 under ZeRO 0, 1, 3.
DeepSpeed's 1/world averaging and 1/grad_accum are each undone exactly once, or the check fails.
And a contrastive run (SimCSE, dropout, ZeRO-1, EMA) resumed from a checkpoint replays the losses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth.checkpoint import read_ema
from growth.config import load_config
from growth.model import build_model
from tests.support.contrastive_jobs import (
    OBJECTIVES,
    big_batch_reference,
    distributed_suite_job,
    micro_batches,
    random_examples,
)
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

MODEL = [
    "model.vocab_size=97",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.head_dim=8",
    "model.d_ff=48",
    "model.max_seq_len=64",
    "data.seq_len=32",
    "model.objective=mlm",
    "model.dropout=0.1",
]
RANK_SEEDS = (101, 202)
SPLITS = {"k=1": (4,), "k=2": (2, 2), "k=4": (1, 1, 1, 1), "uneven last": (2, 2, 1)}  # per rank
TOLERANCE = 1e-6  # max |difference| / max |gradient|


def case(objective: str, split: str, stage: int = 2, replay: bool = True) -> dict:
    sizes = SPLITS[split]
    return {
        "objective": objective,
        "split": split,
        "sizes": sizes,
        "n": 2 * sum(sizes),
        "stage": stage,
        "replay": replay,
        "data_seed": 3,
        "rank_seeds": RANK_SEEDS,
    }


CASES = [
    *(case(o, s) for o in OBJECTIVES for s in SPLITS),
    *(case("cosent", "k=2", stage) for stage in (0, 1, 3)),
    *(case(o, "k=2", replay=False) for o in OBJECTIVES),  # negative control
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cached")
    corpus = root / "corpus.txt"
    corpus.write_text(
        (Path(__file__).parents[2] / "growth/data/corpus/tinyshakespeare.txt").read_text()[:60_000]
    )
    resume = [
        *tiny_run_overrides(corpus, root / "cache"),
        "model.objective=mlm",
        "model.dropout=0.1",
        "contrastive.objective=simcse",
        "contrastive.format=text",
        f"contrastive.data={corpus}",
        "contrastive.eval_data=",
        "contrastive.max_len=32",
        "train.micro_batch_size=4",
        "train.grad_accum=2",
        "train.zero_stage=1",
        "train.ema_decay=0.9",
    ]
    run_distributed(
        distributed_suite_job,
        2,
        MODEL,
        CASES,
        str(root / "results.pt"),
        resume,
        str(root),
        str(root / "resume.pt"),
    )
    return root


@pytest.fixture(scope="module")
def results(suite):
    return {_key(c): r for c, r in zip(CASES, torch.load(suite / "results.pt"))}


def _key(c: dict) -> tuple:
    return c["objective"], c["split"], c["stage"], c["replay"]


def reference(c: dict) -> tuple[float, dict[str, torch.Tensor]]:
    config = load_config(overrides=MODEL)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model).train()
    examples = random_examples(c["n"], c["objective"], seed=c["data_seed"])
    per_rank = [micro_batches(examples, c["sizes"], offset=rank * (c["n"] // 2)) for rank in (0, 1)]
    return big_batch_reference(model, per_rank, c["objective"], c["rank_seeds"])


def relative_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    outside = set(expected) - set(
        got
    )  # not in the sentence encoder: the LM head, which the loss never reaches
    assert outside == {"head.proj.weight"} and expected["head.proj.weight"].abs().max() == 0
    worst = max((got[k] - expected[k]).abs().max().item() for k in expected if k in got)
    return worst / max(g.abs().max().item() for g in expected.values())


@pytest.mark.parametrize(
    "c", [c for c in CASES if c["replay"]], ids=lambda c: f"{c['objective']}-{c['split']}-zero{c['stage']}"
)
def test_two_ranks_equal_one_big_batch(results, c):
    got = results[_key(c)]
    expected_loss, expected = reference(c)
    assert got["applied"] and got["global_steps"] == 1  # one optimizer step for k micro-batches
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3
    assert relative_difference(got["grads"], expected) <= TOLERANCE
    assert got["rng_continues"]  # the outer stream is where one forward per micro-batch leaves it


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_without_rng_replay_fail(results, objective):
    c = case(objective, "k=2", replay=False)
    _, expected = reference(c)
    assert relative_difference(results[_key(c)]["grads"], expected) > 1e-2


def test_resume_replays_a_contrastive_run(suite):
    """Steps 3-4 after resuming from step 2 equal the uninterrupted run: sampler position, per-rank RNG
    (dropout masks, which the cached step consumes as one forward per micro-batch), Adam, EMA."""
    losses = torch.load(suite / "resume.pt")
    assert len(losses["full"]) == 4 and losses["resumed"] == pytest.approx(
        losses["full"][2:], rel=0, abs=1e-6
    )
    a = load_file(str(suite / "full/checkpoints/step_00000004/model.safetensors"))
    b = load_file(str(suite / "resumed/checkpoints/step_00000004/model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    ema_a = read_ema(suite / "full/checkpoints/step_00000004")["weights"]
    ema_b = read_ema(suite / "resumed/checkpoints/step_00000004")["weights"]
    assert max((ema_a[k] - ema_b[k]).abs().max().item() for k in ema_a) <= 1e-6
    assert losses["full"][0] != losses["full"][1]  # different batches, not a constant
