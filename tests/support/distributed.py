"""Spawn-based harness for real multi-rank tests (in the style of OLMo-core's run_distributed_test).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` fresh processes on gloo, one thread
each, sets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_* as a launcher would, calls ``fn(world, *args)`` on
every rank and re-raises the first rank failure with its traceback. ``fn`` must be importable.

Every line a rank writes through ``sys.stdout``/``sys.stderr`` is prefixed with ``[rank N] `` (output
written straight to the file descriptors by C++ code is not). The ranks are killed, and
``TimeoutError`` raised, after ``timeout_s`` seconds (default: ``$GROWTH_TEST_TIMEOUT`` or 600).
"""

from __future__ import annotations

import io
import os
import socket
import sys
import time
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefixedStream(io.TextIOBase):
    """A text stream that writes whole lines to ``stream``, each starting with ``prefix``, flushed at once
    (so the lines of different ranks do not interleave mid-line); a partial line waits for its newline
    or for ``flush()``."""

    def __init__(self, stream, prefix: str) -> None:
        self._stream, self._prefix, self._pending = stream, prefix, ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self._stream.write("".join(f"{self._prefix}{line}\n" for line in lines))
            self._stream.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._prefix + self._pending)
            self._pending = ""
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:
        return self._stream.encoding

    @property
    def errors(self) -> str | None:
        return self._stream.errors


def _entry(rank: int, world_size: int, port: int, fn, args) -> None:
    sys.stdout = PrefixedStream(sys.stdout, f"[rank {rank}] ")
    sys.stderr = PrefixedStream(sys.stderr, f"[rank {rank}] ")
    try:
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        try:  # transition: init_distributed is moving from growth.train.distributed to growth.distributed
            from growth.distributed import init_distributed
        except ImportError:  # transition
            from growth.train.distributed import init_distributed

        world = init_distributed()
        try:
            fn(world, *args)
        finally:
            dist.destroy_process_group()
    except Exception:
        # torch's spawn wrapper re-raises this traceback in the parent; print it here too, so that the
        # rank's log shows where it failed among its other lines.
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _kill(processes) -> None:
    """SIGKILL the rank processes (and anything they started), then reap them."""
    import psutil

    for process in processes:
        if process.is_alive():
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
            except psutil.NoSuchProcess:
                pass
            process.kill()
    for process in processes:
        process.join()


def run_distributed(fn, world_size: int, *args, timeout_s: float | None = None) -> None:
    """Run ``fn(world, *args)`` on ``world_size`` spawned ranks; fail after ``timeout_s`` seconds."""
    if timeout_s is None:
        timeout_s = float(os.environ.get("GROWTH_TEST_TIMEOUT", DEFAULT_TIMEOUT_S))
    context = mp.start_processes(
        _entry, args=(world_size, free_port(), fn, args), nprocs=world_size, start_method="spawn", join=False
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                alive = [rank for rank, process in enumerate(context.processes) if process.is_alive()]
                _kill(context.processes)
                name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
                raise TimeoutError(
                    f"run_distributed({name}, world_size={world_size}) timed out after "
                    f"{timeout_s:g} s (GROWTH_TEST_TIMEOUT); killed ranks {alive}"
                )
    except BaseException:
        _kill(context.processes)  # e.g. Ctrl-C in the parent: leave no rank behind
        raise
