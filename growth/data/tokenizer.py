"""SentencePiece tokenizer: training from text files, special ids, loading.

Special ids are fixed so every run and checkpoint agrees: pad 0, unk 1, bos 2, eos 3, mask 4
(``<mask>`` is a control symbol, used by MLM). Byte fallback keeps any UTF-8 text encodable.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from growth.data.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MASK_PIECE = "<mask>"


def train_tokenizer(inputs: Iterable[str | Path], out_path: str | Path, vocab_size: int, model_type: str = "bpe") -> Path:
    """Train a sentencepiece model on text files and write it atomically to ``out_path``."""
    files = [str(p) for p in inputs]
    for name in files:
        if not Path(name).is_file():
            raise DataError(f"tokenizer input {name} does not exist")
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            input=",".join(files),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            control_symbols=[MASK_PIECE],
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            num_threads=min(4, os.cpu_count() or 1),
            minloglevel=2,
        )
    except RuntimeError as err:
        raise DataError(f"sentencepiece could not train a {vocab_size}-piece tokenizer: {str(err).splitlines()[0]}") from None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(proto.getvalue())
    tmp.replace(out_path)
    return out_path


@dataclass
class Tokenizer:
    processor: spm.SentencePieceProcessor
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer {path} not found; train one with tools/train_tokenizer.py or leave data.tokenizer empty")
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
