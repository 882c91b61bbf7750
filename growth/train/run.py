"""``launch/pretrain.py``'s body: a builder with one function per stage — run dir, tokenizer, data,
network, module, engine, state, callbacks — chosen by the config, then ``Trainer.fit``.

Nothing here changes the config after ``load_config`` returns. Bad input ends with one line on
stderr and exit code 2; nothing existing is overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from growth import checkpoint as ckpt
from growth.checkpoint.atomic import atomic_path, write_atomic
from growth.config import Config, load_config
from growth.data.batches import BatchMaker
from growth.data.packed import default_cache_dir
from growth.data.pipeline import (
    load_token_corpus,
    prepare_tokens,
    tokenizer_cache_path,
    train_corpus_tokenizer,
)
from growth.data.sampler import WindowSampler
from growth.data.tokenizer import Tokenizer
from growth.distributed import (
    World,
    agree_on_failure,
    init_distributed,
    lost_peer,
    run_on_main,
    stop_request,
    stop_watching_peers,
    watch_peers,
)
from growth.distributed.deepspeed_adapter import is_partitioned, zero_stage
from growth.errors import ConfigError, UserError
from growth.model import GrowthLM, build_model
from growth.model.config import model_config_from_dict, model_differences
from growth.model.sentence_encoder import SentenceEncoder
from growth.train.callback import Callback
from growth.train.callbacks import (
    Checkpointer,
    EMAUpdater,
    Evaluator,
    FeatureRedraw,
    GrowthEventLogger,
    TensorBoardLogger,
)
from growth.train.callbacks.depth_ramp import DepthRamp
from growth.train.callbacks.graceful_stop import GracefulStop
from growth.train.callbacks.samples import TextSamples
from growth.train.contrastive_module import ContrastiveModule, contrastive_sampler, load_contrastive_data
from growth.train.ema import EMA
from growth.train.engine import build_engine, deepspeed_config
from growth.train.growth_schedule import (
    GrowthSchedule,
    model_at,
    needs_depth_ramp,
    resolve_auto_stage,
    rewarmup_in_effect,
    schedule_position,
    stage_models,
)
from growth.train.init_from import load_init_training_state, load_init_weights
from growth.train.lm_module import TokenLMModule
from growth.train.module import TrainModule
from growth.train.next_steps import next_step_lines, write_grow_target
from growth.train.os_errors import os_error_line as failed_io_line
from growth.train.trainer import Trainer, TrainingDiverged

USER_ERRORS = (UserError, TrainingDiverged)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pretrain a growth model (DeepSpeed): deepspeed [--num_gpus N] launch/pretrain.py [--config FILE] [key=value ...]",
        epilog=config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML config (default: the embedded default run)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


def config_keys_help() -> str:
    """Every config key with its default, for ``--help``."""
    lines = ["config keys (key=value on the command line, or sections in --config YAML), with defaults:"]
    for section, values in Config().to_dict().items():
        lines += [
            f"  {section}.{key}={value!r}" if isinstance(value, str) else f"  {section}.{key}={value}"
            for key, value in values.items()
        ]
    return "\n".join(lines)


# -- the run directory and the tokenizer ------------------------------------------------------------
def run_dir(config: Config) -> Path:
    return Path(config.train.out_dir or f"runs/{config.train.name}")


def prepare_run_dir(config: Config, out_dir: Path, world: World) -> None:
    """Create ``out_dir`` and lock it for this run (rank 0; a second run on it stops with the holder's
    PID, ``growth/checkpoint/run_lock.py``); refuse a fresh start over existing checkpoints (any
    ``step_*`` folder, with or without ``latest``) and a different model in them."""

    def create_and_lock() -> None:
        # The lock file is the writability probe: nothing is written before the lock is held, so two
        # launches racing on one directory see only "in use by pid ..." (no shared probe file to trip on).
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.lock_run_dir(out_dir)
            (out_dir / "checkpoints").mkdir(exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"train.out_dir={out_dir} is not writable ({err.strerror}); choose another train.out_dir"
            ) from None
        latest = out_dir / "checkpoints" / ckpt.LATEST
        if latest.exists() and not latest.is_file():  # else found only when the first save publishes
            raise ConfigError(
                f"{latest} is a {'directory' if latest.is_dir() else 'special file'}, not the file naming "
                "the newest checkpoint; move it out of the way (a run writes that file when it saves)"
            )

    run_on_main(world, create_and_lock)  # rank 0's failure is every rank's (and this is the barrier)
    found = ckpt.step_folders(out_dir / "checkpoints")
    has_checkpoint = (out_dir / "checkpoints" / ckpt.LATEST).is_file() or bool(found)
    if has_checkpoint and config.train.resume == "none":
        what = ", ".join(folder.name for folder in found[-3:]) or ckpt.LATEST
        raise ConfigError(
            f"train.out_dir={out_dir} already holds checkpoints ({what}); use train.resume=auto to continue or a new "
            "train.out_dir"
        )
    saved = out_dir / ckpt.CONFIG
    if has_checkpoint and saved.is_file():
        changed = model_differences(load_config(saved).model, config.model, ("fixed", "growable"))
        if changed:
            name, before, now = changed[0]
            raise ConfigError(
                f"train.out_dir={out_dir} holds checkpoints of a different model (model.{name}={before!r} "
                f"there, {now!r} now); use a new train.out_dir"
            )


def ensure_tokenizer(config: Config, cache: Path, world: World) -> Tokenizer:
    """The configured tokenizer, or one trained on a seeded sample of the corpus (rank 0, cached by the
    corpus's digest; the other ranks take rank 0's path rather than digesting the corpus again)."""
    if config.data.tokenizer:
        tokenizer = Tokenizer.load(config.data.tokenizer)
    else:
        shared = torch.distributed.is_initialized() and world.size > 1
        path = [
            tokenizer_cache_path(config.data, config.model.vocab_size, cache)
            if world.is_main or not shared
            else None
        ]
        if world.is_main and not path[0].is_file():
            train_corpus_tokenizer(config.data, config.model.vocab_size, path[0])
        if shared:
            torch.distributed.broadcast_object_list(path, src=0)  # also the barrier
        tokenizer = Tokenizer.load(path[0])
    if config.model.objective == "mlm" and tokenizer.mask_id < 0:
        raise ConfigError(
            f"model.objective=mlm needs a <mask> token, and data.tokenizer={config.data.tokenizer or 'the trained one'} "
            "has none (a causal LM's tokenizer); use model.objective=clm or a tokenizer with a mask token"
        )
    if tokenizer.vocab_size > config.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} pieces; "
            f"set model.vocab_size={tokenizer.vocab_size}"
        )
    return tokenizer


# -- tasks: data and module, chosen by the config ---------------------------------------------------
@dataclass(frozen=True)
class Task:
    load_data: Callable[[Config, Tokenizer, Path, World], Any]
    build_module: Callable[[Config, Any, GrowthLM, Tokenizer, World], TrainModule]


def load_token_data(config: Config, tokenizer: Tokenizer, cache: Path, world: World):
    """The token corpus, prepared on rank 0 (``data.workers`` processes, a progress bar) when the cache
    lacks it; the other ranks take rank 0's folders, and prepare them only where the cache is not shared."""
    shared = torch.distributed.is_initialized() and world.size > 1
    prepared = [
        prepare_tokens(config.data, tokenizer, cache, progress=True) if world.is_main or not shared else None
    ]
    if shared:
        torch.distributed.broadcast_object_list(prepared, src=0)  # also the barrier
    if not prepared[0].complete():
        prepared[0] = prepare_tokens(config.data, tokenizer, cache, workers=1)
    return load_token_corpus(prepared[0], config.data.seq_len)


