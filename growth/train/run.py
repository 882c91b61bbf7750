"""``launch/pretrain.py``'s body: a builder with one function per stage — run dir, tokenizer, data,
network, module, engine, state, callbacks — chosen by the config, then ``Trainer.fit``.

Nothing here changes the config after ``load_config`` returns. Bad input ends with one line on
stderr and exit code 2; nothing existing is overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from growth import checkpoint as ckpt
from growth.config import Config, ConfigError, load_config, model_differences
from growth.data.batches import BatchMaker
from growth.data.corpus import corpus_path, file_digest
from growth.data.errors import DataError
from growth.data.packed import default_cache_dir, load_tokens, prepare_tokens
from growth.data.sampler import WindowSampler
from growth.data.tokenizer import Tokenizer, train_tokenizer
from growth.distributed import World, barrier, init_distributed
from growth.distributed.deepspeed_adapter import is_partitioned, zero_stage
from growth.model import GrowthLM, build_model
from growth.model.sentence_encoder import SentenceEncoder
from growth.train.callback import Callback
from growth.train.callbacks import Checkpointer, EMAUpdater, Evaluator, GrowthEventLogger, TensorBoardLogger
from growth.train.contrastive_module import ContrastiveModule, contrastive_sampler, load_contrastive_data
from growth.train.ema import EMA
from growth.train.engine import build_engine, deepspeed_config
from growth.train.growth_schedule import GrowthSchedule, model_at, rewarmup_in_effect, schedule_position, stage_models
from growth.train.init_from import load_init_training_state, load_init_weights
from growth.train.lm_module import TokenLMModule
from growth.train.module import TrainModule
from growth.train.trainer import Trainer, TrainingDiverged

USER_ERRORS = (ConfigError, DataError, TrainingDiverged)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Pretrain a growth model (DeepSpeed).")
    parser.add_argument("--config", default=None, help="YAML config; omitted: the embedded default")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


# -- the run directory and the tokenizer ------------------------------------------------------------
def run_dir(config: Config) -> Path:
    return Path(config.train.out_dir or f"runs/{config.train.name}")


def prepare_run_dir(config: Config, out_dir: Path, world: World) -> None:
    """Create ``out_dir``; refuse to mix a different model (or a fresh start) into existing checkpoints."""
    if world.is_main:
        try:
            (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = out_dir / f".write_probe{world.rank}"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"train.out_dir={out_dir} is not writable ({err.strerror}); choose another train.out_dir") from None
    barrier()
    has_checkpoint = (out_dir / "checkpoints" / ckpt.LATEST).is_file()
    if has_checkpoint and config.train.resume == "none":
        raise ConfigError(
            f"train.out_dir={out_dir} already holds checkpoints; use train.resume=auto to continue or a new train.out_dir"
        )
    saved = out_dir / ckpt.CONFIG
    if has_checkpoint and saved.is_file():
        changed = model_differences(load_config(saved).model, config.model, ("fixed", "growable"))
        if changed:
            name, before, now = changed[0]
            raise ConfigError(f"train.out_dir={out_dir} holds checkpoints of a different model (model.{name}={before!r} "
                              f"there, {now!r} now); use a new train.out_dir")


def ensure_tokenizer(config: Config, cache: Path, world: World) -> Tokenizer:
    """The configured tokenizer, or one trained on the corpus (rank 0, cached by corpus digest)."""
    if config.data.tokenizer:
        tokenizer = Tokenizer.load(config.data.tokenizer)
    else:
        path = cache / f"tokenizer-{file_digest(corpus_path(config.data.corpus))}-{config.model.vocab_size}.model"
        if world.is_main and not path.is_file():
            from growth.data.corpus import read_corpus

            read_corpus(config.data.corpus)  # refuse empty/binary corpora before sentencepiece sees them
            train_tokenizer([corpus_path(config.data.corpus)], path, config.model.vocab_size)
        barrier()
        tokenizer = Tokenizer.load(path)
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
    if world.is_main:
        prepare_tokens(config.data.corpus, tokenizer, cache, config.data.val_fraction)
    barrier()
    return load_tokens(prepare_tokens(config.data.corpus, tokenizer, cache, config.data.val_fraction), config.data.seq_len)


def token_lm_module(config: Config, corpus, lm: GrowthLM, tokenizer: Tokenizer, world: World) -> TokenLMModule:
    special = (tokenizer.pad_id, tokenizer.processor.unk_id(), tokenizer.bos_id, tokenizer.eos_id)
    train_batches, val_batches = (
        BatchMaker(tokens, config.data.seq_len, config.model.objective, tokenizer.vocab_size, tokenizer.mask_id,
                   special, config.data.mlm_probability, seed)
        for tokens, seed in ((corpus.train, config.train.seed), (corpus.val, config.train.seed + 7))
    )
    sampler = WindowSampler(len(corpus.train), config.data.seq_len, config.train.seed)
    t = config.train
    return TokenLMModule(lm, train_batches, val_batches, sampler, world, t.micro_batch_size, t.grad_accum, t.eval_batches)


def contrastive_module(config: Config, data, lm: GrowthLM, tokenizer: Tokenizer, world: World) -> ContrastiveModule:
    return ContrastiveModule(SentenceEncoder(lm), config, data, contrastive_sampler(data, config.train.seed), world)


TASKS = {
    "lm": Task(load_token_data, token_lm_module),
    # Contrastive fine-tuning reads sentence pairs instead of the token corpus; bad files fail early.
    "contrastive": Task(lambda config, tokenizer, cache, world: load_contrastive_data(config, tokenizer, world.size),
                        contrastive_module),
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
        state = ckpt.RunState(tokens_seen=carried.tokens_seen, flops_seen=carried.flops_seen,
                              growth_events=carried.growth_events, sampler=carried.sampler)
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


def build_callbacks(config: Config, out_dir: Path, ema: EMA | None, extra: Sequence[Callback]) -> list[Callback]:
    """Order matters: the EMA is updated before it is evaluated and saved; the logger comes first of
    those that report, so everything they log reaches TensorBoard."""
    t = config.train
    callbacks: list[Callback] = [EMAUpdater(ema)] if ema is not None else []
    callbacks += [TensorBoardLogger(out_dir / "tensorboard", t.log_interval, show_stage=bool(t.growth)), GrowthEventLogger(),
                  Evaluator(t.eval_interval), Checkpointer(out_dir / "checkpoints", t.save_interval, config)]
    if t.growth:
        callbacks.append(GrowthSchedule(config))
    return [*callbacks, *extra]


def record_run(config: Config, out_dir: Path, tokenizer: Tokenizer, world: World) -> None:
    """The resolved config and the tokenizer, written once every check has passed."""
    if world.is_main:
        config.save(out_dir / ckpt.CONFIG)
        if not (out_dir / ckpt.TOKENIZER).is_file():
            shutil.copyfile(tokenizer.path, out_dir / ckpt.TOKENIZER)


def train(config: Config, world: World, callbacks: Sequence[Callback] = ()) -> Trainer:
    stage_models(config)  # every growth stage must be one the operators make exact: refuse before any work
    out_dir = run_dir(config)
    prepare_run_dir(config, out_dir, world)
    cache = default_cache_dir(config.data.cache_dir)
    tokenizer = ensure_tokenizer(config, cache, world)
    task = TASKS[task_name(config)]
    data = task.load_data(config, tokenizer, cache, world)

    checkpoint_dir = out_dir / "checkpoints"
    resume_from = ckpt.latest_checkpoint(checkpoint_dir) if config.train.resume == "auto" else None
    resumed_state = ckpt.read_run_state(resume_from) if resume_from is not None else None
    lm, state, init_folder = build_network(config, resumed_state.step if resumed_state else 0)
    universal = resumed_state is not None and ckpt.needs_universal(resumed_state, world)
    ds_config = deepspeed_config(config.train, world.size, load_universal=universal)
    module = task.build_module(config, data, lm, tokenizer, world)
    # A new run starts the schedule at its (continued) step; a resume gets the position from DeepSpeed.
    engine = build_engine(module.network, config.train, ds_config, schedule_start=schedule_position(state),
                          rewarmup=rewarmup_in_effect(config, resumed_state or state))
    ema = EMA(engine.module, config.train.ema_decay, config.train.ema_warmup) if config.train.ema_decay > 0 else None
    torch.manual_seed(config.train.seed + 1 + world.rank)  # dropout differs per rank, replays on resume

    if init_folder is not None and resume_from is None:
        load_init_training_state(engine, ema, init_folder)
        if isinstance(module.sampler, WindowSampler) and module.sampler.same_stream(state.sampler):
            module.load_state_dict(state.sampler)  # continue the data order where the small model stopped
    if resume_from is not None:
        ckpt.load_training_state(engine, resume_from, world, universal)
        restore_extra_weights(module, resume_from)
        state = resumed_state
        module.load_state_dict(state.sampler)
        saved_ema = ckpt.read_ema(resume_from)
        if ema is not None and saved_ema is not None:
            ema.load_state_dict(saved_ema)
        if world.is_main:
            print(f"resumed from {resume_from} at step {state.step}", flush=True)
    state.world_size, state.zero_stage = world.size, zero_stage(ds_config)
    record_run(config, out_dir, tokenizer, world)

    trainer = Trainer(engine, module, state, world, config.train.max_steps, config.train.max_bad_steps,
                      build_callbacks(config, out_dir, ema, callbacks))
    trainer.load_callback_states(state.callbacks)
    trainer.fit()
    if world.is_main:
        print(f"done: step {state.step}, TensorBoard logs in {out_dir / 'tensorboard'} "
              f"(tensorboard --logdir {out_dir.parent}), checkpoints in {checkpoint_dir}", flush=True)
    return trainer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config, args.overrides)
        world = init_distributed()
        train(config, world)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0
