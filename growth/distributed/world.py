"""Launcher-agnostic process-group setup: deepspeed, torchrun, accelerate, plain python, multi-node.

Every launcher exports RANK / LOCAL_RANK / WORLD_SIZE (plain ``python`` gets a one-process world);
``deepspeed.init_distributed`` picks NCCL on GPUs and gloo on CPU by itself.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from growth.distributed import stop_request


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> World:
    if "RANK" not in os.environ:  # plain `python launch/pretrain.py`: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.cuda.is_available():
        # Two ranks on two cores: one thread each, or they fight over the cores (docs/design.md Sec. 6).
        threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or max(
            1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])
        )
        torch.set_num_threads(threads)
    # torch.distributed's deprecation notices for calls DeepSpeed makes, once per call: noise in a run log.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    import deepspeed  # deferred: importing it is slow and tests of other parts do not need it

    if not dist.is_initialized():
        from growth.distributed.deepspeed_adapter import quiet_stdout, unlink_shm_workspace

        with quiet_stdout():
            deepspeed.init_distributed(verbose=False)
        barrier()  # every rank has mapped every peer's shared-memory workspace: the names can go
        unlink_shm_workspace(dist.get_rank())
    world = World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    return world


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# -- agreeing on a failure ---------------------------------------------------------------------------
# A check that fails on one rank (rank 0 writes the run directory, trains the tokenizer, verifies a
# checkpoint) must stop every rank with one line, not leave the others waiting in a collective until
# the process group breaks with "Connection closed by peer". Two helpers:
#   - ``run_on_main(world, fn)``: a collective; rank 0 runs ``fn``, every rank gets its result or
#     raises its error, so a check rank 0 makes fails on every rank alike;
#   - ``watch_peers(world)`` + ``agree_on_failure(world, line)``: for a failure anywhere else (in any
#     collective the other ranks wait in), the failing rank flags it in the launcher's TCP store and a
#     watcher thread on every other rank ends that rank quietly with exit code 2 (``PEER_FAILED``);
#     the line is printed once: by rank 0 if it failed, else by the first rank that flagged a failure.
PEER_FAILED = 2
POLL_S = 0.25


def run_on_main(world: World, fn):
    """Collective: run ``fn()`` on rank 0 only (also a barrier). Every rank returns its result, or
    raises the exception it raised (the same object, pickled across)."""
    if not (dist.is_initialized() and world.size > 1):
        return fn()
    outcome: list = [None]
    if world.is_main:
        try:
            outcome[0] = (True, fn())
        except Exception as error:  # noqa: BLE001 - handed to every rank
            outcome[0] = (False, error)
    dist.broadcast_object_list(outcome, src=0)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class _PeerWatch:
    """A thread that polls the launcher's store for a failure flagged by another rank.

    Keys (under a per-launch prefix): ``count`` (failures flagged), ``done`` (failing ranks that have
    printed or decided to stay quiet), ``failed/<rank>``, ``ack/<rank>`` (a healthy rank saw it)."""

    def __init__(self, world: World):
        import threading
        from datetime import timedelta

        self.world = world
        self.store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=30),
            wait_for_workers=False,
        )
        self.prefix = f"growth/failure/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.failed_here, self.stopped = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._watch, name="growth-peer-watch", daemon=True)
        self.thread.start()

    def key(self, kind: str, rank: int | None = None) -> str:
        return f"{self.prefix}{kind}" + (f"/{rank}" if rank is not None else "")

    def count(self, kind: str) -> int:
        return self.store.add(self.key(kind), 0)

    def has(self, kind: str, rank: int) -> bool:
        return self.store.check([self.key(kind, rank)])

    def _watch(self) -> None:
        import sys
        import time

        interval = POLL_S * max(1.0, self.world.size / 64)  # one store request per interval per rank
        while not self.stopped.wait(interval):
            try:
                if not self.count("count") or self.failed_here.is_set() or self.stopped.is_set():
                    continue
                self.store.set(self.key("ack", self.world.rank), "1")
                deadline = (
                    time.monotonic() + 5.0
                )  # let the failing rank print before the launcher reaps us all
                while self.count("done") < self.count("count") and time.monotonic() < deadline:
                    time.sleep(POLL_S / 5)
            except Exception:  # noqa: BLE001 - the store's host is gone: nothing more to learn here
                return
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(PEER_FAILED)  # another rank failed and says why; this one stops quietly

    def flag(self) -> int:
        """Flag this rank's failure; returns how many ranks have flagged one (1: this rank was first)."""
        self.store.set(self.key("failed", self.world.rank), "1")
        return self.store.add(self.key("count"), 1)

    def done(self) -> None:
        self.store.add(self.key("done"), 1)


