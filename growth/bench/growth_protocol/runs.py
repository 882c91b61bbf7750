"""The trainer's real runs behind every path, one process each (``launch/pretrain.py``).

Every run lives in ``<work>/<label>-<digest of its config>``: a finished one is read back instead of
retrained (the ablations reuse the protocol's scratch runs), a killed one resumes from its last
checkpoint (``train.resume=auto``). Scratch budgets are decay branches of one WSD run (Hägele et al.
2024): the main run saves where each smaller budget starts to decay, and each branch resumes that
checkpoint with its own ``train.max_steps``, so it decays over its last ``decay_fraction`` of steps.

Independent runs can train at the same time (``in_parallel``; ``set_parallel_runs`` bounds how many
training processes run at once, 1 by default): each is its own process with its own data order and
seed, so its numbers do not depend on what runs beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from growth.bench.trainer_process import run_trainer

RESULT = "bench_result.json"
T = TypeVar("T")

_slots = threading.BoundedSemaphore(1)  # training processes allowed at once
_folder_locks: dict[str, threading.Lock] = {}
_folder_locks_guard = threading.Lock()


def set_parallel_runs(jobs: int) -> None:
    """At most ``jobs`` training processes at once (give each its own core: ``--threads`` x ``jobs``)."""
    global _slots
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    _slots = threading.BoundedSemaphore(jobs)


def in_parallel(calls: Mapping[Hashable, Callable[[], T]]) -> dict[Hashable, T]:
    """Every call at once, each in a thread (the processes they start wait for a slot, in order of
    asking); their results by key. Once all have finished, a failed call's error is raised."""
    if len(calls) < 2:
        return {key: call() for key, call in calls.items()}
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {key: pool.submit(call) for key, call in calls.items()}
    return {key: future.result() for key, future in futures.items()}


@contextmanager
def _exclusive(folder: Path):
    """One thread at a time per run folder: a run asked twice at once trains once, the second reads it."""
    with _folder_locks_guard:
        lock = _folder_locks.setdefault(str(folder), threading.Lock())
    with lock:
        yield


@dataclass
class Run:
    """A finished run: validation loss and elapsed training seconds at its evaluation steps."""

    folder: str
    steps: int
    flops_seen: float
    val: list[tuple[int, float]]  # (step, validation loss)
    seconds: list[tuple[int, float]]  # (step, training seconds since the run's first step)
    extra: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.val[-1][1]

    def seconds_at(self, step: int) -> float:
        return _interpolate(self.seconds, step)


def _interpolate(points: list[tuple[int, float]], x: int) -> float:
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


def digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def _read_events(folder: Path, start_step: int) -> tuple[list, list, dict]:
    """(step, val loss), (step, seconds since ``start_step``), and the last evaluation's standard error."""
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    val = [(e.step, e.value) for e in events.Scalars("val/loss")]
    extra = (
        {"loss_se": events.Scalars("val/loss_se")[-1].value}
        if "val/loss_se" in events.Tags()["scalars"]
        else {}
    )
    wall = [(e.step, e.wall_time) for e in events.Scalars("train/loss")]
    if len(wall) >= 2:  # the clock at ``start_step``: the first logged interval extended backwards
        (s0, w0), (s1, w1) = wall[0], wall[1]
        wall = [(start_step, w0 - (w1 - w0) / (s1 - s0) * (s0 - start_step))] + wall
    else:
        wall = [(start_step, wall[0][1] - 1e-9)] + wall
    return val, [(s, w - wall[0][1]) for s, w in wall], extra


def _launch(folder: Path, config: dict, threads: int, log) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "bench_config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    with _slots:
        seconds = run_trainer(folder, ["train.resume=auto"], config_file, threads)
    log(f"  {folder.name}: {config['train']['max_steps']} steps in {seconds:.0f} s")


def _flops_seen(folder: Path) -> float:
    latest = (folder / "checkpoints/latest").read_text().strip()
    return json.loads((folder / "checkpoints" / latest / "run_state.json").read_text())["flops_seen"]


def _finish(folder: Path, config: dict, val, seconds, **extra) -> Run:
    run = Run(str(folder), config["train"]["max_steps"], _flops_seen(folder), val, seconds, extra)
    tmp = folder / (RESULT + ".tmp")
    tmp.write_text(json.dumps(run.__dict__))
    tmp.replace(folder / RESULT)
    return run


def _cached(folder: Path) -> Run | None:
    path = folder / RESULT
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Run(
        data["folder"],
        data["steps"],
        data["flops_seen"],
        [tuple(p) for p in data["val"]],
        [tuple(p) for p in data["seconds"]],
        data.get("extra", {}),
    )


def train(work: Path, label: str, config: dict, threads: int, log=print) -> Run:
    """One run of ``config`` (a full YAML config as a dict), cached by its digest."""
    folder = work / f"{label}-{digest(config)}"
    with _exclusive(folder):
        if (run := _cached(folder)) is not None:
            return run
        _launch(folder, config, threads, log)
        val, seconds, extra = _read_events(folder, 0)
        return _finish(folder, config, val, seconds, **extra)


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
    with _exclusive(folder):
        if (run := _cached(folder)) is not None:
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
        _launch(folder, config, threads, log)
        val, seconds, extra = _read_events(folder, start)
        before = [(s, v) for s, v in main.val if s <= start]
        offset = main.seconds_at(start)
        return _finish(
            folder,
            config,
            before + [(s, v) for s, v in val if s > start],
            [(s, t) for s, t in main.seconds if s <= start] + [(s, offset + t) for s, t in seconds],
            **extra,
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