def token_lm_module(
    config: Config, corpus, lm: GrowthLM, tokenizer: Tokenizer, world: World
) -> TokenLMModule:
    special = (tokenizer.pad_id, tokenizer.processor.unk_id(), tokenizer.bos_id, tokenizer.eos_id)
    train_batches, val_batches = (
        BatchMaker(
            tokens,
            config.data.seq_len,
            config.model.objective,
            tokenizer.vocab_size,
            tokenizer.mask_id,
            special,
            config.data.mlm_probability,
            seed,
        )
        for tokens, seed in ((corpus.train, config.train.seed), (corpus.val, config.train.seed + 7))
    )
    sampler = corpus.sampler(config.data.seq_len, config.train.seed)  # one corpus, or a weighted mixture
    t = config.train
    return TokenLMModule(
        lm,
        train_batches,
        val_batches,
        sampler,
        world,
        t.micro_batch_size,
        t.grad_accum,
        t.eval_batches,
        rdrop_alpha=t.rdrop_alpha,
    )


def contrastive_module(
    config: Config, data, lm: GrowthLM, tokenizer: Tokenizer, world: World
) -> ContrastiveModule:
    return ContrastiveModule(
        SentenceEncoder(lm), config, data, contrastive_sampler(data, config.train.seed), world
    )


