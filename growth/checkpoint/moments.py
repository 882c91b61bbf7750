"""Adam moments of a checkpoint, keyed by parameter name (what growth maps onto a larger model).

- a grown checkpoint that was never trained: ``optimizer_state.pt``, already by name;
- ZeRO 0: the torch optimizer state in DeepSpeed's ``mp_rank_00_model_states.pt``, whose integer
  indices are named by the ``param_names`` list the trainer saves beside it;
- ZeRO 1-3, any world size: the per-parameter ``zero/<name>/{exp_avg,exp_avg_sq,step}.pt`` of a
  universal checkpoint (``ds_to_universal``, made once next to the source).
"""

from __future__ import annotations

from pathlib import Path

import torch

from growth.checkpoint.layout import WEIGHTS, RunState
from growth.checkpoint.safetensors_io import LazyWeights
from growth.checkpoint.universal import ensure_universal
from growth.distributed import World
from growth.distributed.deepspeed_adapter import MOMENT_KEYS, Moments, read_universal_moment

GROWN_MOMENTS = "optimizer_state.pt"
ZERO0_STATES = "mp_rank_00_model_states.pt"
PARAM_NAMES = "param_names"  # client-state key: names in the optimizer's index order (ZeRO 0)


def read_moments(folder: Path, state: RunState) -> Moments | None:
    """Moments by name, or None when the checkpoint holds none (e.g. imported weights)."""
    if (folder / GROWN_MOMENTS).is_file():
        return torch.load(folder / GROWN_MOMENTS, weights_only=False)
    if state.zero_stage == 0:
        return _zero0_moments(folder)
    return _universal_moments(ensure_universal(folder, World(0, 0, 1)), folder, state)


def _zero0_moments(folder: Path) -> Moments | None:
    if not (folder / ZERO0_STATES).is_file():
        return None
    saved = torch.load(folder / ZERO0_STATES, weights_only=False)
    optimizer, names = saved.get("optimizer"), saved.get(PARAM_NAMES)
    if not optimizer or not names:
        return None
    return {
        names[index]: {
            k: torch.as_tensor(v, dtype=torch.float32) if k == "step" else v.float() for k, v in entry.items()
        }
        for index, entry in optimizer["state"].items()
    }


def _universal_moments(universal: Path, folder: Path, state: RunState) -> Moments:
    weights = LazyWeights(folder / WEIGHTS)
    applied_steps = torch.tensor(float(state.step - state.skipped_steps))
    moments = {}
    for entry in sorted((universal / "zero").iterdir()):
        if not (entry / "exp_avg.pt").is_file():
            continue
        shape = weights.shape(entry.name)
        moments[entry.name] = {key: read_universal_moment(entry / f"{key}.pt", shape) for key in MOMENT_KEYS}
        step_file = entry / "step.pt"  # ZeRO-3's universal files have no step: count applied steps
        moments[entry.name]["step"] = (
            torch.as_tensor(torch.load(step_file, weights_only=False), dtype=torch.float32)
            if step_file.is_file()
            else applied_steps
        )
    return moments
