"""The one way a benchmark runs the project and reads what it did.

- **Processes**: ``run_command`` runs a command from the repository root with this tree first on
  ``PYTHONPATH``; ``run_trainer`` is the trainer's real path (``launch/pretrain.py``, one process or under the
  DeepSpeed launcher), ``run_python`` a measurement in a fresh process that prints its JSON result last.
- **Curves**: ``scalars`` and ``curve`` read a run's TensorBoard events (one ``EventAccumulator``, every point).
- **The run cache**: ``train_cached`` trains a full YAML config once, in ``<work>/<label>-<digest>``; a finished
  run is read back from its ``bench_result.json``, a killed one resumes (``train.resume=auto``).
  ``in_parallel`` runs independent calls at once, ``set_parallel_runs`` bounds the training processes.
- **Output**: ``write_json`` writes a record atomically; ``machine`` and ``package_versions`` say where it ran.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository root (launch/, tools/, configs/)
RESULT = "bench_result.json"
T = TypeVar("T")
Log = Callable[[str], None]


# -- processes ------------------------------------------------------------------------------------------
def subprocess_env(threads: int | None = None) -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH`` (and ``threads`` OpenMP threads)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}


def run_command(
    cmd: Sequence[str], threads: int | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """``cmd`` from the repository root, output captured; a failure raises with its stderr's tail."""
    result = subprocess.run(
        list(cmd), cwd=ROOT, env=subprocess_env(threads), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        shown = " ".join(a if len(a) < 200 else a[:60] + "..." for a in map(str, cmd))  # not -c's code
        raise RuntimeError(f"{shown} failed:\n{result.stderr[-3000:]}")
    return result


def run_python(args: Sequence[str], threads: int | None = None, timeout: float | None = None) -> dict:
    """``python ARGS`` (``-c CODE ...`` or ``-m MODULE ...``) in a fresh process; its last stdout line as JSON."""
    result = run_command([sys.executable, *args], threads, timeout)
    return json.loads(result.stdout.strip().splitlines()[-1])


def pretrain_command(n_procs: int | None = None, port: int = 29500) -> list[str]:
    """``python launch/pretrain.py``, or under the DeepSpeed launcher with ``n_procs`` ranks."""
    script = str(ROOT / "launch/pretrain.py")
    if n_procs is None:
        return [sys.executable, script]
    launcher = str(Path(sys.executable).parent / "deepspeed")
    return [launcher, "--num_gpus", str(n_procs), "--master_port", str(port), script]


def run_trainer(
    out_dir: Path,
    overrides: Sequence[str],
    config: Path | None = None,
    threads: int | None = None,
    n_procs: int | None = None,
    port: int = 29500,
) -> float:
    """``launch/pretrain.py [--config CONFIG] train.out_dir=OUT_DIR OVERRIDES`` (under the DeepSpeed launcher
    with ``n_procs`` ranks, each given an equal share of the cores); returns its wall seconds."""
    if n_procs is not None and threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_procs)
    cmd = [
        *pretrain_command(n_procs, port),
        *(["--config", str(config)] if config else []),
        f"train.out_dir={out_dir}",
        *overrides,
    ]
    started = time.perf_counter()
    run_command(cmd, threads)
    return time.perf_counter() - started


def train(out_dir: Path, overrides: Sequence[str], config: Path | None = None, **process: Any) -> float:
    """A fresh run (``train.resume=none``) of ``run_trainer`` (``process``: its threads, n_procs, port)."""
    return run_trainer(out_dir, ["train.resume=none", *overrides], config, **process)


# -- curves ---------------------------------------------------------------------------------------------
def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})  # every point
    events.Reload()
    return events


