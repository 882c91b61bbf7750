"""Jobs of the at_step: auto tests, run on every rank (importable, so spawn finds them)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.support.growth_jobs import losses_of, truncate


def auto_growth_job(world, base: list[str], root: str, result_file: str) -> None:
    """The auto stage decides after an evaluation; the same run killed right after that decision (its
    checkpoint holds it) and resumed, and one killed before it, must give the uninterrupted run's losses."""
    root = Path(root)
    whole = losses_of([*base, f"train.out_dir={root}/whole"])
    latest = (root / "whole/checkpoints/latest").read_text().strip()
    events = json.loads((root / "whole/checkpoints" / latest / "run_state.json").read_text())
    decided = events["callbacks"]["GrowthSchedule"]["decided"]
    resumed = {}
    for keep in (decided, decided - 2):
        out = root / f"kill{keep}"
        losses_of([*base, f"train.out_dir={out}", f"train.max_steps={keep}"])  # the run up to the kill
        truncate(out, keep)
        resumed[keep] = losses_of([*base, f"train.out_dir={out}"])
    if world.is_main:
        torch.save(
            {"whole": whole, "decided": decided, "events": events["growth_events"], "resumed": resumed},
            result_file,
        )
