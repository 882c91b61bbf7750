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
from growth.distributed.deepspeed_adapter import zero_stage
from growth.errors import ConfigError, UserError
from growth.model import GrowthLM, build_model
from growth.model.config import model_differences
from growth.model.sentence_encoder import SentenceEncoder
from growth.train.callback import Callback
from growth.train.callbacks import (
    Checkpointer,
    DepthRamp,
    EMAUpdater,
    Evaluator,
    FeatureRedraw,
    GracefulStop,
    GrowthEventLogger,
    GrowthSchedule,
    TensorBoardLogger,
    TextSamples,
)
from growth.train.callbacks.growth_schedule import resolve_auto_stage
from growth.train.contrastive_module import ContrastiveModule, contrastive_sampler, load_contrastive_data
from growth.train.ema import EMA
from growth.train.engine import build_engine, deepspeed_config
from growth.train.growth_stages import (
    model_at,
    needs_depth_ramp,
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


def build_callbacks(
    config: Config, out_dir: Path, checkpointer: Checkpointer, ema: EMA | None, extra: Sequence[Callback]
) -> list[Callback]:
    """The callbacks the config asks for; each declares its place in the order (its ``priority``; the table
    is in docs/architecture.md), so the list's order here does not matter."""
    t = config.train
    callbacks: list[Callback] = [EMAUpdater(ema)] if ema is not None else []
    callbacks += [
        TensorBoardLogger(out_dir / "tensorboard", t.log_interval, show_stage=bool(t.growth)),
        GrowthEventLogger(),
        Evaluator(t.eval_interval),
        checkpointer,
    ]
    if t.growth:
        callbacks.append(GrowthSchedule(config))
    if config.model.performer_redraw_interval:  # random-feature attention: W redrawn every N steps
        callbacks.append(FeatureRedraw(config.model.performer_redraw_interval, t.seed))
    if needs_depth_ramp(config):  # ramped depth growth: new layers' gates 0 -> 1 (in-run or from init_from)
        callbacks.append(DepthRamp(t.init_from))
    if t.sample_interval:
        callbacks.append(TextSamples(config, out_dir / ckpt.TOKENIZER))
    return [*callbacks, *extra]


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

    checkpointer = Checkpointer(out_dir / "checkpoints", config.train.save_interval, config)
    resume = checkpointer.loader.find(world)
    resumed_state = resume.state if resume is not None else None
    resolve_auto_stage(config, resumed_state)  # at_step: auto keeps the step the interrupted run decided
    lm, state, init_folder = build_network(config, resumed_state.step if resumed_state else 0)
    ds_config = deepspeed_config(
        config.train, world.size, load_universal=resume is not None and resume.universal
    )
    module = task.build_module(config, data, lm, tokenizer, world)
    if resume is not None:
        checkpointer.loader.check(resume, ds_config, module)
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

    if init_folder is not None and resume is None:
        load_init_training_state(engine, ema, init_folder)
        if isinstance(module.sampler, WindowSampler) and module.sampler.same_stream(state.sampler):
            module.load_state_dict(state.sampler)  # continue the data order where the small model stopped
    if resume is not None:
        state = checkpointer.loader.restore(resume, engine, module, ema, world)
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
        [*build_callbacks(config, out_dir, checkpointer, ema, callbacks), GracefulStop(resume_line)],
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
