"""What each block buys: `python tools/bench_blocks.py [--quick] [--only deepnet,logn,...,rdrop,performer,nystrom]`.

One sub-benchmark per paper claim, each through the trainer's real path on the bundled corpus, the
same data order and budget for every arm: DeepNet depth (Post-LN / DeepNorm / Pre-LN), log-n length
extrapolation, GAU/FLASH quality, EMA, SimCSE's paper vs symmetric form, and R-Drop on the STS fine-tune;
Performer's and Nystromformer's approximation error and cost, measured on the attention kernels themselves.
Writes OUT/bench_blocks_<name>.json and .png per sub-benchmark and OUT/bench_blocks.json (all of them).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training subprocesses inherit it

import torch  # noqa: E402

from growth.bench.blocks import FULL_SEEDS, SUITES  # noqa: E402
from growth.bench.harness import machine, write_json  # noqa: E402


def selected(only: list[str]) -> list[str]:
    names = [n.strip() for item in only for n in item.split(",") if n.strip()] or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"--only {unknown[0]}: no such sub-benchmark; choose from {', '.join(SUITES)}")
    return list(dict.fromkeys(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"run only these sub-benchmarks (repeatable or comma list): {', '.join(SUITES)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings (<= 10 min in all): checks it runs, not the result",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per arm (default: 1 with --quick, else per sub-benchmark: "
        + ", ".join(f"{k} {v}" for k, v in FULL_SEEDS.items())
        + ")",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out"),
        help="folder for the JSON and PNG files (default: %(default)s)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the training runs (default: OUT/blocks)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        names = selected(args.only)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work = args.work or args.out / "blocks"
    work.mkdir(parents=True, exist_ok=True)
    combined_path = args.out / "bench_blocks.json"
    combined = json.loads(combined_path.read_text()) if combined_path.is_file() else {}
    started = time.perf_counter()
    for name in names:
        seeds = args.seeds or (1 if args.quick else FULL_SEEDS[name])
        began = time.perf_counter()
        record = SUITES[name].run(work, args.quick, seeds)
        record.update(
            seconds=time.perf_counter() - began,
            quick=args.quick,
            **machine(),
        )
        write_json(args.out / f"bench_blocks_{name}.json", record)
        SUITES[name].plot(record, args.out / f"bench_blocks_{name}.png")
        combined[name] = {
            "verdict": record["verdict"],
            "seconds": record["seconds"],
            "quick": args.quick,
            "date": record["date"],
        }
        write_json(combined_path, combined)
        v = record["verdict"]
        print(
            f"[{name}] {record['seconds']:.0f} s | reproduced: {v['reproduced']} | {v['measured']}",
            flush=True,
        )
    print(f"\n{'sub-benchmark':<11} {'reproduced':<10} seconds")
    for name in names:
        print(
            f"{name:<11} {str(combined[name]['verdict']['reproduced']):<10} {combined[name]['seconds']:.0f}"
        )
    print(
        f"total {time.perf_counter() - started:.0f} s; wrote {combined_path} and bench_blocks_<name>.json/.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
