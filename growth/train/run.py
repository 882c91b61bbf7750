"""``launch/pretrain.py``'s body: parse, prepare data, build model and engine, resume, train.

Bad input ends with one line on stderr and exit code 2; nothing existing is overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

import torch

from growth.config import Config, ConfigError, load_config
from growth.data.batches import BatchMaker
from growth.data.corpus import corpus_path, file_digest
from growth.data.errors import DataError
from growth.data.packed import default_cache_dir, load_tokens, prepare_tokens
from growth.data.sampler import WindowSampler
from growth.data.tokenizer import Tokenizer, train_tokenizer
from growth.eval.sts import checkpoint_tokenizer
from growth.model import build_model
from growth.train import checkpoint as ckpt
from growth.train.contrastive_trainer import ContrastiveTrainer, contrastive_sampler, load_contrastive_data
from growth.train.distributed import World, barrier, init_distributed
from growth.train.ema import EMA
from growth.train.init_from import load_init_training_state, load_init_weights
from growth.train.engine import build_engine, deepspeed_config
from growth.train.metrics import Metrics
from growth.train.trainer import Callback, Trainer, TrainingDiverged

USER_ERRORS = (ConfigError, DataError, TrainingDiverged)
GROWTH_SCALARS = ("loss_before", "loss_after", "params_before", "params_after", "source_step")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Pretrain a growth model (DeepSpeed).")
    parser.add_argument("--config", default=None, help="YAML config; omitted: the embedded default")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


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
    saved = out_dir / "config.yaml"
    if has_checkpoint and saved.is_file():
        previous = load_config(saved).model
        if previous != config.model:
            raise ConfigError(
                f"train.out_dir={out_dir} holds checkpoints of a different model; use a new train.out_dir"
            )


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


def train(config: Config, world: World, callbacks: Sequence[Callback] = ()) -> Trainer:
    out_dir = run_dir(config)
    prepare_run_dir(config, out_dir, world)
    cache = default_cache_dir(config.data.cache_dir)
    if config.contrastive.objective != "none" and config.train.init_from and not config.data.tokenizer:
        config.data.tokenizer = str(checkpoint_tokenizer(Path(config.train.init_from)) or "")  # the pretrained one
    tokenizer = ensure_tokenizer(config, cache, world)
    # Contrastive fine-tuning reads sentence pairs instead of the token corpus; bad files fail here.
    contrastive = load_contrastive_data(config, tokenizer, world.size) if config.contrastive.objective != "none" else None
    if world.is_main and contrastive is None:
        prepare_tokens(config.data.corpus, tokenizer, cache, config.data.val_fraction)
    barrier()
    corpus = None if contrastive is not None else load_tokens(
        prepare_tokens(config.data.corpus, tokenizer, cache, config.data.val_fraction), config.data.seq_len)
    if world.is_main:
        config.save(out_dir / "config.yaml")
        if not (out_dir / "tokenizer.model").is_file():
            shutil.copyfile(tokenizer.path, out_dir / "tokenizer.model")

    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model = build_model(config.model)
    state = ckpt.RunState(world_size=world.size)
    init_folder = None
    if config.train.init_from:
        init_folder, carried = load_init_weights(model, config.train.init_from)
        state.tokens_seen, state.flops_seen = carried.tokens_seen, carried.flops_seen
        state.growth_events = carried.growth_events

    checkpoint_dir = out_dir / "checkpoints"
    resume_from = ckpt.latest_checkpoint(checkpoint_dir) if config.train.resume == "auto" else None
    universal = resume_from is not None and ckpt.needs_universal(ckpt.read_run_state(resume_from), world)
    ds_config = deepspeed_config(config.train, world.size, load_universal=universal)
    engine = build_engine(model, config.train, ds_config)
    ema = EMA(engine.module, config.train.ema_decay, config.train.ema_warmup) if config.train.ema_decay > 0 else None
    sampler = (contrastive_sampler(contrastive, config.train.seed) if contrastive is not None
               else WindowSampler(len(corpus.train), config.data.seq_len, config.train.seed))
    torch.manual_seed(config.train.seed + 1 + world.rank)  # dropout differs per rank, replays on resume

    if init_folder is not None and resume_from is None:
        load_init_training_state(engine, ema, init_folder)
        if isinstance(sampler, WindowSampler) and sampler.same_stream(carried.sampler):
            sampler.load_state_dict(carried.sampler)  # continue the data order where the small model stopped
    if resume_from is not None:
        ckpt.load_training_state(engine, resume_from, world, universal)
        state = ckpt.read_run_state(resume_from)
        sampler.load_state_dict(state.sampler)
        if ema is not None and (resume_from / "ema.pt").is_file():
            ema.load_state_dict(torch.load(resume_from / "ema.pt", weights_only=False))
        if world.is_main:
            print(f"resumed from {resume_from} at step {state.step}", flush=True)
    state.world_size, state.zero_stage = world.size, ds_config["zero_optimization"]["stage"]

    special = (tokenizer.pad_id, tokenizer.processor.unk_id(), tokenizer.bos_id, tokenizer.eos_id)
    makers = [] if contrastive is not None else [
        BatchMaker(tokens, config.data.seq_len, config.model.objective, tokenizer.vocab_size, tokenizer.mask_id,
                   special, config.data.mlm_probability, seed)
        for tokens, seed in ((corpus.train, config.train.seed), (corpus.val, config.train.seed + 7))
    ]
    metrics = Metrics(out_dir / "tensorboard", world.is_main, config.train.max_steps, state.step)
    for event in state.growth_events:  # x axis: tokens seen, so both phases line up with a scratch run
        metrics.log(int(event["tokens_seen"]), {f"growth/{k}": float(event[k]) for k in GROWTH_SCALARS})
    if contrastive is not None:
        trainer = ContrastiveTrainer(config, world, engine, contrastive, sampler, state, checkpoint_dir, metrics, ema, callbacks)
    else:
        trainer = Trainer(config, world, engine, makers[0], makers[1], sampler, state, checkpoint_dir, metrics, ema, callbacks)
    try:
        trainer.train()
    finally:
        metrics.close()
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
