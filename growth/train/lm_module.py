"""Token language modelling (CLM or MLM) as a ``TrainModule``, with token-normalised accumulation.

One optimizer step = ``grad_accum`` micro-batches per rank. Before the first backward the number of
target tokens in the whole global batch is all-reduced, so every micro-batch back-propagates its
loss *sum* scaled by world / N (``growth/objectives/token_loss.py``; docs/design.md Sec. 5): the
gradient is exactly that of the token-mean loss over the global batch, whatever the micro-batch
split and world size. With R-Drop (``train.rdrop_alpha`` > 0) each micro-batch is forwarded once as
``[x; x]`` and its sum is ``growth/objectives/rdrop.py``'s (both passes' CE and α·KL, summed over the
same target tokens), so the same normalisation keeps it exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from growth.data.batches import BatchMaker
from growth.data.sampler import WindowSampler
from growth.distributed import World, all_reduce_sum
from growth.model import GrowthLM
from growth.objectives.rdrop import doubled, forward_copies, rdrop_token_loss_sum
from growth.objectives.token_loss import (
    backward_scale,
    standard_error,
    target_count,
    token_loss_sum,
    window_loss_means,
)
from growth.train.module import Batch, StepResult


def micro_batch_loss_sum(engine, batch: Batch, rdrop_alpha: float) -> torch.Tensor:
    """The micro-batch's loss summed over its target tokens: plain CE, or R-Drop's on ``[x; x]``."""
    input_ids, labels = batch["input_ids"].to(engine.device), batch["labels"].to(engine.device)
    if rdrop_alpha > 0:
        return rdrop_token_loss_sum(engine(doubled(input_ids)), labels, rdrop_alpha)
    return token_loss_sum(engine(input_ids), labels)


def engine_token_step(
    engine, micro_batches: list[Batch], world_size: int, rdrop_alpha: float = 0.0
) -> tuple[torch.Tensor, int]:
    """One optimizer step through ``engine`` (micro-batch count = its gradient_accumulation_steps):
    each micro-batch back-propagates its loss sum x world / N (N: target tokens of the global batch).
    Returns (this rank's loss sum, N)."""
    local_targets = sum(target_count(b["labels"]) for b in micro_batches)
    global_targets = int(all_reduce_sum(torch.tensor(float(local_targets))).item())
    scale = backward_scale(world_size, global_targets)
    loss_sum = torch.zeros(())
    for batch in micro_batches:
        micro_sum = micro_batch_loss_sum(engine, batch, rdrop_alpha)
        engine.backward(micro_sum * scale, scale_wrt_gas=False)
        engine.step()  # DeepSpeed applies the update at the accumulation boundary only
        loss_sum += micro_sum.detach().float().cpu()
    return loss_sum, global_targets


class TokenLMModule:
    def __init__(
        self,
        network: GrowthLM,
        train_batches: BatchMaker,
        val_batches: BatchMaker,
        sampler: WindowSampler,
        world: World,
        micro_batch_size: int,
        grad_accum: int,
        eval_batches: int,
        rdrop_alpha: float = 0.0,
    ):
        self.network, self.train_batches, self.val_batches, self.sampler = (
            network,
            train_batches,
            val_batches,
            sampler,
        )
        self.world, self.micro_batch_size, self.grad_accum, self.eval_batches = (
            world,
            micro_batch_size,
            grad_accum,
            eval_batches,
        )
        self.seq_len = train_batches.seq_len
        self.rdrop_alpha = rdrop_alpha
        self.global_batch = micro_batch_size * grad_accum * world.size

    def micro_batches(self) -> list[Batch]:
        batches = []
        for micro in range(self.grad_accum):
            positions = self.sampler.micro_batch_positions(
                micro, self.world.rank, self.world.size, self.micro_batch_size
            )
            batches.append(
                self.train_batches.batch(self.sampler.windows(positions.start, len(positions)), positions)
            )
        self.sampler.advance(self.global_batch)
        return batches

    def train_batch(self, engine, micro_batches: list[Batch]) -> StepResult:
        engine.train()
        loss_sum, global_targets = engine_token_step(engine, micro_batches, self.world.size, self.rdrop_alpha)
        loss = all_reduce_sum(loss_sum).item() / max(global_targets, 1)
        tokens = self.global_batch * self.seq_len
        applied = engine.was_step_applied() and math.isfinite(loss)
        # R-Drop forwards every token twice: twice the training FLOPs of the step.
        flops = tokens * engine.module.flops_per_token(self.seq_len) * forward_copies(self.rdrop_alpha)
        return StepResult(loss, tokens, flops, applied)

    @torch.no_grad()
    def eval_metrics(self, engine) -> dict[str, float]:
        """Token-mean loss over a fixed slice of the validation split, identical at any world size."""
        engine.eval()
        maker, micro = self.val_batches, self.micro_batch_size
        n_windows = (len(maker.tokens) - 1) // self.seq_len
        count = min(self.eval_batches * micro * self.world.size, n_windows)
        count -= count % self.world.size  # every rank runs the same number of forwards (ZeRO-3 gathers)
        mine = list(range(self.world.rank, count, self.world.size))
        # loss sum, target count, then the windows' count, sum and sum of squares of their mean losses
        totals = torch.zeros(5, dtype=torch.float64)
        for start in range(0, len(mine), micro):
            windows = mine[start : start + micro]
            batch = maker.batch(windows, windows)
            logits = engine(batch["input_ids"].to(engine.device))
            labels = batch["labels"].to(logits.device)
            means = window_loss_means(logits, labels).double().cpu()
            totals += torch.tensor(
                [token_loss_sum(logits, labels).item(), target_count(labels), len(windows), 0.0, 0.0],
                dtype=torch.float64,
            )
            totals[3:] += torch.stack([means.sum(), means.square().sum()])
        totals = all_reduce_sum(totals)
        return {
            "val/loss": (totals[0] / totals[1].clamp(min=1)).item(),
            "val/loss_se": standard_error(*totals[2:]),
        }

    def probe_batch(self, size: int = 4) -> torch.Tensor:
        """Fixed validation inputs on which a growth must keep the function (identical on every rank)."""
        windows = list(range(min(size, (len(self.val_batches.tokens) - 1) // self.seq_len)))
        return self.val_batches.batch(windows, windows)["input_ids"]

    def extra_weights(self) -> Mapping[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
