"""Turn sampled windows of the packed stream into model batches (CLM targets or MLM masking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from growth.data.mlm import mask_tokens


@dataclass
class BatchMaker:
    tokens: np.ndarray
    seq_len: int
    objective: str  # clm | mlm
    vocab_size: int
    mask_id: int = 4
    special_ids: tuple[int, ...] = (0, 1, 2, 3)
    mlm_probability: float = 0.15
    seed: int = 0

    def window(self, index: int) -> torch.Tensor:
        start = index * self.seq_len
        return torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))

    def example(self, index: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.window(index)
        if self.objective == "clm":
            return tokens[:-1], tokens[1:]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + position)
        return mask_tokens(
            tokens[:-1], self.mask_id, self.vocab_size, self.mlm_probability, generator, self.special_ids
        )

    def batch(self, windows: list[int], positions: list[int] | range) -> dict[str, torch.Tensor]:
        inputs, labels = zip(*(self.example(w, p) for w, p in zip(windows, positions)))
        return {"input_ids": torch.stack(inputs), "labels": torch.stack(labels)}
