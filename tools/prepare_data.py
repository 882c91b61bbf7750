"""Tokenize a config's corpus into the cache: `python tools/prepare_data.py [--config FILE] [key=value ...] [--workers N]`.

Uses `data.corpus` (or the mixture `data.sources`, and `data.val_corpus`), `data.tokenizer` (empty: the
tokenizer trained on the corpus on first use, trained now if missing), `data.cache_dir`,
`data.text_field`, `data.val_fraction` and `data.seed`, exactly as training does, so a run started
afterwards finds its tokens prepared. N processes tokenize (default: `data.workers`, 0 = all cores),
with a progress bar on stderr; the last line printed is
`prepared: <D> documents, <T> tokens -> <folder>`. Bad input: one `error:` line, exit code 2, nothing cached.
"""

import argparse
import sys

from growth.config import load_config
from growth.data.packed import default_cache_dir
from growth.data.pipeline import corpus_tokenizer, prepare_tokens, summary
from growth.errors import ConfigError, DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config; omitted: the embedded default")
    parser.add_argument(
        "--workers", type=int, default=None, help="tokenizing processes (default: data.workers; 0: all cores)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted key=value overrides, e.g. data.corpus='corpus/**/*.jsonl.gz'"
    )
    args = parser.parse_intermixed_args(argv)  # options and key=value overrides in any order
    try:
        if args.workers is not None and args.workers < 0:
            raise ConfigError(f"--workers must be >= 0 (0: all cores), got {args.workers}")
        config = load_config(args.config, args.overrides)
        cache = default_cache_dir(config.data.cache_dir)
        tokenizer = corpus_tokenizer(config.data, config.model.vocab_size, cache)
        prepared = prepare_tokens(config.data, tokenizer, cache, workers=args.workers, progress=True)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    metas = prepared.metas()
    names = (
        [f"data.sources[{i}]" for i in range(len(prepared.sources))]
        if len(prepared.sources) > 1
        else ["data.corpus"]
    )
    names += ["data.val_corpus"] if prepared.val is not None else []
    if len(metas) > 1:
        for name, meta, folder in zip(names, metas, prepared.folders):
            print(f"{name}: {meta['documents']:,} documents, {meta['tokens']:,} tokens -> {folder}")
    documents, tokens = summary(metas)
    where = prepared.folders[0] if len(prepared.folders) == 1 else cache
    print(f"prepared: {documents} documents, {tokens} tokens -> {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
