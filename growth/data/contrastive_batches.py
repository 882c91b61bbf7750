"""Contrastive examples as token ids, and micro-batches in the interleaved layout the losses expect.

An example is a pair of sentences (a, b): a sentence and its positive (InfoNCE), a scored pair
(CoSENT), or the same sentence twice (SimCSE: its two dropout views). A micro-batch of m examples is
one forward of 2m rows interleaved a_1, b_1, a_2, b_2, ..., padded with the pad id 0 to its longest
row, with an attention mask. Concatenating micro-batches, and ranks, keeps every pair adjacent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from growth.data.sampler import WindowSampler
from growth.data.sentence_pairs import READERS, Pair, data_path, read_sentences, read_sts
from growth.data.tokenizer import PAD_ID, Tokenizer
from growth.errors import DataError
from growth.objectives.config import ContrastiveConfig


@dataclass
class ContrastiveExamples:
    first: list[list[int]]
    second: list[list[int]]
    scores: torch.Tensor | None = None  # (n,) float32 for scored pairs

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, indices: Sequence[int]) -> ContrastiveExamples:
        scores = self.scores[list(indices)] if self.scores is not None else None
        return ContrastiveExamples(
            [self.first[i] for i in indices], [self.second[i] for i in indices], scores
        )

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` (2m, T) interleaved a_i, b_i; ``scores`` (m,) if scored."""
        rows = [row for i in indices for row in (self.first[i], self.second[i])]
        batch = dict(zip(("input_ids", "attention_mask"), pad_rows(rows)))
        if self.scores is not None:
            batch["scores"] = self.scores[list(indices)]
        return batch


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _encode(tokenizer: Tokenizer, text: str, max_len: int, where: str) -> list[int]:
    ids = tokenizer.encode(text)[:max_len]
    if not ids:
        raise DataError(f"{where}: sentence {text!r} has no tokens")
    return ids


def encode_pairs(pairs: Sequence[Pair], tokenizer: Tokenizer, max_len: int, path: str) -> ContrastiveExamples:
    first = [_encode(tokenizer, p.first, max_len, f"{path}:{p.line}") for p in pairs]
    second = [_encode(tokenizer, p.second, max_len, f"{path}:{p.line}") for p in pairs]
    scored = all(p.score is not None for p in pairs)
    scores = torch.tensor([p.score for p in pairs], dtype=torch.float32) if scored else None
    return ContrastiveExamples(first, second, scores)


def encode_sentences(
    sentences: Sequence[str], tokenizer: Tokenizer, max_len: int, path: str
) -> ContrastiveExamples:
    """SimCSE: every sentence is its own positive (the same ids twice; dropout makes the views differ)."""
    ids = [_encode(tokenizer, s, max_len, str(path)) for s in sentences]
    return ContrastiveExamples(ids, ids)


def training_examples(config: ContrastiveConfig, tokenizer: Tokenizer) -> ContrastiveExamples:
    """``contrastive.data`` read as ``contrastive.format`` and shaped for ``contrastive.objective``."""
    path = data_path(config.data, "contrastive.data")
    if config.format == "text":
        return encode_sentences(read_sentences(path), tokenizer, config.max_len, str(path))
    pairs = READERS[config.format](path)
    if config.objective == "simcse":  # unlabeled sentences from both sides of the pairs
        sentences = list(dict.fromkeys(s for p in pairs for s in (p.first, p.second)))
        return encode_sentences(sentences, tokenizer, config.max_len, str(path))
    if config.objective == "infonce" and config.format == "sts":
        pairs = [p for p in pairs if p.score >= config.positive_min_score]
        if not pairs:
            raise DataError(
                f"{path}: no pair scores >= contrastive.positive_min_score={config.positive_min_score}"
            )
        positives = encode_pairs(pairs, tokenizer, config.max_len, str(path))
        return ContrastiveExamples(positives.first, positives.second)  # the scores only selected them
    return encode_pairs(pairs, tokenizer, config.max_len, str(path))


def sts_examples(spec: str, tokenizer: Tokenizer, max_len: int, key: str) -> ContrastiveExamples:
    """Scored pairs in the STS-B layout (evaluation data)."""
    path = data_path(spec, key)
    return encode_pairs(read_sts(path), tokenizer, max_len, str(path))


def split_validation(
    examples: ContrastiveExamples, fraction: float, seed: int
) -> tuple[ContrastiveExamples, ContrastiveExamples]:
    """(train, held-out): a seeded ``fraction`` of the examples is held out for the validation loss."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(len(examples) * fraction)
    return examples.subset(sorted(order[n_val:])), examples.subset(sorted(order[:n_val]))


def example_sampler(n_examples: int, seed: int) -> WindowSampler:
    """The pretraining sampler over examples: windows of one token over n + 1 tokens are n examples, so
    the global stream, rank slices and resumable ``consumed`` position are exactly the token sampler's."""
    return WindowSampler(n_tokens=n_examples + 1, seq_len=1, seed=seed)
