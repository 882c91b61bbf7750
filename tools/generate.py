"""Sample text from a model: `python tools/generate.py CKPT [--prompt TEXT] [--max-new-tokens N] [--temperature T] ...`.

CKPT is a run directory (its newest complete checkpoint), one checkpoint folder, or a Hugging Face folder written
by tools/export_hf.py; the text is encoded with the run's own tokenizer. The prompt comes from --prompt, else from
stdin when it is not a terminal; an empty prompt starts a new document. --temperature 0 is greedy decoding; the
same --seed gives the same text. Transformer layers decode with a key/value cache; GAU/FLASH layers recompute
the sequence at each step. Prints each sample (prompt and continuation), separated by a line of dashes; what was
loaded goes to stderr. Bad input: one `error: ...` line, exit code 2. Logic: growth/eval/generate.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from growth.errors import ConfigError, DataError
from growth.eval.generate import check_sampling, load_for_sampling, sample_texts
from growth.model.sampling import SamplingOptions

SEPARATOR = "-" * 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SamplingOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="run directory, checkpoint folder, or Hugging Face folder (export_hf.py)",
    )
    parser.add_argument(
        "--prompt", default=None, help="text to continue (default: stdin, or empty on a terminal)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="0: greedy (default: %(default)s)"
    )
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0: every token (default)")
    parser.add_argument(
        "--top-p", type=float, default=defaults.top_p, help="nucleus mass; 1: every token (default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same text (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument(
        "--ema", action="store_true", help="the checkpoint's EMA weights instead of the raw ones"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="default: the checkpoint's run tokenizer"
    )
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda[:N]")
    parser.add_argument(
        "--dtype", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on a GPU, fp32 on CPU"
    )
    return parser.parse_args(argv)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    return "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = SamplingOptions(args.max_new_tokens, args.temperature, args.top_k, args.top_p)

    def sample() -> list[str]:
        check_sampling(options, args.num_samples)
        started = time.perf_counter()
        loaded = load_for_sampling(args.checkpoint, args.tokenizer, args.ema, args.device, args.dtype)
        texts = sample_texts(loaded, read_prompt(args), options, args.num_samples, args.seed)
        print(f"# {loaded.description}, {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        return texts

    try:
        texts = sample()
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:  # an unreadable file: nothing is written, so not growth.cli's "failed write" line
        print(f"error: {err.filename or args.checkpoint}: {err.strerror or err}", file=sys.stderr, flush=True)
        return 2
    print(f"\n{SEPARATOR}\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
