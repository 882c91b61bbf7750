"""Train a sentencepiece tokenizer: `python tools/train_tokenizer.py --input a.txt [b.txt ...] --out tok.model`.

Special ids: pad 0, unk 1, bos 2, eos 3, <mask> 4 (see growth/data/tokenizer.py).
"""

import argparse
import sys

from growth.data.errors import DataError
from growth.data.corpus import read_corpus
from growth.data.tokenizer import Tokenizer, train_tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, help="UTF-8 text files")
    parser.add_argument("--out", required=True, help="where to write the .model file")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    args = parser.parse_args()
    try:
        for name in args.input:
            read_corpus(name, key="--input")  # refuse missing, empty, binary and non-UTF-8 inputs with a clear message
        tokenizer = Tokenizer.load(train_tokenizer(args.input, args.out, args.vocab_size, args.model_type))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {tokenizer.vocab_size} pieces (pad {tokenizer.pad_id}, bos {tokenizer.bos_id}, "
          f"eos {tokenizer.eos_id}, mask {tokenizer.mask_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
