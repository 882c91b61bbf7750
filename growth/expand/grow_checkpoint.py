"""Grow a trained checkpoint into a larger model: weights, EMA and Adam moments, tensor by tensor,
with the large model built on the meta device (accelerate's ``init_empty_weights``) so it is never
allocated twice; then verify on a probe batch and write the grown checkpoint with its report."""

from __future__ import annotations

import dataclasses
from collections import ChainMap
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import init_empty_weights

from growth.config import Config, ModelConfig, load_config
from growth.data.errors import DataError
from growth.expand.checkpoint_io import read_source, write_grown
from growth.expand.optimizer_state import grow_optimizer_state
from growth.expand.width import GrowthError, GrowthPlan, grow_state_dict, plan_growth
from growth.model import build_model
from growth.model.transformer import GrowthLM
from growth.train.checkpoint import RunState
from growth.train.loss import token_loss_sum


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
            torch.manual_seed(seed + index)
            layer = build_model(dataclasses.replace(plan.new, n_layers=1)).layers[0].state_dict()
            cache.update({f"layers.{index}.{k}": v for k, v in layer.items()})
        return cache[name]

    return fresh


def probe_batch(config: Config, tokenizer: Path | None, vocab_size: int, batch: int = 4) -> tuple[torch.Tensor, str]:
    """Validation windows of the target config's corpus, or random ids when the corpus is unavailable."""
    from growth.data.corpus import read_corpus
    from growth.data.tokenizer import Tokenizer

    seq_len = config.data.seq_len
    try:
        if tokenizer is None:
            raise DataError("no tokenizer next to the checkpoint")
        text = read_corpus(config.data.corpus)
        ids = Tokenizer.load(tokenizer).encode(text[-max(20_000, 8 * batch * seq_len):])
        if len(ids) >= batch * seq_len:
            return torch.tensor(np.asarray(ids[-batch * seq_len:]), dtype=torch.long).view(batch, seq_len), "validation"
    except DataError:
        pass
    return torch.randint(vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0)), "random"


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return (token_loss_sum(logits[:, :-1], ids[:, 1:]) / ids[:, 1:].numel()).item()


def expand_checkpoint(source: Path, target_config: Path, out: Path, noise_std: float = 1e-3, seed: int = 0,
                      optimizer: str = "grown", tolerance: float = 1e-5) -> dict:
    started = time.perf_counter()
    src = read_source(source)
    target = load_config(target_config)
    plan = plan_growth(src.config.model, target.model)

    # The small model only lives for its probe logits; then the source is read tensor by tensor.
    ids, probe = probe_batch(target, src.tokenizer, plan.new.vocab_size)
    small = materialize(src.config.model, dict(src.weights)).eval()
    with torch.no_grad():
        before = small(ids)
    params_before = small.num_params()
    del small
    shapes = dict(empty_model(plan.new).state_dict())
    new_layer = identity_layer_init(plan, seed)
    fresh = {name: new_layer(name) if plan.source_name(name) is None else like for name, like in shapes.items()}
    weights = grow_state_dict(src.weights, plan, fresh, noise_std, torch.Generator().manual_seed(seed))
    grown = materialize(plan.new, weights).eval()
    with torch.no_grad():
        after = grown(ids)
    diff = (after - before).abs().max().item()
    scale = before.abs().max().item()
    report = {
        "max_abs_logit_diff": diff,
        "relative_logit_diff": diff / max(scale, 1e-12),
        "logit_scale": scale,
        "tolerance": tolerance,
        "probe": {"source": probe, "shape": list(ids.shape)},
        "params_before": params_before,
        "params_after": grown.num_params(),
        "loss_before": _lm_loss(before, ids),
        "loss_after": _lm_loss(after, ids),
        "operators": operators_applied(plan, noise_std, optimizer),
        "noise_std": noise_std,
        "seed": seed,
        "seconds": None,
    }
    if not math.isfinite(diff) or diff > tolerance * max(1.0, scale):
        raise GrowthError(f"the grown model differs from the source by {diff:.3g} (> {tolerance:g} x max(1, |logits|)); "
                          "nothing was written")

    ema = None
    if src.ema is not None:
        # EMA holds parameters only; buffers (DeepNorm's alpha) come from the weights.
        ema_source = ChainMap(src.ema["weights"], src.weights)
        ema_weights = grow_state_dict(ema_source, plan, fresh, noise_std, torch.Generator().manual_seed(seed))
        ema = {**src.ema, "weights": ema_weights}
    moments = None
    if optimizer == "grown" and src.moments:
        moments = grow_optimizer_state(src.moments, plan, [n for n, _ in grown.named_parameters()])
    event = {"source": str(src.folder), "source_step": src.run_state.step, "tokens_seen": src.run_state.tokens_seen,
             "flops_seen": src.run_state.flops_seen, "loss_before": report["loss_before"],
             "loss_after": report["loss_after"], "params_before": report["params_before"],
             "params_after": report["params_after"]}
    run_state = RunState(tokens_seen=src.run_state.tokens_seen, flops_seen=src.run_state.flops_seen,
                         growth_events=[*src.run_state.growth_events, event])
    target.model = plan.new
    report["seconds"] = time.perf_counter() - started
    write_grown(out, target, weights, ema, moments, run_state, src.tokenizer, report)
    return report


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
