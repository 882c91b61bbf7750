"""SentencePiece tokenizer: training on a bounded, seeded sample of a corpus, special ids, loading.

Special ids are fixed so every run and checkpoint agrees: pad 0, unk 1, bos 2, eos 3, mask 4
(``<mask>`` is a control symbol, used by MLM). Byte fallback keeps any UTF-8 text encodable.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from growth.data.sources import iter_documents
from growth.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MASK_PIECE = "<mask>"


MAX_SENTENCE_CHARS = 4096  # longer lines are cut into pieces of this many characters


class Reservoir:
    """A uniform sample of at most ``size`` items from a stream (Li's Algorithm L: the random draws
    are per item *taken*, not per item seen), seeded."""

    def __init__(self, size: int, seed: int):
        self.size, self.items, self.seen = size, [], 0
        self.rng = random.Random(seed)
        self._w = math.exp(math.log(self._uniform()) / size)
        self._next = size + self._skip()

    def _uniform(self) -> float:
        return 1.0 - self.rng.random()  # in (0, 1]

    def _skip(self) -> int:
        return int(math.floor(math.log(self._uniform()) / math.log(max(1.0 - self._w, 1e-300))))

    def extend(self, batch: list[str]) -> None:
        taken = 0
        if len(self.items) < self.size:
            taken = min(self.size - len(self.items), len(batch))
            self.items.extend(batch[:taken])
        while self._next - self.seen < len(batch):
            index = self._next - self.seen
            if index >= taken:
                self.items[self.rng.randrange(self.size)] = batch[index]
            self._w *= math.exp(math.log(self._uniform()) / self.size)
            self._next += self._skip() + 1
        self.seen += len(batch)

    def shuffled(self) -> list[str]:
        items = list(self.items)
        self.rng.shuffle(items)
        return items


def sentences(text: str) -> list[str]:
    """The non-empty lines of a text, long ones cut into pieces sentencepiece accepts."""
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if len(line) > MAX_SENTENCE_CHARS:
            out += [line[i : i + MAX_SENTENCE_CHARS] for i in range(0, len(line), MAX_SENTENCE_CHARS)]
        elif line:
            out.append(line)
    return out


def sample_sentences(
    files: Iterable[tuple[str | Path, str]], size: int, seed: int, progress: bool = False
) -> list[str]:
    """A seeded, shuffled sample of at most ``size`` lines of the documents of ``(file, text_field)``
    pairs, read in one streaming pass (memory: the sample and one chunk); ``progress``: a tqdm bar."""
    files = [(Path(path), field) for path, field in files]
    reservoir = Reservoir(size, seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(p.stat().st_size for p, _ in files),
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            desc="sampling sentences for the tokenizer",
            file=sys.stderr,
            mininterval=0.5,
        )
    try:
        for path, text_field in files:
            for text in iter_documents(path, text_field):
                reservoir.extend(sentences(text))
            if bar is not None:
                bar.update(path.stat().st_size)
    finally:
        if bar is not None:
            bar.close()
    return reservoir.shuffled()


def train_tokenizer(
    inputs: Iterable[str | Path],
    out_path: str | Path,
    vocab_size: int,
    model_type: str = "bpe",
    text_field: str = "text",
    input_sentence_size: int = 1_000_000,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Train a sentencepiece model on a seeded sample of ``input_sentence_size`` lines of corpus files
    (any format ``growth/data/sources.py`` reads) and write it atomically to ``out_path``."""
    files = [Path(p) for p in inputs]
    for name in files:
        if not name.is_file():
            raise DataError(f"tokenizer input {name} does not exist")
    sample = sample_sentences([(f, text_field) for f in files], input_sentence_size, seed, progress)
    if not sample:
        where = files[0] if len(files) == 1 else f"{len(files)} files"
        raise DataError(
            f"{where}: the file is empty (no text to train a tokenizer on); use a corpus with text in it"
        )
    return train_on_sentences(sample, out_path, vocab_size, model_type, seed)


