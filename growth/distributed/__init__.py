"""Process groups and the DeepSpeed seams, below checkpoint/, expand/, eval/ and train/ (docs/design.md Sec. 1)."""

from growth.distributed.world import World, all_reduce_sum, barrier, init_distributed

__all__ = ["World", "all_reduce_sum", "barrier", "init_distributed"]
