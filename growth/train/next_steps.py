"""The commands a finished run's summary suggests: continue it, sample from it, grow it 2x.

They must run as printed for this run: the launcher it was started with (``deepspeed --num_gpus N``,
``torchrun --nproc_per_node N`` or plain ``python``), its own run directory, and a grow target made from its
own model. ``configs/grow_2x.yaml`` only fits the embedded default's shape, so the run writes
``<out_dir>/grow_2x.yaml``: its config with the model (the last growth stage's, when it grew in the run) twice as
wide and twice as deep, checked against the growth operators before it is suggested.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shlex
from pathlib import Path

from growth.checkpoint.atomic import write_atomic
from growth.config import Config, config_from_dict
from growth.errors import ConfigError
from growth.expand import GrowthError, plan_growth
from growth.model.config import ModelConfig

GROW_TARGET = "grow_2x.yaml"


def launcher(world_size: int) -> str:
    """How this process was launched, as a command prefix for ``launch/pretrain.py``."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env:  # torchrun (accelerate launch runs it too)
        return f"torchrun --nproc_per_node {env.get('LOCAL_WORLD_SIZE', world_size)}"
    if "CROSS_RANK" in env or world_size > 1:  # DeepSpeed's launcher sets CROSS_RANK on every node
        hosts = " --hostfile HOSTFILE" if int(env.get("CROSS_SIZE", "1")) > 1 else ""
        return f"deepspeed{hosts} --num_gpus {env.get('LOCAL_SIZE', world_size)}"
    return "python"


def doubled(model: ModelConfig) -> ModelConfig:
    """Twice as wide (d_model and what scales with it: heads, d_ff or the GAU expansion) and twice as deep."""
    wider = {"d_model": 2 * model.d_model, "n_layers": 2 * model.n_layers}
    if model.layer == "transformer":
        wider.update(n_heads=2 * model.n_heads, n_kv_heads=2 * model.n_kv_heads, d_ff=2 * model.d_ff)
    else:
        wider.update(gau_expansion=2 * model.gau_expansion)
    return dataclasses.replace(model, **wider)


def grow_target(config: Config, model: ModelConfig) -> Config | None:
    """The run's config around ``model`` grown 2x, or None when the operators cannot grow it exactly."""
    target = copy.deepcopy(config)
    target.model = doubled(model)
    target.train.name = f"{config.train.name}_2x"
    target.train.out_dir, target.train.init_from, target.train.growth = "", "", []
    try:
        plan_growth(model, target.model)
        config_from_dict(target.to_dict())  # loads as tools/expand.py will load it
    except (GrowthError, ConfigError):
        return None
    return target


def continue_command(config: Config, out_dir: Path, world_size: int) -> str:
    extra = "" if config.train.resume == "auto" else " train.resume=auto"
    return (
        f"{launcher(world_size)} launch/pretrain.py --config {out_dir / 'config.yaml'} train.out_dir={out_dir} "
        f"train.max_steps={2 * config.train.max_steps}{extra}"
    )


def grow_command(out_dir: Path, target: Path | None) -> str:
    if target is None:
        return f"no 2x target fits this model; see docs/generate.md for tools/expand.py --to (from {out_dir})"
    return f"python tools/expand.py --from {out_dir} --to {target} --out {out_dir}_2x"


def generate_command(out_dir: Path, prompts: list[str]) -> str:
    prompt = shlex.quote(prompts[0]) if prompts else "''"  # the run's first sample prompt
    return f"python tools/generate.py {out_dir} --prompt {prompt}"


def write_grow_target(config: Config, model: ModelConfig, out_dir: Path) -> Path | None:
    """``<out_dir>/grow_2x.yaml`` (rank 0, atomically) when a 2x target fits ``model``; its path, else None."""
    target = grow_target(config, model)
    if target is None:
        return None
    path = out_dir / GROW_TARGET
    try:
        write_atomic(path, target.to_yaml().encode())
    except OSError:  # the run itself is done and saved: a hint it cannot write is only a hint less
        return None
    return path


def next_step_lines(config: Config, out_dir: Path, world_size: int, target: Path | None) -> list[str]:
    """The summary's commands; a contrastive run (a sentence encoder) neither samples text nor grows."""
    lines = [f"  continue:    {continue_command(config, out_dir, world_size)}"]
    if config.contrastive.objective != "none":
        return lines
    if config.model.objective == "clm":
        lines.insert(0, f"  sample:      {generate_command(out_dir, config.train.sample_prompts)}")
    return [*lines, f"  grow:        {grow_command(out_dir, target)}"]
