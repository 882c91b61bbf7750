"""What each block buys (``tools/bench_blocks.py``): one sub-benchmark per paper claim, each a module
with ``NAME``, ``run(work, quick, seeds) -> record`` (the record holds its row of the claims table in
docs/blocks.md, with a ``verdict``) and ``plot(record, path)``."""

from growth.bench.blocks import deepnet, ema, gau_flash, logn, nystrom, performer, rdrop, simcse

SUITES = {
    module.NAME: module for module in (deepnet, logn, gau_flash, ema, simcse, rdrop, performer, nystrom)
}
# Seeds of the full mode where an effect is small (--seeds overrides; --quick runs one).
FULL_SEEDS = {
    "deepnet": 1,
    "logn": 2,
    "gau_flash": 1,
    "ema": 2,
    "simcse": 2,
    "rdrop": 2,
    "performer": 8,
    "nystrom": 2,
}
