"""R-Drop through real DeepSpeed, 1 rank and 2 gloo ranks (ZeRO 0 and 2), dropout 0.1, alpha 1:

- token LM (MLM targets, unequal counts per micro-batch): the gradient DeepSpeed applies equals plain
  PyTorch's for the global batch's token-mean R-Drop loss, for 1 rank x 2 micro-batches, 1 rank x 1
  micro-batch of twice the size, and 2 ranks x 2 micro-batches;
- contrastive (SimCSE, InfoNCE) through cached accumulation on 2 ranks: the same against the big batch;
- ``train.rdrop_alpha=1`` trains 4 steps on 2 ranks under ZeRO 2 and counts twice the FLOPs.

Dropout masks depend on how a batch is laid out, so no two arrangements share masks; each is held to
the one formula instead: the reference forwards every micro-batch as [x; x] in the ranks' order from
the ranks' seeds (drawing the masks the ranks drew) and back-propagates the whole batch's loss once.
That is the exactness that matters (the update is the gradient of the global-batch objective), and the
alpha = 0 control shows the KL term moves the gradient by far more than the tolerance.
Tolerance: 1e-5 of the largest gradient entry (fp32; measured on 1 rank: 9e-8 token, 8e-7 SimCSE,
2e-7 InfoNCE; the KL term moves the gradient by 1.2e-2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from growth.config import load_config
from growth.model import build_model
from growth.model.sentence_encoder import SentenceEncoder
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides
from tests.support.rdrop_jobs import contrastive_reference, suite_job, token_reference

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

MODEL = [
    "model.vocab_size=97",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.head_dim=8",
    "model.d_ff=48",
    "model.max_seq_len=32",
    "data.seq_len=16",
    "model.objective=mlm",
    "model.dropout=0.1",
]
TOLERANCE = 1e-5
SEEDS = [101, 202]
TOKEN_CASES = {
    1: [
        {"stage": 0, "sizes": [4, 4], "alpha": 1.0, "data_seed": 7, "rank_seeds": SEEDS},
        {"stage": 0, "sizes": [8], "alpha": 1.0, "data_seed": 7, "rank_seeds": SEEDS},
    ],
    2: [
        {"stage": stage, "sizes": [2, 2], "alpha": 1.0, "data_seed": 7, "rank_seeds": SEEDS}
        for stage in (0, 2)
    ],
}
CONTRASTIVE_CASES = [
    {"stage": 2, "sizes": [3, 1], "alpha": 1.0, "data_seed": 9, "rank_seeds": SEEDS, "objective": objective}
    for objective in ("simcse", "infonce")
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("rdrop")
    corpus = out / "corpus.txt"
    corpus.write_text(
        (Path(__file__).parents[2] / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000]
    )
    train = [
        *tiny_run_overrides(corpus, out / "cache"),
        "model.objective=mlm",
        "model.dropout=0.1",
        "train.rdrop_alpha=1",
        "train.zero_stage=2",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        f"train.out_dir={out}/train",
    ]
    run_distributed(suite_job, 1, MODEL, TOKEN_CASES[1], [], [], str(out / "world1.pt"))
    run_distributed(
        suite_job,
        2,
        MODEL,
        TOKEN_CASES[2],
        CONTRASTIVE_CASES,
        [(train, str(out / "train.pt"))],
        str(out / "world2.pt"),
    )
    return out, train


def relative_error(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    scale = max(g.abs().max().item() for g in expected.values())
    return max((got[k] - expected[k]).abs().max().item() for k in expected) / scale


def lm():
    config = load_config(overrides=MODEL)
    torch.manual_seed(config.train.seed)
    return build_model(config.model).train()


@pytest.mark.parametrize(
    "world, index",
    [(1, 0), (1, 1), (2, 0), (2, 1)],
    ids=["1rank-accum2", "1rank-one-micro", "2ranks-zero0", "2ranks-zero2"],
)
def test_token_rdrop_step_is_the_global_batch_gradient(runs, world, index):
    out, _ = runs
    case = TOKEN_CASES[world][index]
    result = torch.load(out / f"world{world}.pt")["token"][index]
    loss, expected = token_reference(lm(), case, world)
    assert result["applied"]
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    assert relative_error(result["grads"], expected) <= TOLERANCE
    _, without_kl = token_reference(lm(), {**case, "alpha": 0.0}, world)
    assert relative_error(without_kl, expected) > 100 * TOLERANCE  # the KL term is in the comparison


@pytest.mark.parametrize("index", [0, 1], ids=["simcse", "infonce"])
def test_contrastive_rdrop_step_on_two_ranks_is_the_big_batch_gradient(runs, index):
    out, _ = runs
    case = CONTRASTIVE_CASES[index]
    result = torch.load(out / "world2.pt")["contrastive"][index]
    model = SentenceEncoder(lm())
    loss, expected = contrastive_reference(model, case, 2)
    assert result["applied"]
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert relative_error(result["grads"], expected) <= TOLERANCE
    _, without_kl = contrastive_reference(SentenceEncoder(lm()), {**case, "alpha": 0.0}, 2)
    assert relative_error(without_kl, expected) > 100 * TOLERANCE


def test_rdrop_trains_on_two_ranks_under_zero2_and_counts_both_passes(runs):
    out, overrides = runs
    losses = torch.load(out / "train.pt")["losses"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    config = load_config(overrides=overrides)
    state = json.loads((out / "train/checkpoints/step_00000004/run_state.json").read_text())
    tokens = 4 * 2 * 2 * 2 * config.data.seq_len  # steps x micro x accum x ranks x seq_len
    per_token = build_model(config.model).flops_per_token(config.data.seq_len)
    assert state["tokens_seen"] == tokens
    assert state["flops_seen"] == pytest.approx(2 * tokens * per_token, rel=1e-9)
