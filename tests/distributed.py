"""Spawn-based harness for real multi-rank tests (in the style of OLMo-core's run_distributed_test).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` fresh processes on gloo, one thread
each, sets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_* as a launcher would, calls ``fn(world, *args)`` on
every rank and re-raises the first rank failure with its traceback. ``fn`` must be importable.
"""

from __future__ import annotations

import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )
    from growth.train.distributed import init_distributed

    world = init_distributed()
    try:
        fn(world, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size: int, *args) -> None:
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, start_method="spawn")
