"""Mixtures: several prepared corpora sampled in proportion to weights (``data.sources``).

The global stream of windows is cut into blocks of ``MIX_BLOCK`` positions. In every block source s
gets ``n_s`` positions (``weights`` apportioned to the block by largest remainder, at least one each),
in an order seeded by (seed, block). Position p of the stream is therefore the k-th draw of its
source, with k computable from p alone, and that draw is window k of the source's own
:class:`~growth.data.sampler.WindowSampler` (its own seeded permutation per epoch, so a small source
repeats sooner than a large one). Like the single-corpus sampler, the mixture is a function of the
stream position: any world size sees the same global batches, and ``consumed`` is its whole state.

Over any whole number of blocks source s's share is exactly ``n_s / MIX_BLOCK``, which differs from
its normalised weight by less than ``1 / MIX_BLOCK``.

:class:`WindowedTokens` serves windows of several token arrays as one indexable stream, so the batch
maker and the evaluator read a mixture as they read one corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from growth.data.sampler import WindowSampler

MIX_BLOCK = 4096


def apportion(weights: Sequence[float], total: int) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder, each at least 1)."""
    if len(weights) > total:
        raise ValueError(f"{len(weights)} sources do not fit in a block of {total}")
    scale = total / float(sum(weights))
    exact = [w * scale for w in weights]
    shares = [max(1, int(e)) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (shares[i] - exact[i], i))
    i = 0
    while sum(shares) < total:
        shares[order[i % len(order)]] += 1
        i += 1
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - shares[i], i))
    i = 0
    while sum(shares) > total:
        j = order[i % len(order)]
        if shares[j] > 1:
            shares[j] -= 1
        i += 1
    return shares


class MixtureSchedule:
    """Which source each stream position draws from, and how many draws that source had before it."""

    def __init__(self, weights: Sequence[float], seed: int, block: int = MIX_BLOCK):
        self.shares = apportion(weights, block)
        self.seed, self.block = seed, block
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def _layout(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != index:
            import torch

            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_777_777 + index)
            sources = np.repeat(np.arange(len(self.shares)), self.shares)[
                torch.randperm(self.block, generator=generator).numpy()
            ]
            rank = np.zeros(self.block, dtype=np.int64)
            for s in range(len(self.shares)):
                mine = sources == s
                rank[mine] = np.arange(int(mine.sum()))
            self._cached = (index, sources, rank)
        return self._cached[1], self._cached[2]

    def draw(self, position: int) -> tuple[int, int]:
        """(source, number of earlier draws of that source) at a stream position."""
        index, offset = divmod(position, self.block)
        sources, rank = self._layout(index)
        source = int(sources[offset])
        return source, index * self.shares[source] + int(rank[offset])


@dataclass
class MixtureSampler(WindowSampler):
    """A :class:`WindowSampler` over the windows of several sources, drawn in proportion to ``weights``;
    window ids are global: source s's windows follow those of sources 0..s-1."""

    source_tokens: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    _sources: list[WindowSampler] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.source_tokens, self.weights = (
            tuple(int(n) for n in self.source_tokens),
            tuple(float(w) for w in self.weights),
        )
        self._sources = [
            WindowSampler(n, self.seq_len, self.seed * 1_000_003 + 104_729 * (i + 1))
            for i, n in enumerate(self.source_tokens)
        ]
        self._bases = np.concatenate([[0], np.cumsum([s.n_windows for s in self._sources])]).astype(np.int64)
        self._schedule = MixtureSchedule(self.weights, self.seed)

    @property
    def n_windows(self) -> int:
        return int(self._bases[-1])

    def draw(self, position: int) -> tuple[int, int]:
        """(source, its window) at a global stream position."""
        source, k = self._schedule.draw(position)
        return source, self._sources[source].windows(k, 1)[0]

    def windows(self, start: int, count: int) -> list[int]:
        out = []
        for position in range(start, start + count):
            source, window = self.draw(position)
            out.append(int(self._bases[source]) + window)
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "sources": list(self.source_tokens), "weights": list(self.weights)}

    def same_stream(self, state: dict) -> bool:
        return (
            super().same_stream(state)
            and list(state.get("sources", ())) == list(self.source_tokens)
            and [float(w) for w in state.get("weights", ())] == list(self.weights)
        )


class WindowedTokens:
    """Windows of several token arrays as one stream: ``tokens[g*T : g*T + T + 1]`` is window
    ``g - base[s]`` of array s (``order``, when given, maps window i to window id ``order[i]`` first).
    Only whole windows can be sliced; ``len`` is ``windows * T + 1`` as for a packed array."""

    def __init__(self, arrays: Sequence[np.ndarray], seq_len: int, order: np.ndarray | None = None):
        self.arrays, self.seq_len = list(arrays), seq_len
        counts = [max(0, (len(a) - 1) // seq_len) for a in self.arrays]
        self.bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.order = order
        self.n_windows = len(order) if order is not None else int(self.bases[-1])
        self.dtype = self.arrays[0].dtype

    def __len__(self) -> int:
        return self.n_windows * self.seq_len + 1

    def locate(self, window: int) -> tuple[int, int]:
        """(array, window within it) of stream window ``window``."""
        if not 0 <= window < self.n_windows:
            raise IndexError(f"window {window} out of range ({self.n_windows} windows)")
        ident = int(self.order[window]) if self.order is not None else window
        source = int(np.searchsorted(self.bases, ident, side="right")) - 1
        return source, ident - int(self.bases[source])

    def __getitem__(self, key: slice) -> np.ndarray:
        T = self.seq_len
        if (
            not isinstance(key, slice)
            or key.step not in (None, 1)
            or key.start is None
            or key.start % T
            or key.stop - key.start != T + 1
        ):
            raise IndexError("WindowedTokens serves whole windows only: tokens[k*T : k*T + T + 1]")
        source, local = self.locate(key.start // T)
        return self.arrays[source][local * T : local * T + T + 1]


def interleave_validation(
    val_windows: Sequence[int], weights: Sequence[float], cap: int = 1 << 16
) -> np.ndarray:
    """Window ids of a mixture's validation stream: from each source a number of its validation windows
    proportional to its weight (as many as the scarcest source allows, at most ``cap`` in all), spread
    evenly through the stream."""
    total = float(sum(weights))
    shares = [w / total for w in weights]
    scale = min(cap, min(n / s for n, s in zip(val_windows, shares)))
    counts = [max(1, min(n, int(s * scale))) for n, s in zip(val_windows, shares)]
    bases = np.concatenate([[0], np.cumsum(val_windows)]).astype(np.int64)
    ids = np.concatenate([bases[s] + np.arange(c) for s, c in enumerate(counts)])
    keys = np.concatenate([(np.arange(c) + 0.5) / c for c in counts])
    sources = np.concatenate([np.full(c, s) for s, c in enumerate(counts)])
    return ids[np.lexsort((sources, keys))]
