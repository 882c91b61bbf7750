"""Grow a model's training state: weights, EMA weights and Adam moments, tensor by tensor, onto a
larger model built on the meta device (accelerate's ``init_empty_weights``) so it is never
allocated twice; then check on a probe batch that the grown model computes the small one's
function. One code path for ``tools/expand.py`` (a checkpoint on disk, ``grow_checkpoint.py``) and
for a growth stage inside a run (``growth/train/callbacks/growth_schedule.py``); the operators: docs/design.md Sec. 4,
chosen by a ``GrowthOptions`` (``options.py``).

The check is exactness, except for ``depth_operator=stack`` (G_stack), which is not function-preserving:
then the grown model is checked against the *stacked* small model (so the widening is still exact) and
the report records the loss before and after instead of claiming exactness.
"""

from __future__ import annotations

import dataclasses
import math
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from accelerate import init_empty_weights

from growth.checkpoint.depth_gates import RAMP_STATE as DEPTH_RAMP_STATE
from growth.distributed.deepspeed_adapter import Moments
from growth.expand import blocks
from growth.expand.optimizer_state import grow_optimizer_state
from growth.expand.options import GrowthOptions
from growth.expand.width import GrowthError, GrowthPlan, grow_state_dict, plan_growth
from growth.model import build_model
from growth.model.config import ModelConfig
from growth.model.layer_kind import layer_kind
from growth.model.transformer import GrowthLM, init_layer, set_depth_gate
from growth.objectives.token_loss import token_loss_sum

# The run-state key of the ramp of new layers (growth/train/callbacks/depth_ramp.py reads and writes it): a grown
# checkpoint whose layers are ramped in carries {RAMP_STATE: ramp_state(...)} in its run_state.json callbacks.
RAMP_STATE = DEPTH_RAMP_STATE  # defined below expand/, where tools/generate.py reads the gates back


def ramp_state(plan: GrowthPlan, step: int) -> dict:
    """The ramp a grown checkpoint starts (m = 0 at ``step``), as the ``DepthRamp`` callback stores it."""
    return {"ramps": [{"layers": plan.ramp_layers, "steps": plan.options.ramp_steps, "start": step}]}


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


def materialize(config: ModelConfig, weights: dict[str, torch.Tensor], ramp_layers=()) -> GrowthLM:
    """A model that uses ``weights`` as its parameters (no second copy is allocated); ``ramp_layers`` get
    their depth gate at m = 0."""
    model = empty_model(config)
    model.load_state_dict(weights, strict=True, assign=True)
    if config.tie_embeddings:
        model.head.proj.weight = model.embed.weight  # assign=True replaced the shared Parameter
    for index in ramp_layers:
        set_depth_gate(model.layers, index, 0.0)
    return model


def new_layer_init(plan: GrowthPlan, seed: int):
    """Initial tensors of layers of the grown model, built one layer at a time as layers of the deeper
    stack (``init_layer``), seeded by their index: new layers, and the rows ``Role.fresh`` takes."""
    cache: dict[str, torch.Tensor] = {}

    def fresh(name: str) -> torch.Tensor:
        if name not in cache:
            index = int(name.split(".")[1])
            with torch.random.fork_rng(devices=[]):  # a growth inside a run must not move the run's RNG
                torch.manual_seed(seed + index)
                layer = init_layer(plan.new).state_dict()
            cache.clear()  # one layer at a time: names are asked for in layer order
            cache.update({f"layers.{index}.{k}": v for k, v in layer.items()})
        return cache[name]

    return fresh


def needs_init(plan: GrowthPlan, name: str) -> bool:
    """A tensor that takes (some of) its values from the grown model's own init."""
    if plan.source_name(name) is None:
        return True
    role = blocks.role_for(name, plan.new)
    return (
        role is not None
        and role.fresh
        and plan.new.head_dim != plan.old.head_dim
        and plan.options.width_operator == "tiled"
    )


