"""``tools/expand.py``: grow a trained checkpoint on disk (``grow_state.py`` does the growing) and
write the grown checkpoint with its report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from growth.checkpoint import RunState
from growth.config import Config, load_config
from growth.data.errors import DataError
from growth.expand.checkpoint_io import read_source, write_grown
from growth.expand.grow_state import grow_state
from growth.expand.width import plan_growth


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


def expand_checkpoint(source: Path, target_config: Path, out: Path, noise_std: float = 1e-3, seed: int = 0,
                      optimizer: str = "grown", tolerance: float = 1e-5) -> dict:
    started = time.perf_counter()
    src = read_source(source)
    target = load_config(target_config)
    plan = plan_growth(src.config.model, target.model)
    ids, probe = probe_batch(target, src.tokenizer, plan.new.vocab_size)
    grown = grow_state(src.config.model, target.model, src.weights, src.ema, src.moments, ids, noise_std, seed,
                       optimizer, tolerance)
    report = {**grown.report, "probe": {"source": probe, "shape": list(ids.shape)},
              "optimizer": "grown" if grown.moments is not None else
                           ("reset" if optimizer == "reset" else "reset (the source holds no Adam moments)")}
    event = growth_event(src.run_state, report, str(src.folder))
    # The data position and the schedule's step travel with the weights (train.continue_schedule).
    # No DeepSpeed files live in a grown folder: zero_stage 0, world 1 say "read nothing sharded".
    run_state = dataclasses.replace(src.run_state, growth_events=[*src.run_state.growth_events, event],
                                    callbacks={}, zero_stage=0, world_size=1)
    target.model = grown.plan.new
    report["seconds"] = time.perf_counter() - started
    write_grown(out, target, grown.weights, grown.ema, grown.moments, run_state, src.tokenizer, report)
    return report


def growth_event(state: RunState, report: dict, source: str) -> dict:
    """What TensorBoard and the run state record of one growth (``growth/*`` scalars)."""
    return {"source": source, "source_step": state.step, "tokens_seen": state.tokens_seen,
            "flops_seen": state.flops_seen, **{k: report[k] for k in GROWTH_FIGURES}}


GROWTH_FIGURES = ("loss_before", "loss_after", "params_before", "params_after", "max_abs_logit_diff")
