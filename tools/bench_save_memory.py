"""Peak memory of a ZeRO-3 checkpoint save on 2 ranks: `python tools/bench_save_memory.py [--out DIR]`.

Writes DIR/save_memory.json (default bench_out/) and prints each rank's rise in resident memory
during the save against the model's fp32 size.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from growth.bench.harness import write_json
from growth.bench.save_memory import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out"),
        help="folder for save_memory.json (default: %(default)s)",
    )
    parser.add_argument("--ranks", type=int, default=2, help="gloo ranks (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="save_memory_") as work:
        result = run(args.ranks, Path(work))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "save_memory.json", result)
    mb = 1 / 2**20
    for rank in result["ranks"]:
        print(
            f"rank {rank['rank']}: save raised RSS by {rank['save_rise_bytes'] * mb:,.0f} MiB "
            f"(model fp32 {result['fp32_model_bytes'] * mb:,.0f} MiB, largest tensor "
            f"{result['largest_param_bytes'] * mb:,.0f} MiB), {rank['save_seconds']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
