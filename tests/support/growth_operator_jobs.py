"""Jobs of the growth-operator runs on real DeepSpeed ranks (importable, so spawn finds them):
``tests/expand/test_growth_operators_distributed.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from growth.config import load_config
from growth.distributed import barrier
from growth.model.transformer import depth_gates
from growth.train.callback import Callback
from growth.train.run import train
from tests.support.growth_jobs import truncate

ROOT = Path(__file__).parents[2]


class GateRecorder(Callback):
    """The gates (layer -> m) the network holds when each step runs, and the step's loss."""

    def __init__(self):
        self.gates: list[dict[int, float]] = []

    def pre_step(self, trainer) -> None:
        self.gates.append(depth_gates(trainer.module.network.layers))


def run(world, overrides: list[str], config_path: str | None = None) -> dict:
    recorder = GateRecorder()
    trainer = train(load_config(config_path, overrides), world, callbacks=[recorder])
    return {
        "losses": trainer.losses,
        "gates": recorder.gates,
        "layers": trainer.module.network.config.n_layers,
    }


def deep_ramp_job(world, base: list[str], root: str, result_file: str) -> None:
    """A DeepNorm stack of 12 layers grown to 48 at step 3 (ramped in over 4 steps), the same run without
    growth, and resumes of the grown run from mid-ramp (step 4, 6) and from after the fold (step 8)."""
    root = Path(root)
    deep = [*base, "model.residual=deepnorm", "model.n_layers=12"]
    stage = "train.growth=[{at_step: 3, model: {n_layers: 48}, ramp_steps: 4}]"
    results = {
        "small": run(world, [*deep, f"train.out_dir={root}/small"]),  # the same LR schedule
        "grown": run(world, [*deep, stage, f"train.out_dir={root}/grown"]),
    }
    for keep in (4, 6, 8):
        resumed = root / f"resumed{keep}"
        if world.is_main:
            shutil.copytree(root / "grown", resumed)
            truncate(resumed, keep)
        barrier()
        results[f"resumed_from_{keep}"] = run(world, [*deep, stage, f"train.out_dir={resumed}"])
    if world.is_main:
        checkpoints = root / "grown/checkpoints"
        results["run_states"] = {
            step: json.loads((checkpoints / f"step_{step:08d}/run_state.json").read_text())
            for step in (4, 6, 8)
        }
        torch.save(results, result_file)


def stack_job(world, base: list[str], root: str, result_file: str) -> None:
    """G_stack inside a run: 2 -> 4 layers at step 2; the event records the loss change."""
    stage = "train.growth=[{at_step: 2, model: {n_layers: 4}, depth_operator: stack}]"
    result = run(world, [*base, stage, f"train.out_dir={root}/stacked"])
    if world.is_main:
        state = json.loads((Path(root) / "stacked/checkpoints/step_00000004/run_state.json").read_text())
        torch.save({**result, "events": state["growth_events"]}, result_file)


def expand_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/expand.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def two_command_ramp_job(world, base: list[str], root: str, target: str, result_file: str) -> None:
    """Post-LN: train 4 steps, ``tools/expand.py --depth-operator ramp --ramp-steps 3`` (+ LEMON split and
    relative noise) to 4 layers and 2x width, continue 6 steps from the grown folder: the continued run adopts
    the ramp (m = 0, 1/3, 2/3, then folded), resumes mid-ramp exactly."""
    root = Path(root)
    post = [*base, "model.residual=post"]
    results = {"small": run(world, [*post, f"train.out_dir={root}/small"])}
    if world.is_main:
        cli = expand_cli(
            "--from",
            str(root / "small"),
            "--to",
            target,
            "--out",
            str(root / "grown"),
            "--depth-operator",
            "ramp",
            "--ramp-steps",
            "3",
            "--split",
            "lemon",
            "--split-alpha",
            "0.6",
            "--noise",
            "relative",
            "--noise-std",
            "0.01",
            "--seed",
            "2",
        )
        results["cli"] = {"returncode": cli.returncode, "stdout": cli.stdout, "stderr": cli.stderr[-3000:]}
    barrier()
    grown_config = str(root / "grown/config.yaml")
    continued = ["train.max_steps=6", "train.save_interval=2", "train.zero_stage=3"]
    results["continued"] = run(world, [*continued, f"train.out_dir={root}/continued"], grown_config)
    resumed = root / "resumed"
    if world.is_main:
        shutil.copytree(root / "continued", resumed)
        truncate(resumed, 2)
    barrier()
    results["resumed"] = run(world, [*continued, f"train.out_dir={resumed}"], grown_config)
    if world.is_main:
        results["report"] = json.loads((root / "grown/expand_report.json").read_text())
        results["run_state_2"] = json.loads(
            (root / "continued/checkpoints/step_00000002/run_state.json").read_text()
        )
        torch.save(results, result_file)