def grow_state(
    old: ModelConfig,
    target: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    ema: dict | None,
    moments: Moments | None,
    probe_ids: torch.Tensor,
    options: GrowthOptions | None = None,
    tolerance: float = 1e-5,
) -> GrownState:
    """Grow ``weights`` (and ``ema``, ``moments``) from ``old`` to ``target`` with the operators of
    ``options``; raise ``GrowthError`` if the grown model's logits on ``probe_ids`` differ by more than
    ``tolerance`` × max(1, |logits|) from the small model's (from the stacked small model's for G_stack)."""
    options = options or GrowthOptions()
    plan = plan_growth(old, target, options)
    optimizer = (
        options.optimizer if moments else "reset"
    )  # report only what is done: no moments, nothing to grow
    # The small model only lives for its probe logits; then the source is read tensor by tensor.
    small = materialize(old, dict(weights)).eval()
    with torch.no_grad():
        before = small(probe_ids)
    params_before = small.num_params()
    del small
    reference = before if plan.function_preserving else _stacked_logits(plan, weights, probe_ids)
    shapes = dict(empty_model(plan.new).state_dict())
    new_layer = new_layer_init(plan, options.seed)
    fresh = {name: new_layer(name) if needs_init(plan, name) else like for name, like in shapes.items()}
    grown_weights = grow_state_dict(
        weights, plan, fresh, options.noise_std, torch.Generator().manual_seed(options.seed)
    )
    grown = materialize(plan.new, grown_weights, plan.ramp_layers).eval()
    with torch.no_grad():
        after = grown(probe_ids)
    diff, scale = (after - reference).abs().max().item(), reference.abs().max().item()
    source_diff = (after - before).abs().max().item()
    report = {
        "max_abs_logit_diff": source_diff,
        "relative_logit_diff": source_diff / max(before.abs().max().item(), 1e-12),
        "logit_scale": before.abs().max().item(),
        "tolerance": tolerance,
        "params_before": params_before,
        "params_after": grown.num_params(),
        "loss_before": _lm_loss(before, probe_ids),
        "loss_after": _lm_loss(after, probe_ids),
        "function_preserving": plan.function_preserving,
        "operators": operators_applied(plan, options.noise_std, optimizer),
        "noise_std": options.noise_std,
        "seed": options.seed,
        **_operator_report(plan),
    }
    if not plan.function_preserving:
        report["loss_change"] = report["loss_after"] - report["loss_before"]
        report["stacked_max_abs_logit_diff"] = diff  # the widening, checked against the stacked small model
    if not math.isfinite(diff) or diff > tolerance * max(1.0, scale):
        what = "the source" if plan.function_preserving else "the stacked source (depth_operator=stack)"
        raise GrowthError(
            f"the grown model differs from {what} by {diff:.3g} (> {tolerance:g} x max(1, |logits|)); "
            "nothing was written"
        )
    grown_ema = None
    if ema is not None:
        # EMA holds parameters only; buffers (DeepNorm's alpha) come from the weights.
        ema_weights = grow_state_dict(
            ChainMap(ema["weights"], weights),
            plan,
            fresh,
            options.noise_std,
            torch.Generator().manual_seed(options.seed),
        )
        grown_ema = {**ema, "weights": ema_weights}
    grown_moments = None
    if optimizer == "grown" and moments:
        grown_moments = grow_optimizer_state(moments, plan, [n for n, _ in grown.named_parameters()])
    return GrownState(plan, grown_weights, grown_ema, grown_moments, report)


def _stacked_logits(
    plan: GrowthPlan, weights: Mapping[str, torch.Tensor], probe_ids: torch.Tensor
) -> torch.Tensor:
    """G_stack at the old width (every layer the source's tensors, not copied): what the grown model must
    compute once its widening is accounted for."""
    config = dataclasses.replace(plan.old, n_layers=plan.new.n_layers)
    names = empty_model(config).state_dict()
    stacked = materialize(config, {name: weights[plan.source_name(name)] for name in names}).eval()
    with torch.no_grad():
        return stacked(probe_ids)


def _operator_report(plan: GrowthPlan) -> dict:
    options = plan.options
    out = {
        "width_operator": options.width_operator,
        "depth_operator": plan.depth_operator,
        "split": options.split,
        "noise": options.noise,
    }
    if options.split == "lemon":
        out["split_alpha"] = options.split_alpha
    if plan.ramp_layers:
        out.update(ramp_layers=plan.ramp_layers, ramp_steps=options.ramp_steps)
    return out


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return (token_loss_sum(logits[:, :-1], ids[:, 1:]) / ids[:, 1:].numel()).item()


def operators_applied(plan: GrowthPlan, noise_std: float, optimizer: str) -> list[str]:
    old, new, options = plan.old, plan.new, plan.options
    ops = []
    noise = f"zero-sum noise {noise_std:g}" + (" x each weight's RMS" if options.noise == "relative" else "")
    split = (
        f"lemon split {options.split_alpha:g} / {1 - options.split_alpha:g}"
        if options.split == "lemon"
        else "/k"
    )
    if new.d_model != old.d_model and options.width_operator == "interleaved":
        k = new.d_model // old.d_model
        ops.append(
            f"stream {old.d_model} -> {new.d_model} interleaved (Su: each channel repeated {k}x in place, "
            f"h/sqrt({k})); readers {split} x sqrt({k}) + {noise}"
        )
    elif new.d_model != old.d_model:
        k, r = divmod(new.d_model, old.d_model)
        ops.append(f"stream {old.d_model} -> {new.d_model} (k={k}, residue {r}); readers {split} + {noise}")
    ops += layer_kind(new).growth_notes(old, new, options.width_operator == "interleaved")
    if new.n_layers != old.n_layers:
        ops.append(
            f"depth {old.n_layers} -> {new.n_layers} "
            + {
                "zero": "(identity layers: zero writers)",
                "ramp": f"(ramped layers {plan.ramp_layers}: h <- m L(h) + (1 - m) h, m = 0 now, 1 after "
                f"{options.ramp_steps} optimizer steps)",
                "stack": "(G_stack: the stack repeated, layer i <- i mod "
                f"{old.n_layers}; NOT function-preserving)",
            }[plan.depth_operator]
        )
    if new.tie_embeddings and new.d_model // old.d_model > 1 and options.width_operator == "tiled":
        ops.append("tied embeddings: last norm / k")
    ops.append(
        "optimizer: Adam moments grown, step kept" if optimizer == "grown" else "optimizer: reset (re-warmup)"
    )
    return ops + plan.notes
