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
        threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"]))
        torch.set_num_threads(threads)
    # torch.distributed's deprecation notices for calls DeepSpeed makes, once per call: noise in a run log.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    import deepspeed  # deferred: importing it is slow and tests of other parts do not need it

    if not dist.is_initialized():
        deepspeed.init_distributed(verbose=False)
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
