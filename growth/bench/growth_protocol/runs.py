"""The growth benchmark's runs on the harness's run cache (``growth/bench/harness.py``: one process per run,
cached in ``<work>/<label>-<digest of its config>``, resumed when killed), plus the two kinds of run only
this benchmark needs.

Scratch budgets are decay branches of one WSD run (Hägele et al. 2024): the main run saves where each smaller
budget starts to decay, and each branch resumes that checkpoint with its own ``train.max_steps``, so it decays
over its last ``decay_fraction`` of steps. ``restarted`` is the old flow, one run per phase.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from growth.bench.harness import (  # noqa: F401  (re-exported: the protocols call them as ``runs.*``)
    Log,
    Run,
    cached,
    digest,
    exclusive,
    finish,
    in_parallel,
    launch,
    read_run_events,
    set_parallel_runs,
)
from growth.bench.harness import train_cached as train


def branch(
    work: Path,
    label: str,
    main: Run,
    main_config: dict,
    max_steps: int,
    decay_steps: int,
    threads: int,
    log=print,
    evals: int = 4,
) -> Run:
    """The main run's checkpoint at ``max_steps - decay_steps``, resumed with ``train.max_steps=max_steps``:
    the same run up to there, then its own decay, evaluated ``evals`` times in it (the last at its end)."""
    start = max_steps - decay_steps
    interval = max(1, decay_steps // 4)  # the branch logs inside its own decay
    config = {
        **main_config,
        "train": {
            **main_config["train"],
            "max_steps": max_steps,
            "log_interval": interval,
            "eval_interval": max(1, decay_steps // evals),
            # the main run's branch points lie outside a branch (key left out where unused: older runs' digests)
            **({"save_steps": []} if main_config["train"].get("save_steps") else {}),
            "decay_fraction": decay_steps / max_steps,
        },
    }
    folder = work / f"{label}-{digest(config)}"
    with exclusive(folder):
        if (run := cached(folder)) is not None:
            return run
        tag = f"step_{start:08d}"
        source = Path(main.folder) / "checkpoints" / tag
        if not (source / "complete").is_file():
            raise RuntimeError(f"{main.folder} has no complete checkpoint at step {start} to branch from")
        target = folder / "checkpoints" / tag
        if not target.exists():
            target.mkdir(parents=True)
            for item in source.iterdir():  # hard links: a resume only reads these, new steps get new tags
                os.link(item, target / item.name)
            (folder / "checkpoints/latest").write_text(tag)
            for name in ("tokenizer.model",):
                if (Path(main.folder) / name).exists() and not (folder / name).exists():
                    os.link(Path(main.folder) / name, folder / name)
        launch(folder, config, threads, log)
        val, seconds, extra = read_run_events(folder, start)
        before = [(s, v) for s, v in main.val if s <= start]
        offset = main.seconds_at(start)
        return finish(
            folder,
            config,
            before + [(s, v) for s, v in val if s > start],
            [(s, t) for s, t in main.seconds if s <= start] + [(s, offset + t) for s, t in seconds],
            **extra,
        )


def with_branches(
    work: Path,
    label: str,
    main_config: dict,
    points: dict[int, tuple[int, int]],
    threads: int,
    log: Log,
    evals: int = 4,
) -> dict[int, Run]:
    """One WSD main run to the largest of ``points`` (multiple -> (max_steps, decay steps)) and a decay branch
    of it at each other (``<label>-b<multiple>``, side by side); the finished run of each multiple."""
    largest = max(points)
    main = train(work, label, main_config, threads, log)
    calls = {
        m: lambda m=m: branch(work, f"{label}-b{m}", main, main_config, *points[m], threads, log, evals=evals)
        for m in points
        if m != largest
    }
    return {**in_parallel(calls), largest: main}


def check_flops(run: Run, planned: float) -> None:
    """The trainer's own FLOP count must be the plan's (a mismatch means the plan reads another model)."""
    if abs(run.flops_seen - planned) > 1e-9 * planned:
        raise RuntimeError(
            f"{run.folder}: the trainer counted {run.flops_seen:.6e} FLOPs, the plan {planned:.6e}"
        )


def restarted(
    work: Path, label: str, phase_configs: list[dict], stage_options: list[dict], threads: int, log=print
) -> Run:
    """The old flow: each phase its own run with its own schedule (warmup to the peak, cosine over the
    phase), grown between phases by ``tools/expand.py``'s function and started with ``train.init_from``
    (the data order continues where the previous phase stopped)."""
    from growth.expand.grow_checkpoint import expand_checkpoint

    val, seconds, offset, clock, source = [], [], 0, 0.0, None
    for index, (config, options) in enumerate(zip(phase_configs, [{}] + stage_options)):
        if source is not None:
            grown = (
                work / f"{label}-grown{index}-{digest({'from': source.folder, **options, **config['model']})}"
            )
            if not (grown / "complete").exists() and not (grown / "model.safetensors").exists():
                target = work / f"{grown.name}.yaml"
                target.write_text(yaml.safe_dump({"model": config["model"]}))
                expand_checkpoint(Path(source.folder), target, grown, **options)
            config = {**config, "train": {**config["train"], "init_from": str(grown)}}
        source = train(work, f"{label}-phase{index}", config, threads, log)
        val += [(s + offset, v) for s, v in source.val]
        seconds += [(s + offset, t + clock) for s, t in source.seconds]
        offset, clock = offset + source.steps, clock + source.seconds[-1][1]
    return Run(source.folder, offset, source.flops_seen, val, seconds)