# Ids every trained tokenizer holds before any learned piece: one per byte (byte fallback), <pad>,
# <unk>, <s>, </s> and <mask>; model.vocab_size must leave room for them.
RESERVED_IDS = 256 + 5
# sentencepiece's own limits, as it words them: the corpus has fewer distinct pieces than asked for,
# or more characters to cover than there are free ids.
TOO_MANY_PIECES = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
TOO_FEW_FOR_CHARACTERS = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


def train_on_sentences(
    sample: list[str],
    out_path: str | Path,
    vocab_size: int,
    model_type: str = "bpe",
    seed: int = 0,
    corpus: str = "the corpus",
) -> Path:
    """Train a sentencepiece tokenizer of ``vocab_size`` pieces on ``sample``; a size the corpus
    cannot give is a one-line DataError naming ``model.vocab_size``, the limit and ``corpus``."""
    if vocab_size < RESERVED_IDS:
        raise DataError(
            f"model.vocab_size={vocab_size} is below the {RESERVED_IDS} ids a trained tokenizer reserves "
            f"(256 byte-fallback pieces, <pad>, <unk>, <s>, </s>, <mask>); set model.vocab_size to at "
            f"least {RESERVED_IDS} (a few hundred more leave room for learned pieces)"
        )
    proto = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            # sentencepiece refuses a sample size of 1..100 (0: take every sentence, which it is)
            input_sentence_size=len(sample) if len(sample) > 100 else 0,
            shuffle_input_sentence=False,  # the sample is shuffled already, by the seeded reservoir
            max_sentence_length=4 * MAX_SENTENCE_CHARS,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            control_symbols=[MASK_PIECE],
            # Rare characters fall back to their UTF-8 bytes: 1.0 would need a piece per character, which
            # a 1024-piece vocabulary cannot hold on code or multilingual text (3,350 characters in the
            # virtualenv's Python sources).
            character_coverage=0.9995,
            byte_fallback=True,
            split_digits=True,
            num_threads=min(4, os.cpu_count() or 1),
            minloglevel=2,
        )
    except RuntimeError as err:
        raise tokenizer_error(str(err), vocab_size, corpus) from None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(proto.getvalue())
    tmp.replace(out_path)
    return out_path


def tokenizer_error(message: str, vocab_size: int, corpus: str) -> DataError:
    """sentencepiece's failure as one line that names the setting and the limit."""
    too_many = TOO_MANY_PIECES.search(message)
    if too_many:
        most = int(too_many.group(2))
        fix = f"set model.vocab_size={most} or less, or " if most >= RESERVED_IDS else ""
        return DataError(
            f"{corpus} is too small to train a tokenizer of model.vocab_size={vocab_size} pieces: its text "
            f"yields at most {most}; {fix}use a larger corpus (or a trained tokenizer: data.tokenizer=...)"
        )
    too_few = TOO_FEW_FOR_CHARACTERS.search(message)
    if too_few:
        return DataError(
            f"model.vocab_size={vocab_size} is too small for the characters of {corpus}: a tokenizer of it "
            f"needs at least {too_few.group(2)} pieces; set model.vocab_size={too_few.group(2)} or more"
        )
    return DataError(
        f"sentencepiece could not train a tokenizer of model.vocab_size={vocab_size} pieces on {corpus}: "
        f"{message.splitlines()[0]}"
    )


@dataclass
class Tokenizer:
    processor: spm.SentencePieceProcessor
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        from growth.data.hf_tokenizer import (
            is_hf_tokenizer,
            load_hf_processor,
        )  # a Hugging Face tokenizer.json

        if is_hf_tokenizer(path):
            return cls(*load_hf_processor(path))
        if not path.is_file():
            raise DataError(
                f"tokenizer {path} not found; train one with tools/train_tokenizer.py or leave data.tokenizer empty"
            )
        processor = spm.SentencePieceProcessor()
        try:
            processor.load(str(path))
        except (RuntimeError, OSError):
            raise DataError(f"tokenizer {path} is not a sentencepiece model") from None
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self.processor.pad_id()

    @property
    def eos_id(self) -> int:
        return self.processor.eos_id()

    @property
    def bos_id(self) -> int:
        return self.processor.bos_id()

    @property
    def mask_id(self) -> int:
        return self.processor.piece_to_id(MASK_PIECE)

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids)
