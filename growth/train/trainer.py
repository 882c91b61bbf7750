"""The training loop: token-normalised gradient accumulation, evaluation, EMA, checkpoints, metrics.

One optimizer step = ``grad_accum`` micro-batches per rank. Before the first backward, the number of
target tokens in the whole global batch is all-reduced, so every micro-batch back-propagates its
loss *sum* scaled by world / N (see ``loss.py``): the gradient is exactly that of the token-mean
loss over the global batch, whatever the micro-batch split and world size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch

from growth.config import Config
from growth.data.batches import BatchMaker
from growth.data.sampler import WindowSampler
from growth.train.checkpoint import RunState, save_checkpoint
from growth.train.distributed import World, all_reduce_sum
from growth.train.ema import EMA
from growth.train.loss import backward_scale, target_count, token_loss_sum
from growth.train.metrics import Metrics


class Callback(Protocol):
    """Hook into the loop (OLMo-core style): called on every rank after each optimizer step."""

    def on_step_end(self, trainer: "Trainer", result: "StepResult") -> None: ...


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is left as it was."""


@dataclass
class StepResult:
    loss: float
    targets: int
    applied: bool


class Trainer:
    def __init__(self, config: Config, world: World, engine, train_batches: BatchMaker, val_batches: BatchMaker,
                 sampler: WindowSampler, state: RunState, checkpoint_dir: Path, metrics: Metrics,
                 ema: EMA | None = None, callbacks: Sequence[Callback] = ()):
        self.config, self.train_cfg, self.world, self.engine = config, config.train, world, engine
        self.train_batches, self.val_batches, self.sampler = train_batches, val_batches, sampler
        self.state, self.checkpoint_dir, self.metrics, self.ema = state, checkpoint_dir, metrics, ema
        self.seq_len = config.data.seq_len
        self.global_batch = self.train_cfg.micro_batch_size * self.train_cfg.grad_accum * world.size
        self.flops_per_token = engine.module.flops_per_token(self.seq_len)
        self.losses: list[float] = []  # every applied step's global loss, for summaries and tests
        self.callbacks = list(callbacks)

    # -- one optimizer step -------------------------------------------------------------------
    def micro_batches(self) -> list[dict[str, torch.Tensor]]:
        batches = []
        for micro in range(self.train_cfg.grad_accum):
            positions = self.sampler.micro_batch_positions(micro, self.world.rank, self.world.size,
                                                           self.train_cfg.micro_batch_size)
            windows = self.sampler.windows(positions.start, len(positions))
            batches.append(self.train_batches.batch(windows, positions))
        return batches

    def train_step(self) -> StepResult:
        self.engine.train()
        batches = self.micro_batches()
        local_targets = sum(target_count(b["labels"]) for b in batches)
        global_targets = int(all_reduce_sum(torch.tensor(float(local_targets))).item())
        scale = backward_scale(self.world.size, global_targets)
        loss_sum = torch.zeros(())
        for batch in batches:
            logits = self.engine(batch["input_ids"].to(self.engine.device))
            micro_sum = token_loss_sum(logits, batch["labels"].to(logits.device))
            self.engine.backward(micro_sum * scale, scale_wrt_gas=False)
            self.engine.step()  # DeepSpeed applies the update at the accumulation boundary only
            loss_sum += micro_sum.detach().float().cpu()
        loss = all_reduce_sum(loss_sum).item() / max(global_targets, 1)
        applied = self.engine.was_step_applied() and math.isfinite(loss)
        return StepResult(loss, global_targets, applied)

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-mean loss over a fixed slice of the validation split, identical at any world size."""
        self.engine.eval()
        maker, micro = self.val_batches, self.train_cfg.micro_batch_size
        n_windows = (len(maker.tokens) - 1) // self.seq_len
        count = min(self.train_cfg.eval_batches * micro * self.world.size, n_windows)
        count -= count % self.world.size  # every rank runs the same number of forwards (ZeRO-3 gathers)
        mine = list(range(self.world.rank, count, self.world.size))
        totals = torch.zeros(2)
        for start in range(0, len(mine), micro):
            windows = mine[start : start + micro]
            batch = maker.batch(windows, windows)
            logits = self.engine(batch["input_ids"].to(self.engine.device))
            totals += torch.tensor([token_loss_sum(logits, batch["labels"].to(logits.device)).item(),
                                    target_count(batch["labels"])])
        totals = all_reduce_sum(totals)
        return (totals[0] / totals[1].clamp(min=1)).item()

    def eval_scalars(self) -> dict[str, float]:
        scalars = {"val/loss": self.evaluate()}
        if self.ema is not None:
            with self.ema.swapped_in():
                scalars["val/loss_ema"] = self.evaluate()
        return scalars

    # -- the loop -----------------------------------------------------------------------------
    def save(self) -> Path:
        self.state.sampler = self.sampler.state_dict()
        return save_checkpoint(self.engine, self.checkpoint_dir, self.state, self.config.to_yaml(), self.world, self.ema)

    def train(self) -> RunState:
        cfg, state = self.train_cfg, self.state
        bad_in_a_row = 0
        self.metrics.step_seconds()
        while state.step < cfg.max_steps:
            result = self.train_step()
            self.sampler.advance(self.global_batch)
            state.step += 1
            for callback in self.callbacks:
                callback.on_step_end(self, result)
            if not result.applied:
                state.skipped_steps += 1
                bad_in_a_row += 1
                self.metrics.log(state.step, {"train/skipped_steps": state.skipped_steps})
                if bad_in_a_row > cfg.max_bad_steps:
                    raise TrainingDiverged(
                        f"{bad_in_a_row} non-finite steps in a row at step {state.step}; lower train.lr or check "
                        f"the data; the last good checkpoint in {self.checkpoint_dir} is intact"
                    )
                continue
            bad_in_a_row = 0
            if self.ema is not None:
                self.ema.update()
            tokens = self.global_batch * self.seq_len
            state.tokens_seen += tokens
            state.flops_seen += tokens * self.flops_per_token
            self.losses.append(result.loss)
            self._log_step(result, tokens)
            if state.step % cfg.eval_interval == 0 or state.step == cfg.max_steps:
                scalars = self.eval_scalars()
                self.metrics.log(state.step, scalars)
                # Against tokens seen (carried across growth), to lay grown and scratch curves over each other.
                self.metrics.log(state.tokens_seen, {f"by_tokens/{k.replace('/', '_')}": v for k, v in scalars.items()})
            if state.step % cfg.save_interval == 0 or state.step == cfg.max_steps:
                self.save()
        return state

    def _log_step(self, result: StepResult, tokens: int) -> None:
        seconds = self.metrics.step_seconds()
        perf = self.metrics.throughput(tokens, tokens * self.flops_per_token, seconds, self.world.size)
        self.metrics.progress(self.state.step, result.loss, perf["perf/tokens_per_s"])
        if self.state.step % self.train_cfg.log_interval == 0 or self.state.step == 1:
            grad_norm = self.engine.get_global_grad_norm()
            self.metrics.log(self.state.step, {
                "train/loss": result.loss,
                "train/lr": self.engine.get_lr()[0],
                "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "train/tokens_seen": self.state.tokens_seen,
                "train/flops_seen": self.state.flops_seen,
                **perf,
            })
