"""safetensors, one tensor at a time in both directions.

``safetensors.torch.save_file`` serialises everything into one buffer first, and ``load_file`` reads
everything; growing or saving a large model must never hold two copies. The format is an 8-byte
little-endian header size, a JSON header (dtype, shape, data offsets, optional ``__metadata__`` of
strings), then the raw little-endian data; files written here load with ``load_file``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from growth.checkpoint.atomic import atomic_path

DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
}
TensorSpec = tuple[str, tuple[int, ...], torch.dtype]


class LazyWeights(Mapping):
    """A safetensors file as a read-only mapping that loads each tensor only when it is asked for."""

    def __init__(self, path: Path):
        self.path = path
        with safe_open(str(path), framework="pt") as handle:
            self._names = list(handle.keys())
            self.metadata = handle.metadata() or {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> torch.Size:
        with safe_open(str(self.path), framework="pt") as handle:
            return torch.Size(handle.get_slice(name).get_shape())


def _header(specs: list[TensorSpec], metadata: dict[str, str] | None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape, dtype in specs:
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned


def write_streaming(
    path: Path,
    specs: list[TensorSpec],
    tensors: Iterable[torch.Tensor | None],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors`` (in the order of ``specs``) to ``path`` atomically, holding one at a time.

    A ``None`` in ``tensors`` means "this process does not write" (every rank but 0 under ZeRO-3
    still has to walk the same gathers): the iterable is drained and nothing is written."""
    items = iter(tensors)
    first = next(items, None)
    if first is None and specs:
        for _ in items:  # keep the collective gathers of the other ranks in step
            pass
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        encoded = _header(specs, metadata)
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for (name, shape, dtype), tensor in zip(specs, _chain(first, items)):
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(
                    f"{name}: expected {tuple(shape)} {dtype}, got {tuple(tensor.shape)} {tensor.dtype}"
                )
            handle.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def _chain(first, rest: Iterator) -> Iterator:
    if first is not None:
        yield first
    yield from rest


def save_safetensors_streaming(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """A mapping of tensors (possibly lazy) to ``path``, one tensor in memory at a time."""
    specs = [(name, tuple(t.shape), t.dtype) for name, t in ((n, tensors[n]) for n in tensors)]
    write_streaming(path, specs, (tensors[name] for name, _, _ in specs), metadata)
