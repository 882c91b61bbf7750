"""``train.compile=true`` on 2 gloo ranks with real DeepSpeed: ZeRO 0-3 give the same losses and
weights as eager (fp32, 1e-5), the engine really ran compiled graphs, and the checkpoints keep the
model's own parameter names (they load, strict, into an uncompiled model; EMA is read by name). On a
GPU: the bf16 ZeRO-2 engine steps with torch's fused AdamW, compiled (one rank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth.checkpoint import read_ema
from growth.config import load_config
from growth.model import build_model
from growth.train.run import train
from tests.support.distributed import run_distributed
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STAGES = (0, 1, 2, 3)
TOLERANCE = 1e-5


def compile_job(world, runs: list[tuple[list[str], str]]) -> None:
    """Each run's losses, whether its engine was compiled, and how many graphs dynamo has built."""
    from torch._dynamo.utils import counters

    for overrides, result_file in runs:
        trainer = train(load_config(overrides=overrides), world)
        if world.is_main:
            torch.save(
                {
                    "losses": trainer.losses,
                    "compiled": trainer.engine.is_compiled,
                    "graphs": counters["stats"]["unique_graphs"],
                    "names": sorted(n for n, _ in trainer.engine.module.named_parameters()),
                },
                result_file,
            )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    corpus = root / "shakespeare_head.txt"
    corpus.write_text(
        (Path(__file__).parents[2] / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000]
    )
    base = [
        *tiny_run_overrides(corpus, root / "cache"),
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        "train.ema_decay=0.5",
    ]

    def plan(compiled: bool) -> list[tuple[list[str], str]]:
        name = "compiled" if compiled else "eager"
        return [
            (
                [
                    *base,
                    f"train.zero_stage={stage}",
                    f"train.compile={str(compiled).lower()}",
                    f"train.out_dir={root}/{name}{stage}",
                ],
                str(root / f"{name}{stage}.pt"),
            )
            for stage in STAGES
        ]

    run_distributed(compile_job, 2, plan(False))
    run_distributed(compile_job, 2, plan(True))
    return root


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints/step_00000004/model.safetensors"))


@pytest.mark.parametrize("stage", STAGES)
def test_compiled_training_equals_eager(runs, stage):
    eager, compiled = torch.load(runs / f"eager{stage}.pt"), torch.load(runs / f"compiled{stage}.pt")
    assert not eager["compiled"] and compiled["compiled"] and compiled["graphs"] > 0
    assert len(compiled["losses"]) == len(eager["losses"]) == 4
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=0, abs=TOLERANCE)
    # engine.module keeps the model's names (no OptimizedModule, no _orig_mod. prefix)
    assert compiled["names"] == eager["names"] and not any("_orig_mod" in n for n in compiled["names"])
    expected, got = final_weights(runs / f"eager{stage}"), final_weights(runs / f"compiled{stage}")
    assert sorted(got) == sorted(expected)
    assert max((got[k] - expected[k]).abs().max().item() for k in expected) <= TOLERANCE
    ema_eager, ema_compiled = (
        read_ema(runs / f"{n}{stage}/checkpoints/step_00000004")["weights"] for n in ("eager", "compiled")
    )
    assert sorted(ema_compiled) == sorted(ema_eager) == compiled["names"]  # the EMA is kept by parameter name
    assert max((ema_compiled[k] - ema_eager[k]).abs().max().item() for k in ema_eager) <= TOLERANCE


def test_a_compiled_run_checkpoint_loads_into_an_uncompiled_model(runs):
    config = load_config(runs / "compiled3/checkpoints/step_00000004/config.yaml")
    model = build_model(config.model).eval()
    model.load_state_dict(final_weights(runs / "compiled3"), strict=True)
    reference = build_model(config.model).eval()
    reference.load_state_dict(final_weights(runs / "eager3"), strict=True)
    ids = torch.randint(
        config.model.vocab_size, (2, config.data.seq_len), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = reference(ids)
        assert (model(ids) - expected).abs().max().item() <= TOLERANCE * max(1.0, expected.abs().max().item())


def bf16_engine_job(world, result_file: str) -> None:
    from growth.bench import gpu
    from growth.distributed.deepspeed_adapter import base_optimizer
    from growth.train.engine import build_engine, deepspeed_config

    plan = gpu.GPUPlan(shape="tiny", seq_lens=[64], tokens_per_step=512, steps=3, warmup=2)
    config = gpu.model_config(plan)
    train = gpu.train_config(plan, 64)
    engine = build_engine(build_model(config), train, deepspeed_config(train, world.size))
    module = gpu.random_token_module(engine.module, config, 64, train.micro_batch_size, world)
    row = gpu.trainer_step_throughput(engine, module, plan.steps, plan.warmup, gpu.peak_tflops(), world.size)
    torch.save(
        {
            "losses": row["losses"],
            "fused": base_optimizer(engine).defaults.get("fused"),
            "compiled": engine.is_compiled,
            "bf16": next(engine.module.parameters()).dtype == torch.bfloat16,
            "mfu": row["mfu"],
        },
        result_file,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_zero2_engine_steps_with_fused_adamw_compiled(tmp_path):
    result_file = tmp_path / "bf16.pt"
    run_distributed(bf16_engine_job, 1, str(result_file))
    result = torch.load(result_file)
    assert result["fused"] is True and result["compiled"] and result["bf16"]
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    assert result["mfu"] is None or 0.0 < result["mfu"] < 1.0