def scalar_events(run_dir: Path, tag: str) -> list:
    """Every event (``step``, ``value``, ``wall_time``) of one scalar; empty when the run never logged it."""
    if not (run_dir / "tensorboard").is_dir():
        return []
    events = _events(run_dir)
    return events.Scalars(tag) if tag in events.Tags()["scalars"] else []


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard scalar; empty when the run never logged it."""
    return [(e.step, e.value) for e in scalar_events(run_dir, tag)]


def curve(run_dir: Path) -> list[dict[str, float]]:
    """(step, FLOPs seen, val loss, seconds since the run's first logged step) at every evaluation; [] if none."""
    flops = dict(scalars(run_dir, "train/flops_seen"))
    losses = scalar_events(run_dir, "train/loss")
    if not losses:
        return []
    start = min(e.wall_time for e in losses)
    return [
        {"step": e.step, "flops": flops[e.step], "val_loss": e.value, "seconds": e.wall_time - start}
        for e in scalar_events(run_dir, "val/loss")
        if e.step in flops
    ]


# -- the run cache --------------------------------------------------------------------------------------
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
def exclusive(folder: Path):
    """One thread at a time per run folder: a run asked twice at once trains once, the second reads it."""
    with _folder_locks_guard:
        lock = _folder_locks.setdefault(str(folder), threading.Lock())
    with lock:
        yield


def digest(config: dict) -> str:
    """The run cache's key: a hash of the whole config (a change anywhere is another run)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


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
        return extrapolate(self.seconds, step)


def extrapolate(points: list[tuple[int, float]], x: int) -> float:
    """Piecewise-linear through ``points``, continued past the last one along the last segment."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


def read_run_events(folder: Path, start_step: int) -> tuple[list, list, dict]:
    """(step, val loss), (step, seconds since ``start_step``), and the last evaluation's standard error."""
    val = scalars(folder, "val/loss")
    loss_se = scalars(folder, "val/loss_se")
    extra = {"loss_se": loss_se[-1][1]} if loss_se else {}
    wall = [(e.step, e.wall_time) for e in scalar_events(folder, "train/loss")]
    if len(wall) >= 2:  # the clock at ``start_step``: the first logged interval extended backwards
        (s0, w0), (s1, w1) = wall[0], wall[1]
        wall = [(start_step, w0 - (w1 - w0) / (s1 - s0) * (s0 - start_step))] + wall
    else:
        wall = [(start_step, wall[0][1] - 1e-9)] + wall
    return val, [(s, w - wall[0][1]) for s, w in wall], extra


def launch(folder: Path, config: dict, threads: int, log: Log) -> None:
    """Write ``config`` into ``folder`` and train it there (resuming what is there), once a slot is free."""
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "bench_config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    with _slots:
        seconds = run_trainer(folder, ["train.resume=auto"], config_file, threads)
    log(f"  {folder.name}: {config['train']['max_steps']} steps in {seconds:.0f} s")


def _flops_seen(folder: Path) -> float:
    latest = (folder / "checkpoints/latest").read_text().strip()
    return json.loads((folder / "checkpoints" / latest / "run_state.json").read_text())["flops_seen"]


def finish(folder: Path, config: dict, val, seconds, **extra) -> Run:
    """The finished run, also written to its folder's result file (what ``cached`` reads back)."""
    run = Run(str(folder), config["train"]["max_steps"], _flops_seen(folder), val, seconds, extra)
    write_json(folder / RESULT, run.__dict__, indent=None, nan_as_null=False)
    return run


def cached(folder: Path) -> Run | None:
    """The run finished in ``folder`` earlier, or None."""
    path = folder / RESULT
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    pairs = {key: [tuple(p) for p in data[key]] for key in ("val", "seconds")}
    return Run(data["folder"], data["steps"], data["flops_seen"], **pairs, extra=data.get("extra", {}))


def train_cached(work: Path, label: str, config: dict, threads: int, log: Log = print) -> Run:
    """One run of ``config`` (a full YAML config as a dict), cached by its digest."""
    folder = work / f"{label}-{digest(config)}"
    with exclusive(folder):
        if (run := cached(folder)) is not None:
            return run
        launch(folder, config, threads, log)
        val, seconds, extra = read_run_events(folder, 0)
        return finish(folder, config, val, seconds, **extra)


# -- output ---------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What a benchmark's record says about where it ran."""
    import platform

    import torch

    return {
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def package_versions() -> dict[str, str]:
    """Every installed distribution's version, by name."""
    from importlib import metadata

    found = ((d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"])
    return dict(sorted(found))


def write_json(path: Path, record: Any, indent: int | None = 2, nan_as_null: bool = True) -> None:
    """JSON written atomically (temporary name, then rename); NaN becomes null (unless ``nan_as_null`` is
    False: the run cache reads its NaN back), other objects their ``str``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(record) if nan_as_null else record, indent=indent, default=str))
    tmp.replace(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
