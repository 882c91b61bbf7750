"""``tools/expand.py``: grow a trained checkpoint on disk (``grow_state.py`` does the growing) and
write the grown checkpoint with its report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from growth.checkpoint import RunState
from growth.config import Config, load_config
from growth.errors import DataError
from growth.expand.checkpoint_io import read_source, write_grown
from growth.expand.grow_state import RAMP_STATE, grow_state, ramp_state
from growth.expand.options import GrowthOptions
from growth.expand.width import GrowthError, plan_growth


def probe_batch(
    config: Config, tokenizer: Path | None, vocab_size: int, batch: int = 4
) -> tuple[torch.Tensor, str]:
    """Validation tokens of the target config's corpus (its prepared cache entry, memory-mapped; else its
    first documents, streamed: ``corpus``), or random ids when the corpus is unavailable."""
    from growth.data.packed import default_cache_dir
    from growth.data.pipeline import probe_tokens
    from growth.data.tokenizer import Tokenizer

    seq_len = config.data.seq_len
    try:
        if tokenizer is None:
            raise DataError("no tokenizer next to the checkpoint")
        ids, source = probe_tokens(
            config.data, Tokenizer.load(tokenizer), default_cache_dir(config.data.cache_dir), batch * seq_len
        )
        if len(ids) >= batch * seq_len:
            return torch.tensor(ids[: batch * seq_len], dtype=torch.long).view(batch, seq_len), source
    except DataError:
        pass
    return torch.randint(vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0)), "random"


def expand_checkpoint(
    source: Path,
    target_config: Path,
    out: Path,
    noise_std: float = 1e-3,
    seed: int = 0,
    optimizer: str = "grown",
    tolerance: float = 1e-5,
    **operators,
) -> dict:
    """``operators``: the other ``GrowthOptions`` (depth_operator, ramp_steps, noise, split, split_alpha,
    width_operator), as ``tools/expand.py``'s flags of the same names."""
    started = time.perf_counter()
    options = GrowthOptions(noise_std=noise_std, seed=seed, optimizer=optimizer, **operators)
    src = read_source(source)
    _refuse_mid_ramp(src)
    target = load_config(target_config)
    plan = plan_growth(src.config.model, target.model, options)
    ids, probe = probe_batch(target, src.tokenizer, plan.new.vocab_size)
    grown = grow_state(
        src.config.model, target.model, src.weights, src.ema, src.moments, ids, options, tolerance
    )
    report = {
        **grown.report,
        "probe": {"source": probe, "shape": list(ids.shape)},
        "optimizer": "grown"
        if grown.moments is not None
        else ("reset" if optimizer == "reset" else "reset (the source holds no Adam moments)"),
    }
    event = growth_event(src.run_state, report, str(src.folder))
    # The data position and the schedule's step travel with the weights (train.continue_schedule).
    # No DeepSpeed files live in a grown folder: zero_stage 0, world 1 say "read nothing sharded".
    # A ramped growth hands its ramp (m = 0 now) to the run that continues it (DepthRamp, via train.init_from).
    callbacks = {RAMP_STATE: ramp_state(grown.plan, src.run_state.step)} if grown.plan.ramp_layers else {}
    run_state = dataclasses.replace(
        src.run_state,
        growth_events=[*src.run_state.growth_events, event],
        callbacks=callbacks,
        zero_stage=0,
        world_size=1,
    )
    target.model = grown.plan.new
    report["seconds"] = time.perf_counter() - started
    write_grown(out, target, grown.weights, grown.ema, grown.moments, run_state, src.tokenizer, report)
    return report


def growth_event(state: RunState, report: dict, source: str) -> dict:
    """What TensorBoard and the run state record of one growth (``growth/*`` scalars); a growth that is not
    function-preserving (G_stack) says so, with its loss before and after."""
    return {
        "source": source,
        "source_step": state.step,
        "tokens_seen": state.tokens_seen,
        "flops_seen": state.flops_seen,
        **{k: report[k] for k in GROWTH_FIGURES},
        **{k: report[k] for k in OPERATOR_FIELDS if k in report},
    }


def _refuse_mid_ramp(src) -> None:
    """A checkpoint saved while new layers were still being ramped in computes m L(h) + (1 - m) h, which its
    weights alone do not say; grow it once the ramp is over."""
    ramps = src.run_state.callbacks.get(RAMP_STATE, {}).get("ramps", [])
    left = [
        ramp["steps"] - (src.run_state.step - ramp["start"])
        for ramp in ramps
        if src.run_state.step - ramp["start"] < ramp["steps"]
    ]
    if left:
        raise GrowthError(
            f"--from {src.folder} was saved while new layers were being ramped in ({max(left)} more "
            "optimizer steps to go); train past the ramp, then grow a later checkpoint"
        )


GROWTH_FIGURES = ("loss_before", "loss_after", "params_before", "params_after", "max_abs_logit_diff")
OPERATOR_FIELDS = ("function_preserving", "depth_operator", "width_operator", "ramp_layers", "ramp_steps")
