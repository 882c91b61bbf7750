"""Contrastive fine-tuning (SimCSE, InfoNCE, CoSENT) as a ``TrainModule``.

The module owns a ``SentenceEncoder`` that shares the LM's trunk (same parameter names) and leaves
the LM head out, so the engine's forward returns pooled embeddings and nothing is repointed. One
optimizer step is cached two-pass accumulation (``growth/objectives/cached_accumulation.py``;
docs/design.md Sec. 5) through the DeepSpeed engine: each micro-batch back-propagates
``world · ⟨e_m, g_m⟩`` with ``engine.backward(scale_wrt_gas=False)``, then ``engine.step()``
(DeepSpeed updates at the boundary). The factor ``world`` undoes DeepSpeed's averaging over ranks and
its 1/grad_accum is not applied, so the update uses exactly d(global batch loss)/dθ.
With R-Drop (``train.rdrop_alpha`` > 0) each micro-batch is embedded as ``[x; x]`` (pass 2 replays
that doubled forward's masks too) and its rows are returned as (rows, 2, d) so the loss of the whole
batch, ``growth/objectives/rdrop.py``, sees both passes of every example.

A step takes ``contrastive.batch_size`` examples from the global example stream (default
``train.micro_batch_size · train.grad_accum · world``): rank r takes the r-th equal share, cut into
``train.grad_accum`` micro-batches of ``train.micro_batch_size`` with a smaller last one if needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from growth.config import Config
from growth.data.contrastive_batches import (
    ContrastiveExamples,
    example_sampler,
    split_validation,
    sts_examples,
    training_examples,
)
from growth.data.sampler import WindowSampler
from growth.data.tokenizer import Tokenizer
from growth.distributed import World, all_reduce_sum
from growth.errors import ConfigError
from growth.model.sentence_encoder import SentenceEncoder
from growth.objectives.cached_accumulation import Batch, cached_step
from growth.objectives.contrastive_losses import LossFn, contrastive_loss, similarity_logits
from growth.objectives.rdrop import doubled, forward_copies, rdrop_contrastive_loss
from growth.objectives.spearman import sts_spearman
from growth.train.module import StepResult

EVAL_SEED = 4242  # SimCSE's validation loss needs dropout: a fixed stream, outside the training one


def engine_cached_step(
    engine,
    micro_batches: Sequence[Batch],
    loss_fn: LossFn,
    world_size: int,
    replay_rng: bool = True,
    rdrop: bool = False,
) -> float:
    """One optimizer step of cached accumulation through ``engine`` (whose module returns pooled
    embeddings); the micro-batch count must be the engine's gradient_accumulation_steps. Returns the
    global batch loss. ``rdrop``: every row is embedded twice, ``loss_fn`` gets (rows, 2, d)."""

    def embed(batch: Batch) -> torch.Tensor:
        ids, mask = batch["input_ids"].to(engine.device), batch["attention_mask"].to(engine.device)
        if not rdrop:
            return engine(ids, mask)
        first, second = engine(doubled(ids), doubled(mask)).chunk(2)
        return torch.stack([first, second], dim=1)

    return cached_step(
        micro_batches,
        embed,
        lambda s: engine.backward(s, scale_wrt_gas=False),
        loss_fn,
        grad_scale=world_size,
        after_backward=engine.step,
        replay_rng=replay_rng,
    )


# -- data and batch geometry ------------------------------------------------------------------------
@dataclass
class ContrastiveData:
    train: ContrastiveExamples
    val: ContrastiveExamples  # held out of contrastive.data: val/loss
    sts: ContrastiveExamples | None  # contrastive.eval_data: val/spearman


def global_batch_size(config: Config, world_size: int, n_train: int) -> int:
    c, t = config.contrastive, config.train
    size = c.batch_size or t.micro_batch_size * t.grad_accum * world_size
    setting = (
        f"contrastive.batch_size={size}"
        if c.batch_size
        else f"train.micro_batch_size * train.grad_accum * world size = {size}"
    )
    if size < 2:
        raise ConfigError(
            f"{setting} is too small for in-batch negatives (need >= 2 examples per step); "
            "raise train.micro_batch_size or set contrastive.batch_size"
        )
    if size % world_size:
        raise ConfigError(f"{setting} must be divisible by the world size {world_size}")
    if size > n_train:
        raise ConfigError(
            f"{setting} exceeds the {n_train} training examples of contrastive.data={c.data} "
            "(an example would meet itself as a negative); use a smaller batch"
        )
    return size


def micro_batch_sizes(per_rank: int, micro: int, accum: int) -> list[int]:
    """``accum`` micro-batches of ``micro`` examples, the last one holding the rest (1..micro)."""
    last = per_rank - micro * (accum - 1)
    if not 1 <= last <= micro:
        raise ConfigError(
            f"{per_rank} examples per rank do not fill train.grad_accum={accum} micro-batches of "
            f"train.micro_batch_size={micro} with a non-empty last one; use train.grad_accum={math.ceil(per_rank / micro)}"
        )
    return [micro] * (accum - 1) + [last]


def load_contrastive_data(config: Config, tokenizer: Tokenizer, world_size: int) -> ContrastiveData:
    """Read, tokenize and split the data, and check the batch geometry (bad input fails here, early)."""
    c = config.contrastive
    train, val = split_validation(
        training_examples(c, tokenizer), config.data.val_fraction, config.train.seed
    )
    sts = sts_examples(c.eval_data, tokenizer, c.max_len, "contrastive.eval_data") if c.eval_data else None
    batch = global_batch_size(config, world_size, len(train))
    micro_batch_sizes(batch // world_size, config.train.micro_batch_size, config.train.grad_accum)
    return ContrastiveData(train, val, sts)


def contrastive_sampler(data: ContrastiveData, seed: int) -> WindowSampler:
    return example_sampler(len(data.train), seed)


# -- the module -------------------------------------------------------------------------------------
class ContrastiveModule:
    def __init__(
        self,
        network: SentenceEncoder,
        config: Config,
        data: ContrastiveData,
        sampler: WindowSampler,
        world: World,
    ):
        c, t = config.contrastive, config.train
        self.network, self.data, self.sampler, self.world = network, data, sampler, world
        self.micro_batch_size, self.eval_batches = t.micro_batch_size, t.eval_batches
        self.global_batch = global_batch_size(config, world.size, len(data.train))  # examples per step
        self.micro_sizes = micro_batch_sizes(
            self.global_batch // world.size, t.micro_batch_size, t.grad_accum
        )
        self.loss_fn = contrastive_loss(c.objective, c.temperature, c.cosent_scale, c.simcse_variant)
        self.rdrop_alpha = t.rdrop_alpha
        self.train_loss_fn = self.loss_fn  # validation keeps the plain loss (one pass)
        if self.rdrop_alpha > 0:  # the config refused objectives without a similarity distribution
            similarity = similarity_logits(c.objective, c.temperature, c.simcse_variant)
            self.train_loss_fn = rdrop_contrastive_loss(self.loss_fn, similarity, self.rdrop_alpha)
        self.simcse, self.max_len = c.objective == "simcse", c.max_len

    def micro_batches(self) -> list[Batch]:
        start = self.sampler.consumed + self.world.rank * (self.global_batch // self.world.size)
        batches = []
        for size in self.micro_sizes:
            batches.append(self.data.train.batch(self.sampler.windows(start, size)))
            start += size
        self.sampler.advance(self.global_batch)
        return batches

    def train_batch(self, engine, micro_batches: list[Batch]) -> StepResult:
        engine.train()
        loss = engine_cached_step(
            engine, micro_batches, self.train_loss_fn, self.world.size, rdrop=self.rdrop_alpha > 0
        )
        applied = engine.was_step_applied() and math.isfinite(loss)
        # Real (unpadded) tokens of both sentences; FLOPs include pass 1's extra forward (+1/3), and
        # R-Drop's second copy of every forward and backward (x2).
        local = sum(int(b["attention_mask"].sum()) for b in micro_batches)
        tokens = int(all_reduce_sum(torch.tensor(float(local))).item())
        per_token = engine.module.flops_per_token(self.max_len) * 4 / 3 * forward_copies(self.rdrop_alpha)
        return StepResult(loss, tokens, tokens * per_token, applied)

    # -- evaluation: identical work on every rank (ZeRO-3 gathers), nothing gathered ---------------
    @staticmethod
    def embed(engine, batch: Batch) -> torch.Tensor:
        return engine(batch["input_ids"].to(engine.device), batch["attention_mask"].to(engine.device))

    @torch.no_grad()
    def validation_loss(self, engine) -> float:
        """Mean loss over up to ``train.eval_batches`` held-out batches of the training batch size.
        SimCSE's positives are dropout views, so it runs in training mode on a fixed, forked RNG."""
        val, size = self.data.val, min(self.global_batch, len(self.data.val))
        if size < 2:
            return float("nan")
        engine.train(self.simcse)
        losses = []
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(EVAL_SEED)
            for start in range(0, min(len(val) // size, self.eval_batches) * size, size):
                rows = [
                    self.embed(engine, val.batch(range(i, min(i + self.micro_batch_size, start + size))))
                    for i in range(start, start + size, self.micro_batch_size)
                ]
                embeddings = torch.cat(rows).float()
                scores = (
                    val.scores[start : start + size].to(embeddings.device) if val.scores is not None else None
                )
                losses.append(self.loss_fn(embeddings, scores).item())
        return sum(losses) / len(losses)

    def eval_metrics(self, engine) -> dict[str, float]:
        scalars = {"val/loss": self.validation_loss(engine)}
        if self.data.sts is not None:
            engine.eval()
            scalars["val/spearman"] = sts_spearman(
                lambda b: self.embed(engine, b), self.data.sts, 2 * self.micro_batch_size
            )
        return scalars

    def extra_weights(self) -> Mapping[str, torch.Tensor]:
        return self.network.head_tensors()

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
