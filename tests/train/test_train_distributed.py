"""Real DeepSpeed on 2 gloo ranks: ZeRO 0-3 equal 1 rank; EMA under ZeRO-3; resume; world 2 -> 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth.checkpoint import read_ema
from growth.config import load_config
from growth.model import build_model
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides, train_many_job

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STAGES = (0, 1, 2, 3)
EMA_DECAY = 0.5


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    corpus = root / "shakespeare_head.txt"
    text = (Path(__file__).parents[2] / "growth/data/corpus/tinyshakespeare.txt").read_text()
    corpus.write_text(text[:120_000])
    return corpus, root / "cache"


@pytest.fixture(scope="module")
def zero_runs(small_corpus, tmp_path_factory):
    """One rank (micro 4 x accum 2) against two ranks (micro 2 x accum 2), same global batch of 8.
    MLM masking gives every micro-batch a different number of target tokens."""
    out = tmp_path_factory.mktemp("zero")
    base = [*tiny_run_overrides(*small_corpus), "model.objective=mlm", f"train.ema_decay={EMA_DECAY}"]
    single = [*base, "train.micro_batch_size=4", "train.grad_accum=2", f"train.out_dir={out}/single"]
    run_distributed(train_many_job, 1, [(single, str(out / "single.pt"), False)])
    runs = [
        (
            [
                *base,
                "train.micro_batch_size=2",
                "train.grad_accum=2",
                f"train.zero_stage={stage}",
                f"train.out_dir={out}/zero{stage}",
            ],
            str(out / f"zero{stage}.pt"),
            stage == 3,
        )
        for stage in STAGES
    ]
    run_distributed(train_many_job, 2, runs)
    return out, base


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints/step_00000004/model.safetensors"))


@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_match_one_rank(zero_runs, stage):
    out, _ = zero_runs
    single, double = torch.load(out / "single.pt"), torch.load(out / f"zero{stage}.pt")
    assert len(single["losses"]) == len(double["losses"]) == 4
    assert single["losses"] == pytest.approx(double["losses"], rel=0, abs=1e-6)
    reference, weights = final_weights(out / "single"), final_weights(out / f"zero{stage}")
    assert reference.keys() == weights.keys()
    worst = max((reference[k] - weights[k]).abs().max().item() for k in reference)
    assert worst <= 1e-6, f"ZeRO-{stage} on 2 ranks differs from 1 rank by {worst}"
    moved = max(
        (reference[k] - load_file(str(out / "single/checkpoints/step_00000002/model.safetensors"))[k])
        .abs()
        .max()
        .item()
        for k in reference
    )
    assert moved > 1e-3  # the comparison is not vacuous: the weights did train


def test_ema_under_zero3_equals_the_expected_average(zero_runs):
    """ema_t = d * ema_{t-1} + (1 - d) * theta_t from the initial weights, on 2 ranks under ZeRO-3."""
    out, base = zero_runs
    snapshots = torch.load(out / "zero3.pt")["snapshots"]
    config = load_config(overrides=base)
    torch.manual_seed(config.train.seed)
    expected = {k: v.float().clone() for k, v in build_model(config.model).state_dict().items()}
    for weights in snapshots:
        for name in expected:
            expected[name] = EMA_DECAY * expected[name] + (1 - EMA_DECAY) * weights[name]
    saved = read_ema(out / "zero3/checkpoints/step_00000004")
    assert saved["updates"] == 4
    for name, value in saved["weights"].items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    final = final_weights(out / "zero3")
    assert max((saved["weights"][k] - final[k]).abs().max().item() for k in saved["weights"]) > 1e-4


def test_resume_on_one_rank_from_two_rank_zero2(zero_runs, tmp_path):
    """World size 2 -> 1: the ZeRO-2 checkpoint of step 2 goes through ds_to_universal, and steps 3-4
    match the uninterrupted 2-rank run."""
    out, base = zero_runs
    run = tmp_path / "resumed"
    shutil.copytree(out / "zero2", run)
    shutil.rmtree(run / "checkpoints/step_00000004")
    (run / "checkpoints/latest").write_text("step_00000002")
    overrides = [
        *base,
        "train.micro_batch_size=4",
        "train.grad_accum=2",
        "train.zero_stage=2",
        f"train.out_dir={run}",
    ]
    run_distributed(train_many_job, 1, [(overrides, str(tmp_path / "resumed.pt"), False)])
    resumed = torch.load(tmp_path / "resumed.pt")["losses"]
    uninterrupted = torch.load(out / "zero2.pt")["losses"]
    assert resumed == pytest.approx(uninterrupted[2:], rel=1e-5)
    assert (run / "checkpoints/step_00000002_universal/zero").is_dir()
    state = json.loads((run / "checkpoints/step_00000004/run_state.json").read_text())
    assert state["world_size"] == 1 and state["step"] == 4 and state["sampler"]["consumed"] == 32


def reference_first_step(config, cache: Path) -> tuple[float, float]:
    """Loss and gradient norm of step 1 in plain PyTorch: mean token loss over the global batch."""
    from growth.data.batches import BatchMaker
    from growth.data.pipeline import load_token_corpus, prepare_tokens, tokenizer_cache_path
    from growth.data.sampler import WindowSampler
    from growth.data.tokenizer import Tokenizer
    from growth.objectives.token_loss import target_count, token_loss_sum

    tokenizer = Tokenizer.load(tokenizer_cache_path(config.data, config.model.vocab_size, cache))
    tokens = load_token_corpus(prepare_tokens(config.data, tokenizer, cache), config.data.seq_len)
    sampler = WindowSampler(len(tokens.train), config.data.seq_len, config.train.seed)
    maker = BatchMaker(
        tokens.train,
        config.data.seq_len,
        config.model.objective,
        tokenizer.vocab_size,
        tokenizer.mask_id,
        (0, 1, 2, 3),
        config.data.mlm_probability,
        config.train.seed,
    )
    global_batch = config.train.micro_batch_size * config.train.grad_accum * 2
    batch = maker.batch(sampler.windows(0, global_batch), range(global_batch))
    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    loss = token_loss_sum(model(batch["input_ids"]), batch["labels"]) / target_count(batch["labels"])
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    return loss.item(), norm.item()


@pytest.mark.parametrize("stage", [0, 2])
def test_token_normalised_gradient_equals_one_big_batch(small_corpus, tmp_path, stage):
    """2 ranks x 2 micro-batches with unequal MLM target counts: DeepSpeed's gradient norm at step 1
    equals plain PyTorch's for the token-mean loss of the whole batch (DeepSpeed's 1/accumulation and
    1/world scalings are each undone exactly once). Adam hides a constant gradient scale; the norm does not."""
    from tests.support.jobs import grad_norm_job

    overrides = [
        *tiny_run_overrides(*small_corpus),
        "model.objective=mlm",
        "train.max_steps=1",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        f"train.zero_stage={stage}",
        f"train.out_dir={tmp_path}/run",
    ]
    run_distributed(grad_norm_job, 2, overrides, str(tmp_path / "out.pt"))
    result = torch.load(tmp_path / "out.pt")
    loss, norm = reference_first_step(load_config(overrides=overrides), small_corpus[1])
    assert result["losses"][0] == pytest.approx(loss, rel=1e-6)
    assert result["grad_norms"][0] == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize("stage", [0, 2])
def test_non_finite_loss_on_one_rank_skips_the_step_everywhere(small_corpus, tmp_path, stage):
    from tests.support.jobs import nan_job

    overrides = [
        *tiny_run_overrides(*small_corpus),
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        "train.ema_decay=0.9",
        f"train.zero_stage={stage}",
        f"train.out_dir={tmp_path}/run",
    ]
    run_distributed(nan_job, 2, overrides, str(tmp_path / "out.pt"), [2], 1)
    result = torch.load(tmp_path / "out.pt")
    assert result["error"] is None and result["skipped"] == 1
    assert len(result["losses"]) == 3  # steps 1, 3, 4 applied
    before, skipped = result["snapshots"][0], result["snapshots"][1]
    assert all(torch.equal(before[k], skipped[k]) for k in before), "the NaN step changed the weights"
    assert result["ema_updates"] == 3
    run_state = json.loads((tmp_path / "run/checkpoints/step_00000004/run_state.json").read_text())
    assert run_state["skipped_steps"] == 1


def test_too_many_non_finite_steps_stop_with_the_last_checkpoint_intact(small_corpus, tmp_path):
    from tests.support.jobs import nan_job

    overrides = [
        *tiny_run_overrides(*small_corpus),
        "train.max_steps=12",
        "train.max_bad_steps=2",
        f"train.out_dir={tmp_path}/run",
    ]
    run_distributed(nan_job, 1, overrides, str(tmp_path / "out.pt"), list(range(3, 13)), 0)
    result = torch.load(tmp_path / "out.pt")
    assert result["error"].startswith("TrainingDiverged: 3 non-finite steps in a row at step 5")
    assert (tmp_path / "run/checkpoints/latest").read_text() == "step_00000002"
    assert (tmp_path / "run/checkpoints/step_00000002/complete").is_file()


def test_kill_and_resume_continues_exactly(small_corpus, tmp_path):
    """Dropout on, 2 ranks, ZeRO-1: resuming from step 2 replays steps 3-4 bit for bit (RNG, sampler,
    optimizer and schedule restored)."""
    base = [
        *tiny_run_overrides(*small_corpus),
        "model.dropout=0.1",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        "train.zero_stage=1",
        "train.ema_decay=0.9",
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_distributed(train_many_job, 2, [([*base, f"train.out_dir={full}"], str(tmp_path / "full.pt"), False)])
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints/step_00000004")
    (resumed / "checkpoints/latest").write_text("step_00000002")  # as if killed during step 3
    run_distributed(
        train_many_job, 2, [([*base, f"train.out_dir={resumed}"], str(tmp_path / "resumed.pt"), False)]
    )
    expected, got = torch.load(tmp_path / "full.pt")["losses"], torch.load(tmp_path / "resumed.pt")["losses"]
    assert got == pytest.approx(expected[2:], rel=0, abs=1e-6)
    a = load_file(str(full / "checkpoints/step_00000004/model.safetensors"))
    b = load_file(str(resumed / "checkpoints/step_00000004/model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    ema_a = read_ema(full / "checkpoints/step_00000004")["weights"]
    ema_b = read_ema(resumed / "checkpoints/step_00000004")["weights"]
    assert max((ema_a[k] - ema_b[k]).abs().max().item() for k in ema_a) <= 1e-6


def test_interrupted_save_keeps_latest_on_a_complete_checkpoint(small_corpus, tmp_path):
    from tests.support.jobs import interrupted_save_job

    overrides = [*tiny_run_overrides(*small_corpus), f"train.out_dir={tmp_path}/run"]
    run_distributed(interrupted_save_job, 1, overrides)
    checkpoints = tmp_path / "run/checkpoints"
    assert (checkpoints / "latest").read_text() == "step_00000002"
    assert (checkpoints / "step_00000004").is_dir() and not (checkpoints / "step_00000004/complete").exists()
    run_distributed(train_many_job, 1, [(overrides, str(tmp_path / "resumed.pt"), False)])
    assert len(torch.load(tmp_path / "resumed.pt")["losses"]) == 2
    assert (checkpoints / "latest").read_text() == "step_00000004"
