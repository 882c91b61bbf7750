"""Train a sentencepiece tokenizer: `python tools/train_tokenizer.py --input CORPUS [CORPUS ...] --out tok.model`.

Each CORPUS is what `data.corpus` accepts: a file, a directory (recursive), a glob or `bundled:<name>`
(.txt and other text files, .jsonl/.jsonl.gz/.jsonl.zst and .parquet with the text in --text-field).
Sentencepiece sees a seeded, shuffled sample of at most --input-sentence-size lines, read in one
streaming pass, so a multi-GB corpus trains in bounded memory.
Special ids: pad 0, unk 1, bos 2, eos 3, <mask> 4 (see growth/data/tokenizer.py).
"""

import argparse
import sys
from pathlib import Path

from growth.data.sources import resolve_files
from growth.data.tokenizer import Tokenizer, train_tokenizer
from growth.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, help="corpus files, directories or globs")
    parser.add_argument("--out", required=True, help="where to write the .model file")
    parser.add_argument(
        "--vocab-size", type=int, default=1024, help="pieces, the special ids included (default: %(default)s)"
    )
    parser.add_argument(
        "--model-type",
        choices=["bpe", "unigram"],
        default="bpe",
        help="sentencepiece model type (default: %(default)s)",
    )
    parser.add_argument(
        "--text-field", default="text", help="JSONL key / Parquet column of the text (default: %(default)s)"
    )
    parser.add_argument(
        "--input-sentence-size",
        type=int,
        default=1_000_000,
        help="lines sampled for sentencepiece (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.input_sentence_size <= 0:
            raise DataError(f"--input-sentence-size must be > 0, got {args.input_sentence_size}")
        if Path(args.out).is_dir():
            raise DataError(
                f"--out {args.out} is a directory; give the .model file to write, e.g. "
                f"--out {Path(args.out) / 'tokenizer.model'}"
            )
        files = resolve_files(args.input, key="--input")
        path = train_tokenizer(
            files,
            args.out,
            args.vocab_size,
            args.model_type,
            text_field=args.text_field,
            input_sentence_size=args.input_sentence_size,
            seed=args.seed,
            progress=True,
        )
        tokenizer = Tokenizer.load(path)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. --out in a folder that does not exist or cannot be written
        print(f"error: --out {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {tokenizer.vocab_size} pieces (pad {tokenizer.pad_id}, bos {tokenizer.bos_id}, "
        f"eos {tokenizer.eos_id}, mask {tokenizer.mask_id})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
