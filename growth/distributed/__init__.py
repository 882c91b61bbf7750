"""Process groups and the DeepSpeed seams, below checkpoint/, expand/, eval/ and train/ (docs/design.md Sec. 1)."""

from growth.distributed import stop_request
from growth.distributed.deepspeed_adapter import configure_environment
from growth.distributed.world import (
    World,
    agree_on_failure,
    all_reduce_sum,
    barrier,
    init_distributed,
    lost_peer,
    run_on_main,
    stop_watching_peers,
    watch_peers,
)

configure_environment()  # before anything imports DeepSpeed (accelerator, extension cache)

__all__ = [
    "World",
    "agree_on_failure",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "lost_peer",
    "run_on_main",
    "stop_request",
    "stop_watching_peers",
    "watch_peers",
]
