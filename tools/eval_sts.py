"""Spearman on an STS file: `python tools/eval_sts.py --checkpoint CKPT --data FILE [--tokenizer T]`.

CKPT is a run directory, its checkpoints/ folder or one checkpoint; FILE is in the STS-B layout
(genre, file, year, id, score, sentence1, sentence2, ...) or bundled:sts-dev. Prints one line per
weight set, `spearman: 0.xxx (raw weights)` and, when the checkpoint holds EMA weights,
`spearman: 0.xxx (ema weights)`. Bad input (including a file with fewer than two pairs or one score
for all, where Spearman is undefined): one `error: ...` line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from growth.errors import ConfigError, DataError
from growth.eval.sts import evaluate_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="run directory, its checkpoints/ folder or one checkpoint folder",
    )
    parser.add_argument(
        "--data", required=True, help="STS-B layout file, or bundled:sts-dev / bundled:sts-train"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="default: tokenizer.model of the checkpoint's run"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward")
    args = parser.parse_args(argv)
    try:
        results = evaluate_checkpoint(args.checkpoint, args.data, args.tokenizer, args.batch_size)
    except (ConfigError, DataError) as err:  # incl. a one-row or constant-score file (Spearman undefined)
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:
        print(f"error: {err.filename or args.checkpoint}: {err.strerror or err}", file=sys.stderr, flush=True)
        return 2
    for weights, rho in results.items():
        print(f"spearman: {rho:.6f} ({weights} weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
