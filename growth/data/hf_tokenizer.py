"""Hugging Face tokenizers (``tokenizer.json``) behind the project's tokenizer interface.

``data.tokenizer`` may name, besides a sentencepiece ``.model``:

- a Hugging Face tokenizer folder (``tokenizer.json``; special tokens from its ``tokenizer_config.json`` /
  ``special_tokens_map.json``);
- a ``tokenizer.json`` file (special tokens from the files beside it, else recognised by name);
- a **bundle**: one JSON file holding a folder's tokenizer files and the special ids read from them. It is
  what ``tools/import_hf.py`` writes as a checkpoint's ``tokenizer.model``, so the tokenizer travels with
  the checkpoint wherever the trainer and ``tools/expand.py`` copy ``tokenizer.model``, and
  ``tools/export_hf.py`` writes the original files back.

``HFProcessor`` answers the sentencepiece calls the data pipeline makes (``encode`` of one text or a list,
``decode``, ``eos_id()`` ...), so ``growth.data.tokenizer.Tokenizer`` wraps either kind. Text is encoded
without special tokens (as with sentencepiece); documents are separated by EOS. An id the tokenizer does
not define is -1, as in sentencepiece.

``write_hf_tokenizer`` goes the other way for an export: a bundle or folder gives back its files; a
sentencepiece model is converted (transformers' ``SpmConverter``, which encodes exactly as sentencepiece).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from growth.errors import DataError

BUNDLE_FORMAT = "growth-hf-tokenizer/1"
TOKENIZER_JSON = "tokenizer.json"
# The files of a tokenizer folder that describe the tokenizer (tokenizer.json is required).
TOKENIZER_FILES = (
    TOKENIZER_JSON,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
ROLES = ("bos", "eos", "pad", "unk", "mask")
# Recognised by name when no tokenizer_config.json says which token plays a role (first match wins).
ROLE_NAMES = {
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]", "<|startoftext|>"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[SEP]", "<|im_end|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>", "[UNK]"),
    "mask": ("<mask>", "[MASK]"),
}


def is_hf_tokenizer(path: str | Path) -> bool:
    """A folder with ``tokenizer.json``, or a JSON file (a sentencepiece model is a binary protobuf)."""
    path = Path(path)
    if path.is_dir():
        return (path / TOKENIZER_JSON).is_file()
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(64).lstrip()[:1] == b"{"


@dataclass
class HFProcessor:
    """A ``tokenizers.Tokenizer`` with the sentencepiece methods the project calls."""

    tokenizer: object  # tokenizers.Tokenizer
    special: dict[str, int]  # role -> id, for the roles the tokenizer defines
    files: dict[str, str] = field(default_factory=dict)  # the folder's tokenizer files (for an export)

    def encode(self, text, num_threads: int | None = None):
        """Ids of one text, or a list of id lists for a list of texts (no special tokens added)."""
        if isinstance(text, str):
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        return [e.ids for e in self.tokenizer.encode_batch(list(text), add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def get_piece_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def piece_to_id(self, piece: str) -> int:
        found = self.tokenizer.token_to_id(piece)
        return found if found is not None else self.special.get("unk", -1)

    def bos_id(self) -> int:
        return self.special.get("bos", -1)

    def eos_id(self) -> int:
        return self.special.get("eos", -1)

    def pad_id(self) -> int:
        return self.special.get("pad", -1)

    def unk_id(self) -> int:
        return self.special.get("unk", -1)

    def mask_id(self) -> int:
        return self.special.get("mask", -1)


def load_hf_processor(path: str | Path) -> tuple[HFProcessor, Path]:
    """The processor, and the one file that stands for the tokenizer (copied into runs, digested by caches)."""
    path = Path(path)
    if path.is_dir():
        return processor_from_files(read_folder(path), str(path)), path / TOKENIZER_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"tokenizer {path} is neither a sentencepiece model nor a Hugging Face tokenizer "
            f"({type(err).__name__})"
        ) from None
    if isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT:
        processor = processor_from_files(data["files"], str(path))
        processor.special = {role: int(i) for role, i in data.get("special_ids", processor.special).items()}
        return processor, path
    files = read_folder(path.parent) if path.name == TOKENIZER_JSON else {}
    files[TOKENIZER_JSON] = path.read_text(encoding="utf-8")
    return processor_from_files(files, str(path)), path


def read_folder(folder: Path) -> dict[str, str]:
    return {
        name: (folder / name).read_text(encoding="utf-8")
        for name in TOKENIZER_FILES
        if (folder / name).is_file()
    }


def processor_from_files(files: dict[str, str], where: str) -> HFProcessor:
    from tokenizers import Tokenizer as RustTokenizer

    if TOKENIZER_JSON not in files:
        raise DataError(f"tokenizer {where} has no {TOKENIZER_JSON}; pass a Hugging Face tokenizer folder")
    try:
        tokenizer = RustTokenizer.from_str(files[TOKENIZER_JSON])
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise DataError(
            f"tokenizer {where}: {TOKENIZER_JSON} does not load ({str(err).splitlines()[0][:120]})"
        ) from None
    return HFProcessor(tokenizer, special_ids(tokenizer, files), dict(files))


def _content(value) -> str | None:
    """A token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def special_ids(tokenizer, files: dict[str, str]) -> dict[str, int]:
    """role -> id: what tokenizer_config.json / special_tokens_map.json say, else a token recognised by name."""
    declared: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins
        if name in files:
            try:
                data = json.loads(files[name])
            except json.JSONDecodeError:
                continue
            for role in ROLES:
                if f"{role}_token" in data:
                    declared[role] = _content(data[f"{role}_token"])
    found: dict[str, int] = {}
    specials = (
        {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        if hasattr(tokenizer, "get_added_tokens_decoder")
        else set()
    )
    for role in ROLES:
        if role in declared:  # declared (possibly as null: the tokenizer has no such token)
            token = declared[role]
            candidates = (token,) if token else ()
        else:
            candidates = tuple(t for t in ROLE_NAMES[role] if t in specials or role == "unk")
        for token in candidates:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                found[role] = token_id
                break
    return found


def bundle_hf_tokenizer(folder: Path, out: Path) -> dict[str, int] | None:
    """Write ``folder``'s tokenizer files and their special ids as one bundle file ``out``; None (nothing
    written) when the folder has no ``tokenizer.json``."""
    folder = Path(folder)
    if not (folder / TOKENIZER_JSON).is_file():
        return None
    files = read_folder(folder)
    processor = processor_from_files(files, str(folder))
    payload = {"format": BUNDLE_FORMAT, "special_ids": processor.special, "files": files}
    _write_atomic(Path(out), json.dumps(payload))
    return dict(processor.special)


def write_hf_tokenizer(path: str | Path, out_dir: Path) -> dict[str, int]:
    """Hugging Face tokenizer files for the tokenizer at ``path`` into ``out_dir`` (``AutoTokenizer`` loads
    them); returns the special ids (role -> id)."""
    out_dir = Path(out_dir)
    if is_hf_tokenizer(path):
        processor, _ = load_hf_processor(path)
        files = dict(processor.files)
        if "tokenizer_config.json" not in files:
            files["tokenizer_config.json"] = json.dumps(
                _fast_tokenizer_config(processor.tokenizer, processor.special), indent=2
            )
        for name, text in files.items():
            _write_atomic(out_dir / name, text)
        return dict(processor.special)
    tokenizer, special = sentencepiece_to_hf(Path(path))
    _write_atomic(out_dir / TOKENIZER_JSON, tokenizer.to_str())
    _write_atomic(
        out_dir / "tokenizer_config.json", json.dumps(_fast_tokenizer_config(tokenizer, special), indent=2)
    )
    return special


def sentencepiece_to_hf(path: Path):
    """A ``tokenizers.Tokenizer`` encoding exactly as the sentencepiece model at ``path``, and its special ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if tokenizer is None:
        raise DataError(f"tokenizer {path}: this sentencepiece model type has no Hugging Face equivalent")
    processor = spm.SentencePieceProcessor()
    processor.load(str(path))
    special = {role: getattr(processor, f"{role}_id")() for role in ("bos", "eos", "pad", "unk")}
    mask = processor.piece_to_id("<mask>")
    if mask != processor.unk_id():
        special["mask"] = mask
    return tokenizer, {role: i for role, i in special.items() if i >= 0}


def _fast_tokenizer_config(tokenizer, special: dict[str, int]) -> dict:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000_000,
    }
    for role, token_id in special.items():
        config[f"{role}_token"] = tokenizer.id_to_token(token_id)
    return config


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
