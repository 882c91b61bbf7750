"""Jobs of the training-samples tests, run on every rank (importable, so spawn finds them)."""

from __future__ import annotations

from pathlib import Path

import torch

from growth.distributed import barrier
from tests.support.growth_jobs import losses_of, truncate

SAMPLING = ["train.sample_interval=2", 'train.sample_prompts=["ROMEO:", ""]']


def samples_job(world, base: list[str], root: str, result_file: str) -> None:
    """The same run without samples (A) and with them (B: every 2 steps and around the growth at step 3), both
    again under ZeRO-3, then B resumed from its checkpoint before the growth (step 2) and after it (step 4);
    rank 0 saves the losses and B's TensorBoard texts as they were before the resumes appended to them."""
    root = Path(root)
    results = {
        "plain": losses_of([*base, f"train.out_dir={root}/plain"]),
        "sampled": losses_of([*base, *SAMPLING, f"train.out_dir={root}/sampled"]),
    }
    zero3 = [*base, "train.zero_stage=3"]  # rank 0 samples what a collective gathered for it
    results["plain_zero3"] = losses_of([*zero3, f"train.out_dir={root}/plain_zero3"])
    results["sampled_zero3"] = losses_of([*zero3, *SAMPLING, f"train.out_dir={root}/sampled_zero3"])
    texts = tensorboard_texts(root / "sampled/tensorboard") if world.is_main else {}
    for keep in (4, 2):
        if world.is_main:
            truncate(root / "sampled", keep)
        barrier()
        results[f"resumed_from_{keep}"] = losses_of([*base, *SAMPLING, f"train.out_dir={root}/sampled"])
    if world.is_main:
        torch.save({**results, "texts": texts}, result_file)


def tensorboard_texts(folder: Path) -> dict[str, dict[int, str]]:
    """{tag: {step: text}} of the text summaries under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {
        tag.removesuffix("/text_summary"): {
            event.step: event.tensor_proto.string_val[0].decode() for event in events.Tensors(tag)
        }
        for tag in events.Tags()["tensors"]
        if tag.endswith("/text_summary")
    }
