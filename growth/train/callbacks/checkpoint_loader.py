"""The reading half of the checkpointer: find the checkpoint a run continues from (``train.resume=auto``),
check that this launch may continue it, and restore it into the engine, the module and the EMA.

A resume happens in three steps because the engine is built between them: ``find`` (before the network:
the checkpoint's step decides which growth stage's model to build, and a changed world size asks for a
universal load), ``check`` (before the engine: the model, the ZeRO stage and the data stream must be the
checkpoint's), ``restore`` (after it: DeepSpeed's state, the RNG, the weights DeepSpeed does not hold, the
data position, the EMA). The ``Checkpointer`` (``checkpointer.py``) owns one, so saving and loading share
the folder and the format (``growth/checkpoint/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from growth import checkpoint as ckpt
from growth.config import Config
from growth.distributed import World, run_on_main
from growth.distributed.deepspeed_adapter import is_partitioned, zero_stage
from growth.errors import ConfigError
from growth.model.config import model_config_from_dict, model_differences
from growth.train.ema import EMA
from growth.train.growth_stages import model_at
from growth.train.module import TrainModule


@dataclass(frozen=True)
class ResumePoint:
    """A complete, verified checkpoint to continue from, and how to load it."""

    folder: Path
    state: ckpt.RunState
    universal: bool  # saved at another world size: DeepSpeed loads its universal conversion


class CheckpointLoader:
    def __init__(self, root: Path, config: Config):
        self.root, self.config = root, config

    def find(self, world: World) -> ResumePoint | None:
        """With ``train.resume=auto``: the newest complete checkpoint (``ckpt.resume_checkpoint``), its files
        verified against the manifest on rank 0, and its run state; None to start afresh."""
        if self.config.train.resume != "auto":
            return None

        def find() -> tuple[Path | None, str]:
            folder, note = ckpt.resume_checkpoint(self.root)
            if folder is not None:
                ckpt.verify_checkpoint(folder, ckpt.read_run_state(folder).world_size)
            return folder, note

        folder, note = run_on_main(world, find)
        if folder is None:
            return None
        if note and world.is_main:
            print(note, flush=True)
        state = ckpt.read_run_state(folder)
        return ResumePoint(folder, state, ckpt.needs_universal(state, world))

    def check(self, point: ResumePoint, ds_config: dict, module: TrainModule) -> None:
        """What a resume must keep: the model the checkpoint holds, its ZeRO stage, and its data stream."""
        check_same_model(self.config, point)
        check_same_zero_stage(point, zero_stage(ds_config))
        check_same_data_stream(point, module)

    def restore(self, point: ResumePoint, engine, module: TrainModule, ema: EMA | None, world: World):
        """Load everything the checkpoint holds into this launch; returns its run state (collective)."""
        ckpt.load_training_state(engine, point.folder, world, point.universal)
        use_configured_lr(engine, self.config.train.lr, world)
        restore_extra_weights(module, point.folder)
        module.load_state_dict(point.state.sampler)
        restore_ema(ema, point.folder, self.config.train.ema_decay)
        if world.is_main:
            print(f"resumed from {point.folder} at step {point.state.step}", flush=True)
        return point.state


def check_same_model(config: Config, point: ResumePoint) -> None:
    """The checkpoint's ``config.yaml`` holds the model this run builds at the checkpoint's step."""
    folder = point.folder
    here = model_at(config, point.state.step)
    try:
        there = model_config_from_dict(yaml.safe_load((folder / ckpt.CONFIG).read_text())["model"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ConfigError) as err:
        raise ConfigError(
            f"{folder / ckpt.CONFIG} is unreadable ({type(err).__name__}); the checkpoint is damaged"
        ) from None
    for name, before, now in model_differences(there, here, ("fixed", "growable")):
        raise ConfigError(
            f"{folder} holds a different model (model.{name}={before!r} there, {now!r} now); resume "
            f"with that model, or use a new train.out_dir (train.init_from={folder} starts from its weights)"
        )


def check_same_zero_stage(point: ResumePoint, stage: int) -> None:
    """DeepSpeed's files are per ZeRO stage: a checkpoint loads only under the stage it was saved by."""
    if point.state.zero_stage != stage:
        saved = point.state.zero_stage
        raise ConfigError(
            f"train.zero_stage={stage}, but {point.folder} was saved under ZeRO-{saved}; resume with "
            f"train.zero_stage={saved} (or start a new run from its weights: "
            f"train.init_from={point.folder} with a new train.out_dir)"
        )


def check_same_data_stream(point: ResumePoint, module: TrainModule) -> None:
    """A data position is meaningful only in the stream it was taken in (corpus, window length, seed)."""
    saved, sampler = point.state.sampler, getattr(module, "sampler", None)
    if not saved or sampler is None or not hasattr(sampler, "same_stream") or sampler.same_stream(saved):
        return
    mine = sampler.state_dict()
    changed = ", ".join(
        f"{key} {saved.get(key)} there, {mine[key]} now"
        for key in mine
        if key != "consumed" and saved.get(key) != mine[key]
    )
    raise ConfigError(
        f"{point.folder} was trained on another data stream ({changed}): data.corpus, data.seq_len or "
        f"train.seed changed, so its data position means nothing here; restore them to resume, or "
        f"start a new run from its weights (train.init_from={point.folder}, a new train.out_dir)"
    )


def use_configured_lr(engine, lr: float, world: World) -> None:
    """A resume restores the schedule with the peak LR it was saved with; a changed ``train.lr`` (e.g.
    lowered after a divergence) takes effect from here on, at the schedule's position."""
    scheduler = getattr(engine, "lr_scheduler", None)
    if (
        scheduler is None
        or not hasattr(scheduler, "lr_lambdas")
        or all(base == lr for base in scheduler.base_lrs)
    ):
        return
    before = scheduler.base_lrs[0]
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    for group, base, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
    if world.is_main:
        print(
            f"train.lr={lr:g} (the checkpoint's schedule peaked at {before:g}): the schedule continues at the "
            "configured LR",
            flush=True,
        )


def restore_extra_weights(module: TrainModule, folder: Path) -> None:
    """Tensors outside the engine (DeepSpeed did not save them) come from the consolidated weights."""
    extras = {name: t for name, t in module.extra_weights().items() if not is_partitioned(t)}
    if extras:
        saved = ckpt.LazyWeights(folder / ckpt.WEIGHTS)
        with torch.no_grad():
            for name, tensor in extras.items():
                tensor.copy_(saved[name])


def restore_ema(ema: EMA | None, folder: Path, decay: float) -> None:
    """The averaged weights the checkpoint saved (``ema.safetensors``); a run with EMA cannot resume
    without them (starting the average afresh would silently change what ``val/loss_ema`` means)."""
    saved = ckpt.read_ema(folder)
    if ema is not None and saved is None:
        raise ConfigError(
            f"{folder} has no EMA weights (ema.safetensors) but train.ema_decay={decay}: the file was "
            f"deleted, or the run trained without EMA; restore it, or resume with train.ema_decay=0"
        )
    if ema is not None:
        ema.load_state_dict(saved)
