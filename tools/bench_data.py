"""Data preparation benchmark: `python tools/bench_data.py [--out DIR] [--sizes 20 80 200] [--rounds 2]`.

On the Python sources of the virtualenv's packages (`.venv/lib/python3*/site-packages/**/*.py`, about
200 MB): preparation throughput with 1 and 2 workers against sentencepiece's own encode in one
process, peak RSS at three corpus sizes, tokenizer training, time to the first training step.
Writes DIR/bench_data.json (with the package versions) and DIR/bench_data.png (default bench_out/).
"""

import argparse
import sys
import tempfile
from pathlib import Path

from growth.bench.data import VENV_SOURCES, plot, run
from growth.bench.harness import write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out"),
        help="folder for the JSON and PNG (default: %(default)s)",
    )
    parser.add_argument("--corpus", default=VENV_SOURCES, help="corpus spec (default: %(default)s)")
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[20, 80, 200], help="corpus MB for the RSS runs"
    )
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds, alternating the order")
    parser.add_argument(
        "--vocab-size", type=int, default=8192, help="tokenizer pieces (default: %(default)s)"
    )
    parser.add_argument(
        "--input-sentence-size",
        type=int,
        default=1_000_000,
        help="lines sampled to train the tokenizer (default: %(default)s)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as work:
        report = run(
            Path(work), args.corpus, args.vocab_size, tuple(args.sizes), args.rounds, args.input_sentence_size
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench_data.json", report)
    plot(report, args.out / "bench_data.png")
    t = report["throughput"]
    best = t["best"]
    print(
        f"limit (sentencepiece encode, 1 process): {best['limit']['mb_per_s']:.2f} MB/s, "
        f"{best['limit']['tokens_per_s']:,.0f} tokens/s"
    )
    for n in (1, 2):
        b = best[f"workers_{n}"]
        ratio = t["ratio_1_worker" if n == 1 else "ratio_2_workers"]
        print(
            f"prepare, {n} worker{'s' if n > 1 else ''}: {b['mb_per_s']:.2f} MB/s, {b['tokens_per_s']:,.0f} tokens/s "
            f"({ratio:.2f}x the limit)"
        )
    for m in report["preparation_memory"]:
        print(
            f"peak RSS at {m['corpus_bytes'] / 1e6:.0f} MB: {m['peak_rss_bytes'] / 1e6:.0f} MB "
            f"(largest process {m['peak_rss_largest_process_bytes'] / 1e6:.0f} MB)"
        )
    f = report["first_step"]
    print(
        f"first step on the prepared corpus: data ready in {f['data_ready_s']:.2f} s, first step done "
        f"{f['first_step_s']:.2f} s later ({f['process_to_first_step_s']:.1f} s from process start)"
    )
    print(f"wrote {args.out / 'bench_data.json'} and {args.out / 'bench_data.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
