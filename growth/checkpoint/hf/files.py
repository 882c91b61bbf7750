"""A Hugging Face ``save_pretrained`` folder on disk: its ``config.json`` and its weights, read lazily.

Weights may be ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``), or the older
``pytorch_model.bin`` (sharded: ``pytorch_model.bin.index.json``). Tensors are read one at a time (a ``.bin``
shard is memory-mapped, and only the current one is kept), so importing never holds the model twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from growth.errors import CheckpointError

CONFIG_JSON = "config.json"
# (single file, index of shards), in order of preference
WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


def read_hf_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG_JSON
    if not path.is_file():
        raise CheckpointError(f"--from {folder}: no {CONFIG_JSON}; pass a folder written by save_pretrained")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"--from {folder}: {CONFIG_JSON} is not valid JSON ({err})") from None


class HFWeights(Mapping):
    """name -> tensor of a ``save_pretrained`` folder, each tensor loaded when asked for."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._file: dict[str, Path] = {}
        for single, index in WEIGHT_LAYOUTS:
            if (self.folder / index).is_file():
                weight_map = json.loads((self.folder / index).read_text())["weight_map"]
                self._file = {name: self.folder / shard for name, shard in weight_map.items()}
                break
            if (self.folder / single).is_file():
                self._file = {name: self.folder / single for name in self._names(self.folder / single)}
                break
        if not self._file:
            names = ", ".join(n for layout in WEIGHT_LAYOUTS for n in layout)
            raise CheckpointError(f"--from {self.folder}: no weights ({names})")
        missing = sorted({str(p.name) for p in self._file.values() if not p.is_file()})
        if missing:
            raise CheckpointError(
                f"--from {self.folder}: the weight index names missing shards: {', '.join(missing)}"
            )
        self._loaded: tuple[Path, dict] | None = None  # the current .bin shard

    @staticmethod
    def _names(path: Path) -> list[str]:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        return list(_load_bin(path))

    def __getitem__(self, name: str) -> torch.Tensor:
        path = self._file[name]
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        if self._loaded is None or self._loaded[0] != path:
            self._loaded = (path, _load_bin(path))
        return self._loaded[1][name]

    def shape(self, name: str) -> torch.Size:
        """A tensor's shape, read from the safetensors header without loading it."""
        path = self._file[name]
        if path.suffix != ".safetensors":
            return self[name].shape
        with safe_open(str(path), framework="pt") as handle:
            return torch.Size(handle.get_slice(name).get_shape())

    def __iter__(self) -> Iterator[str]:
        return iter(self._file)

    def __len__(self) -> int:
        return len(self._file)

    @property
    def format(self) -> str:
        suffixes = {p.suffix for p in self._file.values()}
        shards = len(set(self._file.values()))
        return (
            f"{'safetensors' if suffixes == {'.safetensors'} else '.bin'}, {shards} shard{'s' * (shards > 1)}"
        )


def _load_bin(path: Path) -> dict:
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
