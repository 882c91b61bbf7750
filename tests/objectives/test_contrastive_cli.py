"""Contrastive fine-tuning from the real command lines: `deepspeed launch/pretrain.py` with
train.init_from (TensorBoard, checkpoints, EMA as in pretraining), `tools/eval_sts.py` agreeing with
the trainer's val/spearman, and bad input (one `error:` line naming the file:line or the setting, exit 2)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.support.distributed import free_port
from tests.support.jobs import tiny_run_overrides
from tests.test_cli import PRETRAIN, ROOT, bin_path, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

EVAL_STS = str(ROOT / "tools/eval_sts.py")
SCALARS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "val/loss",
    "val/loss_ema",
    "val/spearman",
    "val/spearman_ema",
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[list[str], Path]:
    """A tiny pretrained run (2 steps, 1 process) to fine-tune from."""
    root = tmp_path_factory.mktemp("contrastive_cli")
    corpus = root / "corpus.txt"
    corpus.write_text((ROOT / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000])
    base = [*tiny_run_overrides(corpus, root / "cache"), "model.objective=mlm"]
    result = run([sys.executable, PRETRAIN, *base, "train.max_steps=2", f"train.out_dir={root}/pre"])
    assert result.returncode == 0, result.stderr[-3000:]
    return base, root


def finetune_overrides(base: list[str], root: Path, out: Path, *extra: str) -> list[str]:
    return [
        *base,
        f"train.init_from={root}/pre",
        f"train.out_dir={out}",
        "contrastive.max_len=32",
        "model.dropout=0.1",
        *extra,
    ]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_cosent_fine_tuning_on_two_ranks_then_eval_sts(pretrained, tmp_path):
    base, root = pretrained
    out = tmp_path / "cosent"
    result = run(
        [
            bin_path("deepspeed"),
            "--num_gpus",
            "2",
            "--master_port",
            str(free_port()),
            PRETRAIN,
            *finetune_overrides(
                base,
                root,
                out,
                "contrastive.objective=cosent",
                "train.micro_batch_size=8",
                "train.grad_accum=2",
                "train.zero_stage=2",
                "train.ema_decay=0.9",
            ),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = scalars(out)
    assert SCALARS <= logged.keys()
    losses = [value for _, value in logged["train/loss"]]
    assert len(losses) == 4 and all(v > 0 for v in losses)
    assert (out / "checkpoints/latest").read_text() == "step_00000004"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["tokenizer"] == str(root / "pre/tokenizer.model")  # the pretrained run's tokenizer
    assert '"consumed": 128' in (out / "checkpoints/step_00000004/run_state.json").read_text()  # 4 x 32 pairs

    evaluated = run([sys.executable, EVAL_STS, "--checkpoint", str(out), "--data", "bundled:sts-dev"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    found = {
        weights: float(rho)
        for rho, weights in re.findall(r"spearman: (-?\d\.\d+) \((raw|ema) weights\)", evaluated.stdout)
    }
    assert found.keys() == {"raw", "ema"}, evaluated.stdout
    # The trainer's last val/spearman(_ema) came from the same weights on the same file (float32 in TensorBoard).
    assert found["raw"] == pytest.approx(logged["val/spearman"][-1][1], abs=1e-6)
    assert found["ema"] == pytest.approx(logged["val/spearman_ema"][-1][1], abs=1e-6)
    assert found["raw"] != found["ema"]


def test_bad_pair_file_names_file_and_line(pretrained, tmp_path):
    base, root = pretrained
    bad = tmp_path / "pairs.tsv"
    bad.write_text("a cat\ta kitten\na dog\n")
    result = run(
        [
            sys.executable,
            PRETRAIN,
            *finetune_overrides(
                base,
                root,
                tmp_path / "run",
                "contrastive.objective=infonce",
                "contrastive.format=pairs",
                f"contrastive.data={bad}",
            ),
        ]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert errors[0] == f"error: {bad}:2: expected 2 tab-separated fields (sentence1, sentence2), got 1"


def test_batch_too_small_for_negatives_names_the_setting(pretrained, tmp_path):
    base, root = pretrained
    result = run(
        [
            sys.executable,
            PRETRAIN,
            *finetune_overrides(
                base,
                root,
                tmp_path / "run",
                "contrastive.objective=simcse",
                "train.micro_batch_size=1",
                "train.grad_accum=1",
            ),
        ]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert (
        "train.micro_batch_size * train.grad_accum * world size = 1 is too small for in-batch negatives"
        in errors[0]
    )


def test_eval_sts_bad_score_names_file_and_line(pretrained, tmp_path):
    _, root = pretrained
    bad = tmp_path / "sts.csv"
    bad.write_text("g\tf\t2012\t1\t4.5\tA man.\tA person.\ng\tf\t2012\t2\t7\tA cat.\tA dog.\n")
    result = run([sys.executable, EVAL_STS, "--checkpoint", str(root / "pre"), "--data", str(bad)])
    assert (
        result.returncode == 2
        and result.stderr.strip().splitlines()[-1] == f"error: {bad}:2: score 7 is outside [0, 5]"
    )