_WATCH: _PeerWatch | None = None


def watch_peers(world: World) -> None:
    """Start watching for other ranks' failures (a no-op in a world of one)."""
    global _WATCH
    if _WATCH is None and world.size > 1 and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        try:
            _WATCH = _PeerWatch(world)
        except Exception:  # noqa: BLE001 - no store to reach: failures fall back to the process group's own errors
            _WATCH = None


def stop_watching_peers() -> None:
    """Stop the watcher and wait for it: a daemon thread still inside a store call (C++, GIL released)
    when the interpreter exits is unwound by a forced ``pthread_exit`` through a ``noexcept`` frame, and
    the process aborts with "terminate called without an active exception" (exit -6) after a run that
    succeeded."""
    global _WATCH
    if _WATCH is not None:
        _WATCH.stopped.set()
        _WATCH.thread.join(timeout=35.0)  # a store call gives up after its 30 s timeout
        _WATCH = None


def agree_on_failure(world: World | None, line: str | None, wait_s: float = 10.0) -> None:
    """This rank failed: print ``line`` if this rank is the one to say it, and stop the other ranks.

    Rank 0 prints its own failure at once; another rank prints only if it was the first to flag one
    and rank 0 has not failed too (it waits until rank 0 either flags a failure or acknowledges this
    one). A healthy rank's watcher waits until the failing ranks have printed before it exits, so a
    launcher that kills the rest when one rank exits cannot swallow the line. Before ``init_distributed`` (``world`` None) every
    rank fails alike: RANK 0 prints, the others wait a moment (for it to print) and stay quiet."""
    import sys
    import time

    # Once a rank has failed, the launcher ends the others with SIGTERM, maybe while this one waits below:
    # from here on a stop signal is only noted (stop_request), not raised as a traceback over the one line.
    stop_request.defer(True)
    said = []

    def say() -> None:
        if line is not None and not said:
            print(line, file=sys.stderr, flush=True)
        said.append(True)

    watch = _WATCH
    if world is None or world.size == 1 or watch is None:
        if world is not None or os.environ.get("RANK", "0") == "0":
            say()
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            time.sleep(1.0)
        return
    watch.failed_here.set()
    try:
        if world.is_main:
            say()
            watch.flag()
            watch.done()
            deadline = time.monotonic() + wait_s
            others = [rank for rank in range(world.size) if rank != world.rank]
            while others and time.monotonic() < deadline:  # the store lives in this process under deepspeed
                others = [r for r in others if not (watch.has("ack", r) or watch.has("failed", r))]
                time.sleep(POLL_S / 5)
            return
        quiet, deadline = watch.flag() > 1, time.monotonic() + wait_s / 2  # a rank that failed first says it
        while time.monotonic() < deadline:
            if watch.has("failed", 0):
                quiet = True  # rank 0 failed as well and says it
                break
            if watch.has("ack", 0):
                break  # rank 0 stopped because of this rank: say it here
            time.sleep(POLL_S / 5)
        if not quiet:
            say()
        watch.done()
    except Exception:  # noqa: BLE001 - the store is gone with rank 0, its host: rank 1 says it
        if world.rank <= 1:
            say()


# What a collective raises when a peer process is gone (gloo: "Connection closed by peer" / "reset
# by peer"; NCCL: an aborted communicator); checked by message, as gloo raises a bare RuntimeError.
PEER_LOSS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited",
)


def lost_peer(error: BaseException, world: World | None) -> str:
    """The cause (one short phrase) if ``error`` says another rank's process is gone, else ""."""
    if world is None or world.size == 1 or not isinstance(error, RuntimeError):
        return ""
    text = str(error)
    return next((phrase for phrase in PEER_LOSS if phrase in text), "")
