"""A prompt as token ids for sampling (``tools/generate.py``, ``train.sample_prompts``), and ids back as text.

A prompt with characters the tokenizer cannot encode is refused: they would become ``<unk>``, which the model
never learned to continue (the project's tokenizers fall back to bytes and encode anything; an imported one may
not). An empty prompt starts at a document boundary (EOS: documents are separated by it in training,
``pipeline.py``), so the model writes a document from its beginning.
"""

from __future__ import annotations

from growth.data.tokenizer import Tokenizer
from growth.errors import DataError


def encode_prompt(tokenizer: Tokenizer, text: str, what: str) -> list[int]:
    """The prompt's ids; ``what`` names the setting in the one-line error (e.g. ``--prompt``)."""
    ids = tokenizer.encode(text)
    unk = tokenizer.processor.unk_id()
    if unk >= 0 and unk in ids:
        unknown = sorted({c for c in text if unk in tokenizer.encode(c)})
        shown = " ".join(repr(c) for c in unknown[:8]) or "some characters"
        raise DataError(
            f"{what}: the tokenizer cannot encode {shown} (they would become <unk>); remove them, or use a "
            "tokenizer with byte fallback"
        )
    if ids:
        return ids
    start = next((i for i in (tokenizer.eos_id, tokenizer.bos_id) if i >= 0), None)
    if start is None:
        raise DataError(
            f"{what} is empty and the tokenizer has no EOS or BOS token to start from; give a prompt"
        )
    return [start]


def sample_text(tokenizer: Tokenizer, ids: list[int], prompt_length: int) -> str:
    """The prompt and what was sampled after it, up to the first EOS (the end of the document it wrote),
    decoded together so the join is spaced as the tokenizer spaces it."""
    ids = list(ids)
    eos = tokenizer.eos_id
    if eos >= 0 and eos in ids[prompt_length:]:
        ids = ids[: ids.index(eos, prompt_length)]
    return tokenizer.decode(ids)
