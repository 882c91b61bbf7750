"""Read what growth needs from any checkpoint the trainer writes; write a grown checkpoint.

Weights come from the consolidated ``model.safetensors``; EMA from ``ema.pt`` (full fp32); Adam
moments from DeepSpeed's own files: the torch optimizer state in ``mp_rank_00_model_states.pt`` for
ZeRO 0, and for ZeRO 1-3 at any world size the per-parameter ``zero/<name>/{exp_avg,exp_avg_sq,step}.pt``
of a universal checkpoint (``ds_to_universal``, made once next to the source).

A grown checkpoint is a folder that ``train.init_from`` (and ``--config DIR/config.yaml``) continue
from: model.safetensors, config.yaml, run_state.json, ema.pt, optimizer_state.pt, tokenizer.model,
expand_report.json. It is written under a temporary name and renamed, and never over an existing one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open

from growth.config import Config, ConfigError, config_from_dict
from growth.model import build_model
from growth.train import checkpoint as ckpt
from growth.train.distributed import World
from growth.train.engine import param_groups


class LazyWeights(Mapping):
    """A safetensors file as a read-only mapping that loads each tensor only when it is asked for,
    so growing a large model never holds the whole source in memory next to the grown one."""

    def __init__(self, path: Path):
        self.path = path
        with safe_open(str(path), framework="pt") as handle:
            self._names = list(handle.keys())

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class SourceCheckpoint:
    folder: Path
    config: Config
    weights: Mapping[str, torch.Tensor]
    ema: dict | None
    moments: dict[str, dict[str, torch.Tensor]] | None
    run_state: ckpt.RunState
    tokenizer: Path | None


def read_source(path: Path) -> SourceCheckpoint:
    folder = ckpt.resolve_checkpoint(path, "--from")
    try:
        config = config_from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
        weights = LazyWeights(folder / "model.safetensors")
    except (OSError, SafetensorError, yaml.YAMLError, AttributeError) as err:
        raise ConfigError(f"--from {folder}: unreadable checkpoint ({type(err).__name__}: {str(err)[:120]})") from None
    run_state = ckpt.read_run_state(folder) if (folder / "run_state.json").is_file() else ckpt.RunState()
    ema = torch.load(folder / "ema.pt", weights_only=False) if (folder / "ema.pt").is_file() else None
    tokenizer = next((p for p in (folder / "tokenizer.model", folder.parent.parent / "tokenizer.model") if p.is_file()), None)
    return SourceCheckpoint(folder, config, weights, ema, read_moments(folder, config, run_state), run_state, tokenizer)


def read_moments(folder: Path, config: Config, state: ckpt.RunState) -> dict[str, dict[str, torch.Tensor]] | None:
    if (folder / "optimizer_state.pt").is_file():  # a grown checkpoint that was never trained
        return torch.load(folder / "optimizer_state.pt", weights_only=False)
    if state.zero_stage == 0:
        return _moments_from_torch_state(folder, config)
    universal = ckpt.ensure_universal(folder, World(0, 0, 1))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        shapes = {name: torch.Size(handle.get_slice(name).get_shape()) for name in handle.keys()}
    applied_steps = torch.tensor(float(state.step - state.skipped_steps))
    moments = {}
    for entry in sorted((universal / "zero").iterdir()):
        if not (entry / "exp_avg.pt").is_file():
            continue
        moments[entry.name] = {key: _universal_tensor(entry / f"{key}.pt", shapes[entry.name])
                               for key in ("exp_avg", "exp_avg_sq")}
        step_file = entry / "step.pt"  # ZeRO-3's universal files have no step: count applied steps
        moments[entry.name]["step"] = (torch.as_tensor(torch.load(step_file, weights_only=False), dtype=torch.float32)
                                       if step_file.is_file() else applied_steps)
    return moments


def _universal_tensor(path: Path, shape: torch.Size) -> torch.Tensor:
    """ZeRO 1/2 store {"param": tensor, "cat_dim": ...}; ZeRO-3 a flat tensor."""
    value = torch.load(path, weights_only=False)
    value = value["param"] if isinstance(value, dict) else value
    return value.float().reshape(shape)


def _moments_from_torch_state(folder: Path, config: Config) -> dict[str, dict[str, torch.Tensor]] | None:
    files = list(folder.glob("mp_rank_00_model_states.pt"))
    if not files:
        return None
    optimizer = torch.load(files[0], weights_only=False).get("optimizer")
    if not optimizer:
        return None
    with torch.device("meta"):
        model = build_model(config.model)
    names = {id(p): n for n, p in model.named_parameters()}
    ordered = [names[id(p)] for group in param_groups(model, 0.0) for p in group["params"]]
    return {ordered[index]: {k: v.float() if k != "step" else torch.as_tensor(v, dtype=torch.float32)
                             for k, v in state.items()}
            for index, state in optimizer["state"].items()}


DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


def save_safetensors_streaming(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors format (8-byte header size, JSON header, raw little-endian data), written one
    tensor at a time: ``safetensors.torch.save_file`` first serialises everything into one buffer,
    which would double peak memory when growing a large model. Read back with ``load_file``."""
    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for tensor in tensors.values():
            handle.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)


def write_grown(out: Path, config: Config, weights: dict[str, torch.Tensor], ema: dict | None,
                moments: dict | None, run_state: ckpt.RunState, tokenizer: Path | None, report: dict) -> Path:
    """Write the grown checkpoint folder atomically (temporary name, then rename)."""
    if out.exists():
        raise ConfigError(f"--out {out} already exists; choose a new folder (nothing was overwritten)")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_safetensors_streaming(weights, tmp / "model.safetensors")
        config.train.init_from = str(out.resolve())
        config.train.resume = "auto"
        config.save(tmp / "config.yaml")
        (tmp / "run_state.json").write_text(json.dumps(dataclasses.asdict(run_state), indent=2))
        if ema is not None:
            torch.save(ema, tmp / "ema.pt")
        if moments is not None:
            torch.save(moments, tmp / "optimizer_state.pt")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / "tokenizer.model")
        (tmp / "expand_report.json").write_text(json.dumps(report, indent=2))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
