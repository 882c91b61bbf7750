"""Does growth pay? The large model from scratch against the grown path, at equal compute: `python tools/bench_growth.py`.

Protocol (docs/growth_benchmark.md; logic in growth/bench/growth_protocol/): a corpus no path repeats
(default: the Python sources of this virtualenv's packages), the same data order for every path, a
3-point peak-LR sweep, scratch at 4 budgets (WSD decay branches), the grown path as one run with
`train.growth` at 3 of them, the saving at equal validation loss counting the small model and not,
over 3 seeds. Writes bench_out/bench_growth[_quick|_large].json and .png; the last line printed is
`saving_with_small: X` (the fraction of scratch's compute saved at the largest budget, mean over seeds).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from growth.bench.growth_protocol import protocol as runner
from growth.bench.growth_protocol import report, runs
from growth.bench.growth_protocol.plan import QUICK, SCALES, Protocol
from growth.bench.growth_protocol.recipe import ABLATIONS, DEFAULT


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same protocol with 4x fewer steps and one seed (<= 10 min on 2 cores)",
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="default",
        help="default: ~1M -> ~8M non-embedding parameters; large: ~3.4M -> ~27M",
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help="data.corpus for every path (default: the Python sources of this virtualenv's packages)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 3; --quick: 1)")
    parser.add_argument(
        "--base-steps",
        type=int,
        default=None,
        help="the smallest budget in large-model steps (default: 60; --quick: 15)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=None,
        help=f"share of the budget's FLOPs the small model gets before growing (default: the recipe's, {DEFAULT.fraction})",
    )
    parser.add_argument(
        "--ablation",
        action="append",
        choices=[*ABLATIONS, "all"],
        default=[],
        help="run this ablation (seed 0, the middle budget) instead of the headline comparison; repeatable",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP threads of each training process (default: %(default)s; more only on an idle machine: OpenMP threads that share a busy core spin and slow down many times)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="training processes at once (default: the usable cores / --threads, at most 8); independent runs (the LR sweep, scratch's branches, every seed, the grown runs) train side by side, each on its own cores; the numbers do not change, wall times are per run; --jobs 1: one at a time",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="folder of the runs, reused when the same run is asked again (default: OUT/growth_runs)",
    )
    parser.add_argument(
        "--expand-1b",
        action="store_true",
        help="also expand a ~0.27B checkpoint to ~1B and report its time and peak memory",
    )
    parser.add_argument(
        "--out", default="bench_out", help="folder for the JSON and PNG (default: %(default)s)"
    )
    return parser.parse_args(argv)


def build_protocol(args: argparse.Namespace) -> Protocol:
    fields = dict(QUICK) if args.quick else {}
    if args.seeds is not None:
        fields["seeds"] = tuple(range(args.seeds))
    if args.base_steps is not None:
        fields["base_steps"] = args.base_steps
    if args.corpus:
        fields["corpus"] = args.corpus
    return Protocol(scale=args.scale, **fields)


def check(protocol: Protocol, fraction: float | None = None, jobs: int = 1, threads: int = 1) -> str | None:
    from growth.data.prepare import DataError
    from growth.data.sources import resolve_files

    if protocol.base_steps < 5 or not protocol.seeds:
        return "--base-steps must be >= 5 and --seeds >= 1"
    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value < 1:
            return f"{flag} {value}: give at least 1 (e.g. --jobs 2 --threads 1 on 2 cores)"
    if fraction is not None and not 0 < fraction < 1:
        return f"--fraction {fraction}: give a share of the budget between 0 and 1 (e.g. 0.75)"
    try:
        resolve_files(protocol.corpus, key="--corpus")
    except (DataError, Exception) as err:  # the same one-line messages as data.corpus
        return f"{err}"
    return None


def default_jobs(threads: int) -> int:
    """One training process per ``threads`` usable cores (at least 1, at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, threads)))


def corpus_facts(spec: str) -> dict:
    from growth.bench.data import package_versions
    from growth.data.sources import resolve_files

    files = resolve_files(spec)
    return {
        "spec": spec,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "package_versions": package_versions(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.jobs is None:
        args.jobs = default_jobs(args.threads)
    protocol = build_protocol(args)
    if (problem := check(protocol, args.fraction, args.jobs, args.threads)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    runs.set_parallel_runs(args.jobs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "growth_runs"
    suffix = "_quick" if args.quick else "_large" if args.scale == "large" else ""
    log = lambda line: print(line, flush=True)  # noqa: E731
    names = list(ABLATIONS) if "all" in args.ablation else args.ablation
    for name in names:
        result = runner.ablation(name, protocol, work, args.threads, log)
        scratch = runner.scratch(protocol, work, protocol.seeds[0], result["lr"], args.threads, log)
        report.write_json(
            {**result, "protocol": protocol.to_json()}, out / f"bench_growth{suffix}_ablation_{name}.json"
        )
        report.plot_ablation(result, scratch["budgets"], out / f"bench_growth{suffix}_ablation_{name}.png")
        for line in report.ablation_lines(result):
            print(line)
    if names:
        return 0
    recipe = DEFAULT if args.fraction is None else DEFAULT.changed(fraction=args.fraction)
    result = runner.compare(protocol, work, args.threads, log, recipe)
    result["corpus"] = corpus_facts(protocol.corpus)
    if args.expand_1b:
        from growth.bench.expand_1b import expand_one_billion

        with tempfile.TemporaryDirectory() as scratch_dir:
            result["expand_1b"] = expand_one_billion(Path(scratch_dir))
    report.write_json(result, out / f"bench_growth{suffix}.json")
    report.plot(result, out / f"bench_growth{suffix}.png")
    for line in report.summary_lines(result):
        print(line)
    print(f"saving_with_small: {result['headline']['saving_with_small']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
