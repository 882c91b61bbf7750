"""Jobs of the attention-kind runs on real DeepSpeed ranks (importable, so spawn finds them):
``tests/model/test_attention_kinds_distributed.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from growth.config import load_config
from growth.distributed import barrier
from growth.train.run import train
from tests.support.growth_jobs import truncate

# 2 -> 4 heads of 16 (d_model 32 -> 64) at step 3, inside the run
GROWTH = "train.growth=[{at_step: 3, model: {d_model: 64, n_heads: 4, d_ff: 128}}]"


def run(world, overrides: list[str]) -> list[float]:
    return train(load_config(overrides=overrides), world).losses


def grow_and_resume_job(world, base: list[str], root: str, result_file: str) -> None:
    """ZeRO-2, 4 steps with an in-run growth at step 3; the same run resumed from its step-2 checkpoint.
    Records the losses, the step-4 weights (random-feature buffers included) and the growth event."""
    root = Path(root)
    overrides = [*base, "train.zero_stage=2", GROWTH]
    results = {"full": run(world, [*overrides, f"train.out_dir={root}/full"])}
    if world.is_main:
        shutil.copytree(root / "full", root / "resumed")
        truncate(root / "resumed", 2)
    barrier()
    results["resumed"] = run(world, [*overrides, f"train.out_dir={root}/resumed"])
    if world.is_main:
        for name in ("full", "resumed"):
            step = root / name / "checkpoints"
            results[f"{name}_weights"] = load_file(str(step / "step_00000004/model.safetensors"))
        results["step2_weights"] = load_file(str(root / "full/checkpoints/step_00000002/model.safetensors"))
        state = json.loads((root / "full/checkpoints/step_00000004/run_state.json").read_text())
        results["events"] = state["growth_events"]
        torch.save(results, result_file)


def run_one(world, overrides: list[str]) -> None:
    run(world, overrides)
