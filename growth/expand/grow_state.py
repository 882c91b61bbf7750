"""Grow a model's training state: weights, EMA weights and Adam moments, tensor by tensor, onto a
larger model built on the meta device (accelerate's ``init_empty_weights``) so it is never
allocated twice; then check on a probe batch that the grown model computes the small one's
function. One code path for ``tools/expand.py`` (a checkpoint on disk, ``grow_checkpoint.py``) and
for a growth stage inside a run (``growth/train/growth_stage.py``); the operators: docs/design.md Sec. 4.
"""

from __future__ import annotations

import dataclasses
import math
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from accelerate import init_empty_weights

from growth.config import ModelConfig
from growth.distributed.deepspeed_adapter import Moments
from growth.expand.optimizer_state import grow_optimizer_state
from growth.expand.width import GrowthError, GrowthPlan, grow_state_dict, plan_growth
from growth.model import build_model
from growth.model.transformer import GrowthLM
from growth.objectives.token_loss import token_loss_sum


@dataclass
class GrownState:
    plan: GrowthPlan
    weights: dict[str, torch.Tensor]
    ema: dict | None  # {"decay", "updates", "weights"} like the source's
    moments: Moments | None
    report: dict


def empty_model(config: ModelConfig) -> GrowthLM:
    """Parameters on the meta device (no memory), buffers (RoPE tables) real."""
    with init_empty_weights(include_buffers=False):
        return build_model(config)


def materialize(config: ModelConfig, weights: dict[str, torch.Tensor]) -> GrowthLM:
    """A model that uses ``weights`` as its parameters (no second copy is allocated)."""
    model = empty_model(config)
    model.load_state_dict(weights, strict=True, assign=True)
    if config.tie_embeddings:
        model.head.proj.weight = model.embed.weight  # assign=True replaced the shared Parameter
    return model


def identity_layer_init(plan: GrowthPlan, seed: int):
    """Initial tensors of new layers, built one layer at a time (only identity layers need them)."""
    cache: dict[str, torch.Tensor] = {}

    def fresh(name: str) -> torch.Tensor:
        if name not in cache:
            index = int(name.split(".")[1])
            with torch.random.fork_rng(devices=[]):  # a growth inside a run must not move the run's RNG
                torch.manual_seed(seed + index)
                layer = build_model(dataclasses.replace(plan.new, n_layers=1)).layers[0].state_dict()
            cache.update({f"layers.{index}.{k}": v for k, v in layer.items()})
        return cache[name]

    return fresh


def grow_state(old: ModelConfig, target: ModelConfig, weights: Mapping[str, torch.Tensor], ema: dict | None,
               moments: Moments | None, probe_ids: torch.Tensor, noise_std: float = 1e-3, seed: int = 0,
               optimizer: str = "grown", tolerance: float = 1e-5) -> GrownState:
    """Grow ``weights`` (and ``ema``, ``moments``) from ``old`` to ``target``; raise ``GrowthError`` if
    the grown model's logits on ``probe_ids`` differ by more than ``tolerance`` × max(1, |logits|)."""
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise GrowthError(f"noise_std={noise_std} must be a finite number >= 0 (0: no symmetry breaking)")
    plan = plan_growth(old, target)
    optimizer = optimizer if moments else "reset"  # report only what is done: no moments, nothing to grow
    # The small model only lives for its probe logits; then the source is read tensor by tensor.
    small = materialize(old, dict(weights)).eval()
    with torch.no_grad():
        before = small(probe_ids)
    params_before = small.num_params()
    del small
    shapes = dict(empty_model(plan.new).state_dict())
    new_layer = identity_layer_init(plan, seed)
    fresh = {name: new_layer(name) if plan.source_name(name) is None else like for name, like in shapes.items()}
    grown_weights = grow_state_dict(weights, plan, fresh, noise_std, torch.Generator().manual_seed(seed))
    grown = materialize(plan.new, grown_weights).eval()
    with torch.no_grad():
        after = grown(probe_ids)
    diff, scale = (after - before).abs().max().item(), before.abs().max().item()
    report = {
        "max_abs_logit_diff": diff,
        "relative_logit_diff": diff / max(scale, 1e-12),
        "logit_scale": scale,
        "tolerance": tolerance,
        "params_before": params_before,
        "params_after": grown.num_params(),
        "loss_before": _lm_loss(before, probe_ids),
        "loss_after": _lm_loss(after, probe_ids),
        "operators": operators_applied(plan, noise_std, optimizer),
        "noise_std": noise_std,
        "seed": seed,
    }
    if not math.isfinite(diff) or diff > tolerance * max(1.0, scale):
        raise GrowthError(f"the grown model differs from the source by {diff:.3g} (> {tolerance:g} x max(1, |logits|)); "
                          "nothing was written")
    grown_ema = None
    if ema is not None:
        # EMA holds parameters only; buffers (DeepNorm's alpha) come from the weights.
        ema_weights = grow_state_dict(ChainMap(ema["weights"], weights), plan, fresh, noise_std,
                                      torch.Generator().manual_seed(seed))
        grown_ema = {**ema, "weights": ema_weights}
    grown_moments = None
    if optimizer == "grown" and moments:
        grown_moments = grow_optimizer_state(moments, plan, [n for n, _ in grown.named_parameters()])
    return GrownState(plan, grown_weights, grown_ema, grown_moments, report)


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return (token_loss_sum(logits[:, :-1], ids[:, 1:]) / ids[:, 1:].numel()).item()


def operators_applied(plan: GrowthPlan, noise_std: float, optimizer: str) -> list[str]:
    old, new = plan.old, plan.new
    ops = []
    if new.d_model != old.d_model:
        k, r = divmod(new.d_model, old.d_model)
        ops.append(f"stream {old.d_model} -> {new.d_model} (k={k}, residue {r}); readers /k + zero-sum noise {noise_std:g}")
    if new.layer == "transformer" and new.n_heads != old.n_heads:
        ops.append(f"heads {old.n_heads} -> {new.n_heads} (head_dim {new.head_dim} kept)")
    if new.layer == "transformer" and new.d_ff != old.d_ff:
        ops.append(f"ffn {old.d_ff} -> {new.d_ff} ({new.ffn}; neurons copied cyclically, out-projection / copies)")
    if new.layer == "gau" and new.gau_expansion != old.gau_expansion:
        ops.append(f"gau expansion e {old.gau_expansion} -> {new.gau_expansion}")
    if new.layer == "gau" and new.gau_key_size != old.gau_key_size:
        ops.append(f"gau key size s {old.gau_key_size} -> {new.gau_key_size} (new dims gamma = beta = 0)")
    if new.n_layers != old.n_layers:
        ops.append(f"depth {old.n_layers} -> {new.n_layers} (identity layers: zero writers)")
    if new.tie_embeddings and new.d_model // old.d_model > 1:
        ops.append("tied embeddings: last norm / k")
    ops.append("optimizer: Adam moments grown, step kept" if optimizer == "grown" else "optimizer: reset (re-warmup)")
    return ops + plan.notes
