"""What makes a checkpoint trustworthy before a run continues from it or publishes it.

- ``complete`` holds a **manifest**: every file of the checkpoint with its size and CRC-32, taken
  when every rank has written its files. ``verify_checkpoint`` re-reads them before a resume, so a
  deleted, truncated or overwritten file is a one-line error naming it, not a traceback from deep
  inside ``torch.load`` (or worse, a silently different run). Checkpoints written before manifests
  (``complete`` holds ``ok``) get the checks that need no manifest.
- ``non_finite_weights``: a checkpoint is published only if every weight is finite (each rank looks
  at the data it owns: its ZeRO-3 partition, else the whole tensor).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from torch import nn

from growth.checkpoint.layout import COMPLETE, RUN_STATE, WEIGHTS, read_run_state, without_it
from growth.distributed import World, all_reduce_sum
from growth.distributed.deepspeed_adapter import local_data
from growth.errors import CheckpointError

MANIFEST_VERSION = 1
_CHUNK = 8 << 20


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def checkpoint_files(folder: Path) -> list[Path]:
    """Every file of a checkpoint folder but ``complete`` and temporaries, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE and ".tmp" not in p.name)


def manifest(folder: Path) -> bytes:
    """The contents of ``complete``: each file's size and CRC-32."""
    files = {str(p.relative_to(folder)): [p.stat().st_size, _crc(p)] for p in checkpoint_files(folder)}
    return json.dumps({"manifest": MANIFEST_VERSION, "files": files}, indent=1).encode()


def read_manifest(folder: Path) -> dict[str, list[int]] | None:
    """The manifest in ``complete``, or None for a checkpoint written before manifests."""
    try:
        data = json.loads((folder / COMPLETE).read_bytes())
    except (OSError, ValueError):
        return None
    return data.get("files") if isinstance(data, dict) else None


def _damaged(folder: Path, name: str, what: str) -> CheckpointError:
    return CheckpointError(f"{folder / name} {what}: the checkpoint is damaged; {without_it(folder)}")


def verify_checkpoint(folder: Path, world_size: int | None = None) -> None:
    """Raise a one-line CheckpointError naming the first missing, truncated or altered file of ``folder``.

    ``world_size``: the world the checkpoint was saved by (from its run state), for the per-rank RNG
    files of a checkpoint without a manifest."""
    read_run_state(folder)  # missing or damaged run_state.json
    files = read_manifest(folder)
    if files is None:  # an older checkpoint: what can be checked without sizes
        names = [RUN_STATE, WEIGHTS] + [f"rng_rank{r}.pt" for r in range(world_size or 0)]
        for name in names:
            if not (folder / name).is_file():
                raise _damaged(folder, name, "is missing")
        if not any(folder.glob("*model_states.pt")):
            raise _damaged(folder, "mp_rank_00_model_states.pt", "is missing (no DeepSpeed model states)")
        return
    for name, (size, crc) in files.items():
        path = folder / name
        if not path.is_file():
            raise _damaged(folder, name, "is missing")
        actual = path.stat().st_size
        if actual != size:
            raise _damaged(folder, name, f"has {actual} bytes, {size} when saved (truncated or overwritten)")
        if _crc(path) != crc:
            raise _damaged(folder, name, "does not match its checksum (the file was altered)")


def non_finite_weights(module: nn.Module, world: World) -> list[str]:
    """Collective: names of parameters holding a NaN or an infinity on any rank ([] when all are finite)."""
    params = list(module.named_parameters())
    device = local_data(params[0][1]).device if params else "cpu"
    bad = torch.tensor(
        [0.0 if bool(torch.isfinite(local_data(param)).all()) else 1.0 for _, param in params] or [0.0],
        device=device,
    )
    bad = all_reduce_sum(bad).cpu()
    names = [name for name, _ in params]
    return [name for name, flag in zip(names, bad.tolist()) if flag > 0]
