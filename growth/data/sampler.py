"""Deterministic, resumable, rank-aware sampling of fixed-length windows from a packed token stream.

Window k covers tokens [k*T, k*T + T] (T + 1 tokens: inputs and shifted targets). Each epoch visits
every window once in a permutation seeded by (seed, epoch). The stream of windows is global: the
optimizer step s consumes stream positions [s*B, (s+1)*B) for the global batch B whatever the world
size, and rank r's micro-batch m takes a fixed slice of it. So 1 rank and N ranks see the same
global batches, and the only state to checkpoint is ``consumed`` (windows used so far).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WindowSampler:
    n_tokens: int
    seq_len: int
    seed: int
    consumed: int = 0
    _epoch_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_windows(self) -> int:
        return (self.n_tokens - 1) // self.seq_len

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._epoch_cache:
            import torch  # here, not at the top: preparing data (growth/data/prepare.py) needs no torch

            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch_cache = {epoch: torch.randperm(self.n_windows, generator=generator).numpy()}
        return self._epoch_cache[epoch]

    def windows(self, start: int, count: int) -> list[int]:
        """Window indices at global stream positions [start, start + count)."""
        return [
            int(self._order(p // self.n_windows)[p % self.n_windows]) for p in range(start, start + count)
        ]

    def micro_batch_positions(self, micro: int, rank: int, world: int, micro_batch_size: int) -> range:
        """Stream positions of rank ``rank``'s micro-batch ``micro`` in the current global batch."""
        first = self.consumed + (micro * world + rank) * micro_batch_size
        return range(first, first + micro_batch_size)

    def advance(self, global_batch: int) -> None:
        self.consumed += global_batch

    def state_dict(self) -> dict[str, int]:
        return {
            "consumed": self.consumed,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "n_tokens": self.n_tokens,
        }

    def same_stream(self, state: dict[str, int]) -> bool:
        """Whether a saved position belongs to this stream (same tokens, window length and seed)."""
        mine = self.state_dict()
        return all(state.get(key) == mine[key] for key in ("seed", "seq_len", "n_tokens"))

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])
