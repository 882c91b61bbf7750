"""Jobs of the in-run growth tests, run on every rank (importable, so spawn finds them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from growth.config import load_config
from growth.distributed import barrier
from growth.expand.grow_checkpoint import expand_checkpoint
from growth.train.run import train

WIDTH = {"d_model": 64, "n_heads": 4, "d_ff": 128}
STAGES = (
    f"train.growth=[{{at_step: 3, model: {yaml.safe_dump(WIDTH, default_flow_style=True).strip()}}}, "
    "{at_step: 5, model: {n_layers: 4}}]"
)


def losses_of(overrides: list[str], config_path: str | None = None) -> list[float]:
    return train(load_config(config_path, overrides), _world()).losses


def _world():
    from growth.distributed import init_distributed

    return init_distributed()


def truncate(run: Path, keep_step: int) -> None:
    """As if killed after ``keep_step``: later checkpoints gone, ``latest`` on that step."""
    for folder in (run / "checkpoints").glob("step_*"):
        if int(folder.name.split("_")[1]) > keep_step:
            shutil.rmtree(folder)
    (run / "checkpoints/latest").write_text(f"step_{keep_step:08d}")


def growth_suite_job(world, base: list[str], root: str, stage: int, resume: bool, result_file: str) -> None:
    """In ZeRO ``stage``: the two-stage run (A), the same run without growth (B), the two-command
    flow from B's step-3 checkpoint (C: tools/expand.py's function + init_from + continue_schedule,
    then the depth stage in-run), and resumes of A from before and after its first growth."""
    root = Path(root)
    zero = [*base, f"train.zero_stage={stage}"]
    results = {
        "grown": losses_of([*zero, STAGES, f"train.out_dir={root}/grown"]),
        "small": losses_of([*zero, f"train.out_dir={root}/small", "train.save_interval=3"]),
    }
    target = root / "target.yaml"
    if world.is_main:
        config = load_config(overrides=[*zero, STAGES])
        config.model = load_config(overrides=[*zero, *(f"model.{k}={v}" for k, v in WIDTH.items())]).model
        config.train.growth = config.train.growth[1:]
        config.save(target)
        expand_checkpoint(root / "small/checkpoints/step_00000003", target, root / "expanded")
    barrier()
    results["two_command"] = losses_of(
        [f"train.out_dir={root}/continued", "train.continue_schedule=true"],
        str(root / "expanded/config.yaml"),
    )
    if resume:
        for keep in (2, 4):  # before the first growth, and after it (holding the grown model)
            run = root / f"resumed{keep}"
            if world.is_main:
                shutil.copytree(root / "grown", run)
                truncate(run, keep)
            barrier()
            results[f"resumed_from_{keep}"] = losses_of([*zero, STAGES, f"train.out_dir={run}"])
    if world.is_main:
        torch.save(results, result_file)
