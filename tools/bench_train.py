"""Training throughput of the default config on 1 and 2 ranks: `python tools/bench_train.py [--steps N]`.

Prints tokens/s per world size and the scaling ratio; writes bench_out/bench_train.json.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from growth.bench.harness import machine, write_json
from growth.bench.train_throughput import measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=60, help="training steps per world size (default: %(default)s)"
    )
    parser.add_argument(
        "--world-sizes", type=int, nargs="+", default=[1, 2], help="ranks to compare (default: %(default)s)"
    )
    parser.add_argument("--out", default="bench_out", help="folder for the JSON (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.zero_stage=2")
    args = parser.parse_args()
    overrides = [
        f"train.max_steps={args.steps}",
        "train.log_interval=1",
        f"train.eval_interval={args.steps}",
        f"train.save_interval={args.steps}",
        *args.overrides,
    ]
    with tempfile.TemporaryDirectory() as work:
        results = measure(args.world_sizes, overrides, Path(work))
    print(f"{'ranks':>5} {'tokens/s':>10} {'TFLOP/s':>8}")
    for n, r in results.items():
        print(f"{n:>5} {r['tokens_per_s']:>10,.0f} {r['tflops']:>8.4f}")
    base = results[args.world_sizes[0]]["tokens_per_s"]
    for n in args.world_sizes[1:]:
        print(f"{n} ranks / {args.world_sizes[0]} rank tokens/s: {results[n]['tokens_per_s'] / base:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "results": results,
        "overrides": overrides,
        **machine(),
    }
    write_json(out / "bench_train.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
