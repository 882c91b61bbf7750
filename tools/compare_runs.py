"""Plot runs side by side: `python tools/compare_runs.py RUN [RUN ...] [--x steps|tokens|flops] [--out plot.png]`.

Validation loss (and its EMA, when logged) of every run directory on one PNG, growth events dotted,
against optimizer steps, tokens seen or training FLOPs. Bad input: one `error:` line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from growth.cli import run_reporting_errors
from growth.errors import ConfigError
from growth.eval.run_curves import AXES, plot_runs, read_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (train.out_dir of each run)")
    parser.add_argument("--x", choices=list(AXES), default="tokens", help="the horizontal axis")
    parser.add_argument("--out", type=Path, default=Path("compare_runs.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        curves = [read_run(run, args.x) for run in args.runs]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    if run_reporting_errors(lambda: plot_runs(curves, args.x, args.out) or True, args.out) is None:
        return 2  # a read-only or full --out: one line, nothing written there
    for run in curves:
        print(
            f"{run.name}: {len(run.val)} evaluations, last val/loss {run.val[-1][1]:.4f}, {len(run.growth)} growth events"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