TASKS = {
    "lm": Task(load_token_data, token_lm_module),
    # Contrastive fine-tuning reads sentence pairs instead of the token corpus; bad files fail early.
    "contrastive": Task(
        lambda config, tokenizer, cache, world: load_contrastive_data(config, tokenizer, world.size),
        contrastive_module,
    ),
}


def task_name(config: Config) -> str:
    return "lm" if config.contrastive.objective == "none" else "contrastive"


# -- network, state, callbacks ----------------------------------------------------------------------
def build_network(config: Config, resume_step: int) -> tuple[GrowthLM, ckpt.RunState, Path | None]:
    """The LM (identical initial weights on every rank) of the growth stage the run is in, from
    ``train.init_from`` when set. The run state carries what the source had seen; with
    ``train.continue_schedule`` also its step count (so the LR schedule continues)."""
    torch.manual_seed(config.train.seed)
    lm = build_model(model_at(config, resume_step))
    state, init_folder = ckpt.RunState(), None
    if config.train.init_from:
        init_folder, carried = load_init_weights(lm, config.train.init_from)
        state = ckpt.RunState(
            tokens_seen=carried.tokens_seen,
            flops_seen=carried.flops_seen,
            growth_events=carried.growth_events,
            sampler=carried.sampler,
        )
        if config.train.continue_schedule:
            state.step, state.skipped_steps = carried.step, carried.skipped_steps
    return lm, state, init_folder


def restore_extra_weights(module: TrainModule, folder: Path) -> None:
    """Tensors outside the engine (DeepSpeed did not save them) come from the consolidated weights."""
    extras = {name: t for name, t in module.extra_weights().items() if not is_partitioned(t)}
    if extras:
        saved = ckpt.LazyWeights(folder / ckpt.WEIGHTS)
        with torch.no_grad():
            for name, tensor in extras.items():
                tensor.copy_(saved[name])


def build_callbacks(
    config: Config, out_dir: Path, ema: EMA | None, extra: Sequence[Callback]
) -> list[Callback]:
    """Order matters: the EMA is updated before it is evaluated and saved; the logger comes first of
    those that report, so everything they log reaches TensorBoard."""
    t = config.train
    callbacks: list[Callback] = [EMAUpdater(ema)] if ema is not None else []
    callbacks += [
        TensorBoardLogger(out_dir / "tensorboard", t.log_interval, show_stage=bool(t.growth)),
        GrowthEventLogger(),
        Evaluator(t.eval_interval),
        Checkpointer(out_dir / "checkpoints", t.save_interval, config),
    ]
    if t.growth:
        callbacks.append(GrowthSchedule(config))
    if config.model.performer_redraw_interval:  # random-feature attention: W redrawn every N steps
        callbacks.append(FeatureRedraw(config.model.performer_redraw_interval, t.seed))
    if needs_depth_ramp(config):  # ramped depth growth: new layers' gates 0 -> 1 (in-run or from init_from)
        callbacks.append(DepthRamp(t.init_from))
    if t.sample_interval:  # after GrowthSchedule and DepthRamp: it samples the model they leave
        callbacks.append(TextSamples(config, out_dir / ckpt.TOKENIZER))
    return [*callbacks, *extra]


