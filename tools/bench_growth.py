"""Does growth pay against the best model of any size? `python tools/bench_growth.py`.

The envelope protocol (docs/growth_benchmark.md; logic in growth/bench/growth_protocol/envelope.py): scratch at
three sizes (small, middle, large), each with its own swept peak LR and a fully decayed schedule at every
budget; the compute-optimal envelope (the lower hull of all of them) and a fitted L(N, D); the grown path (one
run with `train.growth`, small -> large) at every budget past the small/large crossover, on the same data order;
`saving_vs_envelope` = 1 - C_envelope(L_grown) / C_grown per budget, over 3 seeds with a 95% interval. Writes
bench_out/bench_growth_envelope[_quick].json and .png; the last line printed is `saving_vs_envelope: X` (the
largest budget, mean over seeds).

`--large-only` runs the earlier protocol instead (the grown path against the large model alone, README's
secondary table; `--scale`, `--fraction`, `--ablation` belong to it).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from growth.bench.growth_protocol import envelope, envelope_report, report, runs
from growth.bench.growth_protocol import protocol as runner
from growth.bench.growth_protocol.envelope_plan import PRESETS, from_options
from growth.bench.growth_protocol.plan import QUICK, SCALES, Protocol
from growth.bench.growth_protocol.recipe import ABLATIONS, DEFAULT
from growth.bench.harness import write_json
from growth.bench.plotting import MissingPlotting


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the envelope protocol on the quick preset's 4x smaller sizes, one seed (~15 min on 2 cores); with "
        "--large-only: that protocol with 4x fewer steps and one seed",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="the envelope's sizes and budgets: default (~0.2M -> ~1.1M FLOP-counted parameters, 2 CPU cores), "
        "quick, gpu (~3.9M -> ~29M)",
    )
    parser.add_argument(
        "--small", default=None, help="the small model's shape, e.g. d_model=64,n_layers=2,n_heads=2"
    )
    parser.add_argument(
        "--large", default=None, help="the large model's shape (the middle size is derived between them)"
    )
    parser.add_argument(
        "--growth-at",
        type=float,
        default=None,
        help="budget units of FLOPs the small model trains before growing (default: the preset's)",
    )
    parser.add_argument(
        "--large-only",
        action="store_true",
        help="the earlier protocol: the grown path against the large model alone (README's secondary table)",
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
        choices=sorted({*ABLATIONS, *envelope.ABLATIONS, "all"}),
        default=[],
        help=f"run this recipe ablation (seed 0) instead of the headline comparison; repeatable. Envelope: "
        f"{', '.join(envelope.ABLATIONS)}; with --large-only: {', '.join(ABLATIONS)}",
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
    if protocol.base_steps < 5 or not protocol.seeds:
        return "--base-steps must be >= 5 and --seeds >= 1"
    if fraction is not None and not 0 < fraction < 1:
        return f"--fraction {fraction}: give a share of the budget between 0 and 1 (e.g. 0.75)"
    return check_run(protocol.corpus, jobs, threads)


def check_run(corpus: str, jobs: int, threads: int) -> str | None:
    """The settings every protocol shares: process counts and a corpus that resolves."""
    from growth.data.prepare import DataError
    from growth.data.sources import resolve_files

    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value < 1:
            return f"{flag} {value}: give at least 1 (e.g. --jobs 2 --threads 1 on 2 cores)"
    try:
        resolve_files(corpus, key="--corpus")
    except (DataError, Exception) as err:  # the same one-line messages as data.corpus
        return f"{err}"
    return None


def default_jobs(threads: int) -> int:
    """One training process per ``threads`` usable cores (at least 1, at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, threads)))


def corpus_facts(spec: str) -> dict:
    from growth.bench.harness import package_versions
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
    return (main_large_only if args.large_only else main_envelope)(args)


def main_envelope(args: argparse.Namespace) -> int:
    try:
        env = from_options(
            preset=args.preset or ("quick" if args.quick else "default"),
            seeds=args.seeds if args.seeds is not None else (1 if args.quick else None),
            base_steps=args.base_steps,
            growth_at=args.growth_at,
            small=args.small,
            large=args.large,
            corpus=args.corpus,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (problem := check_run(env.corpus, args.jobs, args.threads)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    names = list(envelope.ABLATIONS) if "all" in args.ablation else args.ablation
    if unknown := [name for name in names if name not in envelope.ABLATIONS]:
        print(
            f"error: --ablation {unknown[0]} belongs to --large-only; the envelope's are "
            f"{', '.join(envelope.ABLATIONS)}",
            file=sys.stderr,
        )
        return 2
    runs.set_parallel_runs(args.jobs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = envelope.Bench(
        Path(args.work) if args.work else out / "growth_runs",
        args.threads,
        lambda line: print(line, flush=True),
    )
    stem = out / f"bench_growth_envelope{'' if env.preset == 'default' else '_' + env.preset}"
    for name in names:
        ablation = envelope.ablation(env, bench, name)
        write_json(
            out / f"{stem.name}_ablation_{name}.json", {**ablation, "protocol": env.to_json()}, indent=1
        )
    if names:
        return 0
    result = envelope.compare(env, bench)
    result["corpus"] = corpus_facts(env.corpus)
    write_json(stem.with_suffix(".json"), result, indent=1)
    try:
        envelope_report.plot(result, stem.with_suffix(".png"))
    except MissingPlotting as err:  # the JSON is written; only the figure is missing
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in envelope_report.summary_lines(result):
        print(line)
    largest = max(result["headline"])
    print(f"saving_vs_envelope: {result['headline'][largest]['saving_vs_envelope']['mean']:.3f}")
    return 0


def main_large_only(args: argparse.Namespace) -> int:
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
    if unknown := [name for name in names if name not in ABLATIONS]:
        print(
            f"error: --ablation {unknown[0]} belongs to the envelope protocol (without --large-only)",
            file=sys.stderr,
        )
        return 2
    for name in names:
        result = runner.ablation(name, protocol, work, args.threads, log)
        scratch = runner.scratch(protocol, work, protocol.seeds[0], result["lr"], args.threads, log)
        write_json(
            out / f"bench_growth{suffix}_ablation_{name}.json",
            {**result, "protocol": protocol.to_json()},
            indent=1,
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
    write_json(out / f"bench_growth{suffix}.json", result, indent=1)
    report.plot(result, out / f"bench_growth{suffix}.png")
    for line in report.summary_lines(result):
        print(line)
    print(f"saving_with_small: {result['headline']['saving_with_small']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
