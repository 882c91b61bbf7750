"""A stop asked for from outside (SIGTERM, SIGINT, the launcher's end), turned into a stop at a step
boundary that every rank agrees on.

How a run ends when told to (docs/reliability.md, "Stopping a run"):

- the first SIGTERM or SIGINT only records the request while the training loop runs; after the
  current optimizer step every rank calls ``agree_on_stop`` (an all-reduce, so all ranks stop after the
  same step even when only one of them was signalled), the run saves a checkpoint and exits with
  ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), the shell's convention for "ended by a signal";
- before the loop (tokenizer, data, engine) nothing is worth saving yet: the request raises
  ``StopRequested`` in the main thread at once;
- a second signal more than ``RELAY_S`` after the first exits at once (``os._exit``): checkpoints are
  published by renames (``growth/checkpoint/atomic.py``, ``complete`` then ``latest``), so whatever was
  being written stays unpublished and the next run ignores it. A second signal within ``RELAY_S`` is
  the same request relayed: Ctrl-C reaches every process of the terminal's group, and the launchers
  then send SIGTERM to their ranks (``deepspeed``'s ``launch.py``, ``torchrun``, ``accelerate``);
- DeepSpeed's single-node ``deepspeed`` runner does not pass SIGTERM on (it only does for pdsh), so
  each rank watches the launcher processes above it (``launcher_ancestors``) and treats the end of
  any of them as a SIGTERM.

Signal handlers belong to the command line (``growth/train/run.py:main`` installs them); the Python
API (``train()``) leaves the process's signals alone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

RELAY_S = 2.0  # a second signal sooner than this is the first one relayed by a launcher
WATCH_S = 0.5  # how often a rank checks that its launcher is still there
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# argv words of the launchers whose processes sit between a user (or scheduler) and the ranks
LAUNCHER_WORDS = frozenset(
    {
        "deepspeed",
        "deepspeed.launcher.launch",
        "deepspeed.launcher.runner",
        "torchrun",
        "torch.distributed.run",
        "torch.distributed.launch",
        "accelerate",
    }
)


@dataclass(frozen=True)
class StopRequest:
    signal_name: str  # "SIGTERM", "SIGINT"
    reason: str  # how the line says it: "SIGTERM", "the end of its launcher (deepspeed, pid 12)"
    at: float  # time.monotonic() of the first signal

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


class StopRequested(BaseException):
    """A stop asked for before the training loop began (a BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way takes it for a failure to recover from)."""

    def __init__(self, request: StopRequest):
        super().__init__(request.reason)
        self.request = request


class _State:
    def __init__(self) -> None:
        self.pid = -1  # the process that installed the handlers (children forked from it do not stop so)
        self.request: StopRequest | None = None
        self.deferring = False  # inside the training loop: stop at the end of the step
        self.pending_reason = ""  # set by the launcher watch before it signals this process
        self.immediate_line = ""  # what a second signal prints as it exits at once
        self.previous: dict[int, object] = {}
        self.watching = threading.Event()


_STATE = _State()


def install() -> None:
    """Catch SIGTERM and SIGINT in this (main) process and watch the launchers above it."""
    _STATE.pid, _STATE.request, _STATE.deferring = os.getpid(), None, False
    for signum in SIGNALS:
        _STATE.previous[signum] = signal.signal(signum, _handle)
    launchers = launcher_ancestors()
    if launchers:
        _STATE.watching.set()
        threading.Thread(target=_watch, args=(launchers,), name="growth-launcher-watch", daemon=True).start()


def uninstall() -> None:
    """Give the signals back (``install``'s handlers end with the command, not with the process)."""
    _STATE.watching.clear()
    for signum, previous in _STATE.previous.items():
        signal.signal(signum, previous)
    _STATE.previous.clear()
    _STATE.pid, _STATE.deferring = -1, False


def installed() -> bool:
    return _STATE.pid == os.getpid()


def defer(on: bool, immediate_line: str = "") -> None:
    """While on (the training loop), a request waits for the end of the current step; ``immediate_line``
    is what a second signal prints before it exits at once."""
    _STATE.deferring, _STATE.immediate_line = on, immediate_line


def requested() -> StopRequest | None:
    """This process's request, if any (``agree_on_stop`` makes it every rank's)."""
    return _STATE.request


def _handle(signum: int, frame) -> None:
    if os.getpid() != _STATE.pid:  # a child that inherited the handler: the default action
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    now, name = time.monotonic(), signal.Signals(signum).name
    if _STATE.request is None:
        reason, _STATE.pending_reason = _STATE.pending_reason or name, ""
        _STATE.request = StopRequest(name, reason, now)
        if not _STATE.deferring:
            raise StopRequested(_STATE.request)
        return
    if now - _STATE.request.at < RELAY_S:
        return
    if os.environ.get("RANK", "0") == "0" and _STATE.immediate_line:
        os.write(2, f"{_STATE.immediate_line.format(signal=name)}\n".encode())
    os._exit(128 + signum)


# -- agreeing on a step ----------------------------------------------------------------------------
def agree_on_stop(device: torch.device | str = "cpu") -> StopRequest | None:
    """Collective: the request if any rank has one, else None (every rank gets the same answer).

    The all-reduce carries ``128 + signal`` (0: none); the largest wins, so SIGTERM (143) outranks
    SIGINT (130). A rank that was not signalled itself says which signal reached another rank."""
    mine = _STATE.request
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return mine
    code = torch.tensor([mine.exit_code if mine else 0], dtype=torch.int32, device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    agreed = int(code.item())
    if agreed == 0:
        return None
    if mine is not None and mine.exit_code == agreed:
        return mine
    name = signal.Signals(agreed - 128).name
    return StopRequest(name, f"{name} (to another rank)", time.monotonic())


# -- the launcher's end ----------------------------------------------------------------------------
def launcher_ancestors() -> list:
    """The launcher processes (``deepspeed``, its ``launch.py``, ``torchrun``, ``accelerate``) directly
    above this one, nearest first; [] under plain ``python`` (a shell's end must not stop a run)."""
    import psutil

    found = []
    try:
        process = psutil.Process().parent()
        while process is not None and _is_launcher(process.cmdline()):
            found.append(process)
            process = process.parent()
    except (psutil.Error, OSError):
        pass
    return found


def _is_launcher(argv: list[str]) -> bool:
    words = argv[:4]
    return any(word in LAUNCHER_WORDS or Path(word).name in LAUNCHER_WORDS for word in words)


def _watch(launchers: list) -> None:
    """Poll the launchers; when one ends, signal this process as if it had sent SIGTERM itself."""
    while _STATE.watching.is_set():
        time.sleep(WATCH_S)
        for process in launchers:
            if not _STATE.watching.is_set():
                return
            if not _alive(process):
                _STATE.pending_reason = f"the end of its launcher (pid {process.pid})"
                _STATE.watching.clear()
                os.kill(os.getpid(), signal.SIGTERM)
                return


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