def find_resume(
    config: Config, checkpoint_dir: Path, world: World
) -> tuple[Path | None, ckpt.RunState | None]:
    """With ``train.resume=auto``: the newest complete checkpoint (``ckpt.resume_checkpoint``), its
    files verified against the manifest on rank 0, and its run state; (None, None) to start afresh."""
    if config.train.resume != "auto":
        return None, None

    def find() -> tuple[Path | None, str]:
        folder, note = ckpt.resume_checkpoint(checkpoint_dir)
        if folder is not None:
            ckpt.verify_checkpoint(folder, ckpt.read_run_state(folder).world_size)
        return folder, note

    folder, note = run_on_main(world, find)
    if folder is None:
        return None, None
    if note and world.is_main:
        print(note, flush=True)
    return folder, ckpt.read_run_state(folder)


def check_resume(
    config: Config, folder: Path, state: ckpt.RunState, ds_config: dict, module: TrainModule
) -> None:
    """What a resume must keep: the model the checkpoint holds, its ZeRO stage, and its data stream."""
    here = model_at(config, state.step)
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
    stage = zero_stage(ds_config)
    if state.zero_stage != stage:
        raise ConfigError(
            f"train.zero_stage={stage}, but {folder} was saved under ZeRO-{state.zero_stage}; resume with "
            f"train.zero_stage={state.zero_stage} (or start a new run from its weights: "
            f"train.init_from={folder} with a new train.out_dir)"
        )
    sampler = getattr(module, "sampler", None)
    if (
        state.sampler
        and sampler is not None
        and hasattr(sampler, "same_stream")
        and not sampler.same_stream(state.sampler)
    ):
        mine = sampler.state_dict()
        changed = ", ".join(
            f"{key} {state.sampler.get(key)} there, {mine[key]} now"
            for key in mine
            if key != "consumed" and state.sampler.get(key) != mine[key]
        )
        raise ConfigError(
            f"{folder} was trained on another data stream ({changed}): data.corpus, data.seq_len or "
            f"train.seed changed, so its data position means nothing here; restore them to resume, or "
            f"start a new run from its weights (train.init_from={folder}, a new train.out_dir)"
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


def record_run(config: Config, out_dir: Path, tokenizer: Tokenizer, world: World) -> None:
    """The resolved config and the tokenizer, written (rank 0, atomically) once every check has passed:
    ``train`` calls it after the DeepSpeed config, ``init_from`` and the resume have been checked and loaded."""

    def write() -> None:
        write_atomic(out_dir / ckpt.CONFIG, config.to_yaml().encode())
        if not (out_dir / ckpt.TOKENIZER).is_file():
            with atomic_path(out_dir / ckpt.TOKENIZER) as tmp:
                shutil.copyfile(tokenizer.path, tmp)

    run_on_main(world, write)


def train(config: Config, world: World, callbacks: Sequence[Callback] = ()) -> Trainer:
    stage_models(config)  # every growth stage must be one the operators make exact: refuse before any work
    out_dir = run_dir(config)
    prepare_run_dir(config, out_dir, world)
    cache = default_cache_dir(config.data.cache_dir)
    tokenizer = ensure_tokenizer(config, cache, world)
    task = TASKS[task_name(config)]
    data = task.load_data(config, tokenizer, cache, world)

    checkpoint_dir = out_dir / "checkpoints"
    resume_from, resumed_state = find_resume(config, checkpoint_dir, world)
    resolve_auto_stage(config, resumed_state)  # at_step: auto keeps the step the interrupted run decided
    lm, state, init_folder = build_network(config, resumed_state.step if resumed_state else 0)
    universal = resumed_state is not None and ckpt.needs_universal(resumed_state, world)
    ds_config = deepspeed_config(config.train, world.size, load_universal=universal)
    module = task.build_module(config, data, lm, tokenizer, world)
    if resume_from is not None:
        check_resume(config, resume_from, resumed_state, ds_config, module)
    # A new run starts the schedule at its (continued) step; a resume gets the position from DeepSpeed.
    engine = build_engine(
        module.network,
        config.train,
        ds_config,
        schedule_start=schedule_position(state),
        rewarmup=rewarmup_in_effect(config, resumed_state or state),
    )
    ema = (
        EMA(engine.module, config.train.ema_decay, config.train.ema_warmup)
        if config.train.ema_decay > 0
        else None
    )
    torch.manual_seed(config.train.seed + 1 + world.rank)  # dropout differs per rank, replays on resume

    if init_folder is not None and resume_from is None:
        load_init_training_state(engine, ema, init_folder)
        if isinstance(module.sampler, WindowSampler) and module.sampler.same_stream(state.sampler):
            module.load_state_dict(state.sampler)  # continue the data order where the small model stopped
    if resume_from is not None:
        ckpt.load_training_state(engine, resume_from, world, universal)
        use_configured_lr(engine, config.train.lr, world)
        restore_extra_weights(module, resume_from)
        state = resumed_state
        module.load_state_dict(state.sampler)
        saved_ema = ckpt.read_ema(resume_from)
        if ema is not None and saved_ema is None:
            raise ConfigError(
                f"{resume_from} has no EMA weights (ema.safetensors) but train.ema_decay="
                f"{config.train.ema_decay}: the file was deleted, or the run trained without EMA; restore "
                f"it, or resume with train.ema_decay=0"
            )
        if ema is not None:
            ema.load_state_dict(saved_ema)
        if world.is_main:
            print(f"resumed from {resume_from} at step {state.step}", flush=True)
    state.world_size, state.zero_stage = world.size, zero_stage(ds_config)
    record_run(config, out_dir, tokenizer, world)

    resume_line = resume_command(config, out_dir, world)
    trainer = Trainer(
        engine,
        module,
        state,
        world,
        config.train.max_steps,
        config.train.max_bad_steps,
        [*build_callbacks(config, out_dir, ema, callbacks), GracefulStop(resume_line)],
    )
    trainer.load_callback_states(state.callbacks)
    started, first_step = time.perf_counter(), state.step
    trainer.fit()
    ckpt.release_run_dir(out_dir)
    if world.is_main and trainer.stopped is not None:
        print(trainer.stopped.line(resume_line), file=sys.stderr, flush=True)
    elif world.is_main and first_step >= config.train.max_steps:  # a relaunch of a finished run
        print(
            f"already complete at step {first_step} (train.max_steps={config.train.max_steps}): nothing "
            f"to train; raise train.max_steps to continue ({out_dir / 'checkpoints'})",
            flush=True,
        )
    elif world.is_main:
        target = write_grow_target(config, model_at(config, trainer.state.step), out_dir)
        print(summary(trainer, config, out_dir, time.perf_counter() - started, target), flush=True)
    return trainer


def resume_command(config: Config, out_dir: Path, world: World) -> str:
    """How to resume an interrupted run from its newest checkpoint (the config the run recorded in ``out_dir``);
    a finished run's ways to go on are ``next_steps``'."""
    launcher = "python" if world.size == 1 else f"deepspeed --num_gpus {world.size}"
    resume = "" if config.train.resume == "auto" else " train.resume=auto"
    return f"{launcher} launch/pretrain.py --config {out_dir / ckpt.CONFIG}{resume}"


def summary(
    trainer: Trainer, config: Config, out_dir: Path, seconds: float, grow_target: Path | None = None
) -> str:
    """What a run did and where everything is, and how to go on from it."""
    state, evaluator = trainer.state, trainer.callback(Evaluator)
    last = " | ".join(f"{k} {v:.4f}" for k, v in (evaluator.last if evaluator else {}).items())
    train_loss = f"{trainer.losses[-1]:.4f}" if trainer.losses else "none (no step applied)"
    return "\n".join(
        [
            f"done: step {state.step} ({len(trainer.losses)} steps this run, {state.skipped_steps} skipped), "
            f"{state.tokens_seen:,} tokens seen, {seconds:.1f} s",
            f"  final train loss {train_loss}" + (f" | {last}" if last else ""),
            f"  TensorBoard: tensorboard --logdir {out_dir / 'tensorboard'}",
            f"  checkpoints: {out_dir / 'checkpoints'} (latest: {ckpt.latest_checkpoint(out_dir / 'checkpoints')})",
            *next_step_lines(config, out_dir, trainer.world.size, grow_target),
        ]
    )


def os_error_line(err: OSError, config: Config | None) -> str:
    """One line for a failed read or write (a full disk, a read-only cache), naming the setting."""
    folders = (
        [("data.cache_dir", default_cache_dir(config.data.cache_dir)), ("train.out_dir", run_dir(config))]
        if config is not None
        else []
    )
    return failed_io_line(err, folders)


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> int:
    """The command line: one ``error:`` line and exit code 2 for bad input, printed once (by rank 0,
    or by the rank that found it) while the other ranks stop quietly with exit code 2. SIGTERM and
    SIGINT stop the run after the current step with a checkpoint and exit code 128 + the signal
    (``growth/distributed/stop_request.py``); a rank whose peer died stops with one line and 2."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    world, config = None, None
    stop_request.install()
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        world = init_distributed()
        watch_peers(world)
        trainer = train(config, world, callbacks)
        if trainer.stopped is not None:
            return trainer.stopped.request.exit_code
    except stop_request.StopRequested as stop:
        agree_on_failure(world, stopped_early_line(stop.request, config, world))
        return stop.request.exit_code
    except USER_ERRORS as err:
        agree_on_failure(world, f"error: {err}")
        return 2
    except OSError as err:
        agree_on_failure(world, os_error_line(err, config))
        return 2
    except BaseException as err:
        cause = lost_peer(err, world)
        if cause:
            agree_on_failure(world, lost_peer_line(cause, config))
            return 2
        agree_on_failure(world, None)  # this rank's traceback says why; the others stop quietly
        raise
    finally:
        stop_watching_peers()  # joined before the interpreter exits (see its docstring)
        ckpt.release_all()
        stop_request.uninstall()
    return 0


def stopped_early_line(request: stop_request.StopRequest, config: Config | None, world: World | None) -> str:
    """A stop before the loop began: nothing trained in this launch, so nothing to save."""
    where = "before training began; nothing new to save"
    if config is None or world is None:
        return f"stopped by {request.reason} {where}"
    return f"stopped by {request.reason} {where}; continue with: {resume_command(config, run_dir(config), world)}"


def lost_peer_line(cause: str, config: Config | None) -> str:
    """Another rank died (killed, out of memory): this one cannot go on alone."""
    folder = None
    if config is not None:
        try:
            folder = ckpt.resume_checkpoint(run_dir(config) / "checkpoints")[0]
        except (ConfigError, OSError):
            folder = None
    saved = (
        f"the last complete checkpoint, {folder}, is intact" if folder else "no checkpoint was written yet"
    )
    return (
        f"error: another rank of this run ended ({cause}), so this one stopped too; {saved}; relaunch the "
        "same command to continue (train.resume=auto)"
    )
