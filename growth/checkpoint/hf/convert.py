"""Hugging Face folders <-> checkpoint folders (``tools/import_hf.py``, ``tools/export_hf.py``).

**Import** (Llama, Mistral without a sliding window, Qwen2): ``config.json`` -> ``ModelConfig``
(``growth/model/hf_llama.py``: ``model_config_from_hf`` refuses what it cannot represent, naming the field),
weights renamed tensor by tensor into ``model.safetensors`` (fp32), ``config.yaml`` (``train.init_from`` set
to the folder, ``data.tokenizer`` to its tokenizer) and the tokenizer as one file, ``tokenizer.model``.
The folder is what ``tools/expand.py --from`` and ``train.init_from`` read.

**Export**: a Llama-shaped checkpoint becomes ``LlamaForCausalLM`` (``Qwen2ForCausalLM`` with q/k/v biases),
which loads without this project; any other becomes ``GrowthForCausalLM`` (``growth/model/hf_model.py``,
``model_type: growth``), which ``AutoModelForCausalLM`` loads after ``import growth.model.hf_model``.
Both with ``config.json``, ``generation_config.json``, ``model.safetensors`` and the tokenizer files.

Both verify the written folder: logits of ``transformers``' model against the project's on the same ids
(fp32), and write nothing when they differ by more than ``tolerance`` relative to the largest logit.
The tokenizer is handled by a callable the caller passes (``growth/data/hf_tokenizer.py``), so this layer
does not read tokenizers itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
import yaml

from growth.checkpoint.hf.files import HFWeights, read_hf_config
from growth.checkpoint.layout import CONFIG, TOKENIZER, WEIGHTS, resolve_checkpoint, run_tokenizer
from growth.checkpoint.safetensors_io import LazyWeights, save_safetensors_streaming
from growth.config import Config, config_from_dict
from growth.errors import ConfigError
from growth.model.config import ModelConfig, model_config_from_dict
from growth.model.hf_llama import (
    HFConversionError,
    from_hf_names,
    hf_config,
    hf_names,
    llama_incompatibility,
    model_config_from_hf,
)

IMPORT_REPORT = "import_report.json"
EXPORT_REPORT = "export_report.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Buffers some checkpoints carry that the model recomputes (RoPE frequencies).
IGNORED = ("rotary_emb.inv_freq",)
# (source, destination folder) -> special ids (role -> id), or None when the source has no tokenizer
TokenizerWriter = Callable[[Path, Path], "dict[str, int] | None"]


class _Renamed(Mapping):
    """A lazy view of ``source`` under new names: new name -> source name, tensors cast to ``dtype``; a name
    mapped to None is the scalar 1 (a Pre-LN residual's ``alpha``)."""

    def __init__(self, source: Mapping[str, torch.Tensor], names: dict[str, str | None], dtype: torch.dtype):
        self.source, self.names, self.dtype = source, names, dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        source = self.names[name]
        if source is None:
            return torch.ones((), dtype=torch.float32)
        tensor = self.source[source]
        return (tensor.to(self.dtype) if tensor.is_floating_point() else tensor).contiguous()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


# -- import ---------------------------------------------------------------------------------------------
def import_hf(
    source: Path,
    out: Path,
    tokenizer: TokenizerWriter | None = None,
    verify: bool = True,
    tolerance: float = 1e-5,
    warn: Callable[[str], None] = print,
) -> dict:
    """Write the checkpoint folder ``out`` of the Hugging Face folder ``source``; returns the report."""
    source, out = Path(source), Path(out)
    _refuse_existing(out)
    hf = read_hf_config(source)
    model = model_config_from_hf(hf)
    weights = HFWeights(source)
    names = _import_names(model, weights)
    config = Config()
    config.model = model
    config.data.seq_len = min(config.data.seq_len, model.max_seq_len)
    config.train.init_from = str(out.resolve())
    with _staging(out) as tmp:
        save_safetensors_streaming(_Renamed(weights, names, torch.float32), tmp / WEIGHTS)
        special = tokenizer(source, tmp / TOKENIZER) if tokenizer is not None else None
        if special is None:
            warn(
                f"warning: {source} has no tokenizer files (tokenizer.json); the checkpoint has none: set "
                "data.tokenizer to train with it"
            )
        else:
            config.data.tokenizer = str(out.resolve() / TOKENIZER)
        config_from_dict(config.to_dict())  # validates the whole config, as a run would load it
        config.save(tmp / CONFIG)
        report = {
            "source": str(source),
            "architecture": hf["architectures"][0],
            "weights": weights.format,
            "model": dataclasses.asdict(model),
            "special_ids": special,
            "tolerance": tolerance,
        }
        if verify:
            report.update(
                _compare(
                    lambda: _hf_from_pretrained(source),
                    model,
                    LazyWeights(tmp / WEIGHTS),
                    tolerance,
                    "the imported model",
                )
            )
        (tmp / IMPORT_REPORT).write_text(json.dumps(report, indent=2))
    return report


def _import_names(model: ModelConfig, weights: HFWeights) -> dict[str, str | None]:
    """growth name -> HF name for every tensor of the model's ``state_dict`` (the layout a run's consolidated
    ``model.safetensors`` has: a tied matrix under both names, the residuals' ``alpha`` buffers, None: 1),
    after checking that the folder holds exactly the model's tensors with the model's shapes."""
    from growth.model import build_model

    wanted = from_hf_names(model)  # HF name -> growth name
    present = set(weights)
    extra = sorted(
        n
        for n in present - set(wanted)
        if not n.endswith(IGNORED) and not (model.tie_embeddings and n == "lm_head.weight")
    )
    if extra:
        raise HFConversionError(
            f"weights: {extra[0]} has no counterpart in the model ({len(extra)} such tensors); "
            "an option config.json does not declare?"
        )
    missing = sorted(set(wanted) - present)
    if missing:
        raise HFConversionError(f"weights: {missing[0]} is missing ({len(missing)} tensors missing)")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_model(model).state_dict().items()}
    for hf_name, name in wanted.items():
        shape = tuple(weights.shape(hf_name))
        if shape != shapes[name]:
            raise HFConversionError(f"weights: {hf_name} is {shape}, config.json makes it {shapes[name]}")
    by_growth = {name: hf_name for hf_name, name in wanted.items()}
    if model.tie_embeddings:
        by_growth["head.proj.weight"] = by_growth["embed.weight"]
    # Pre-LN residuals store alpha = 1 (DeepNorm's constant; docs/design.md Sec. 3.9).
    return {name: by_growth.get(name) for name in shapes}


def read_hf_model(folder: Path) -> tuple[ModelConfig, Mapping[str, torch.Tensor]]:
    """The model of a Hugging Face folder and its full fp32 ``state_dict`` under the project's names, read
    lazily: a Llama / Mistral / Qwen2 folder through the import's name map, a ``GrowthForCausalLM`` folder
    (``model_type: growth``, written by ``tools/export_hf.py``) through its ``model.`` prefix."""
    from growth.model import build_model

    hf = read_hf_config(folder)
    weights = HFWeights(folder)
    if not isinstance(hf.get("growth"), dict):  # GrowthHFConfig keeps the ModelConfig there (hf_model.py)
        model = model_config_from_hf(hf)
        return model, _Renamed(weights, _import_names(model, weights), torch.float32)
    model = model_config_from_dict(dict(hf["growth"]))

    with torch.device("meta"):
        names = list(build_model(model).state_dict())
    tied = {"head.proj.weight": "embed.weight"} if model.tie_embeddings else {}
    return model, _Renamed(weights, {name: f"model.{tied.get(name, name)}" for name in names}, torch.float32)


def _hf_from_pretrained(folder: Path):
    from transformers import AutoModelForCausalLM

    from growth.model.hf_model import register_with_transformers  # a ``model_type: growth`` folder loads too

    register_with_transformers()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


# -- export ---------------------------------------------------------------------------------------------
def export_hf(
    source: Path,
    out: Path,
    dtype: str = "fp32",
    tokenizer: TokenizerWriter | None = None,
    tokenizer_path: Path | None = None,
    verify: bool = True,
    tolerance: float = 1e-5,
    warn: Callable[[str], None] = print,
) -> dict:
    """Write the Hugging Face folder ``out`` of a checkpoint (a run dir or a checkpoint folder)."""
    source, out = Path(source), Path(out)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} must be one of {' | '.join(DTYPES)}")
    _refuse_existing(out)
    folder = resolve_checkpoint(source, "--from")
    config = config_from_dict(yaml.safe_load((folder / CONFIG).read_text()))
    model = config.model
    weights = LazyWeights(folder / WEIGHTS)
    tokenizer_path = tokenizer_path or find_tokenizer(folder, config)
    with _staging(out) as tmp:
        special = (
            tokenizer(tokenizer_path, tmp) if tokenizer is not None and tokenizer_path is not None else None
        )
        if special is None:
            warn(f"warning: no tokenizer found for {folder} (pass --tokenizer); {out} has no tokenizer files")
        ids = {f"{role}_token_id": (special or {}).get(role) for role in ("bos", "eos", "pad")}
        reason = llama_incompatibility(model)
        if reason is None:
            hf = hf_config(model, **ids)
            names = {dst: src for src, dst in hf_names(model).items()}
            use_cache = True
        else:
            from growth.model.hf_model import GrowthHFConfig, supports_kv_cache

            hf = GrowthHFConfig(growth=dataclasses.asdict(model), **ids)
            hf.architectures = ["GrowthForCausalLM"]
            names = {
                f"model.{name}": name
                for name in weights
                if not (model.tie_embeddings and name == "head.proj.weight")
            }
            use_cache = supports_kv_cache(model)
        hf.dtype = DTYPES[dtype]
        hf.save_pretrained(tmp)
        _generation_config(ids, use_cache).save_pretrained(tmp)
        save_safetensors_streaming(
            _Renamed(weights, names, DTYPES[dtype]), tmp / "model.safetensors", {"format": "pt"}
        )
        report = {
            "source": str(folder),
            "architecture": hf.architectures[0],
            "dtype": dtype,
            "needs_import_growth": reason is not None,
            "why_not_llama": reason,
            "tokenizer": str(tokenizer_path) if special is not None else None,
            "special_ids": special,
            "tolerance": tolerance,
        }
        if verify:
            reference = (
                weights if dtype == "fp32" else _Renamed(weights, {n: n for n in weights}, DTYPES[dtype])
            )
            report.update(
                _compare(lambda: _hf_from_pretrained(tmp), model, reference, tolerance, "the exported model")
            )
        (tmp / EXPORT_REPORT).write_text(json.dumps(report, indent=2))
    return report


def find_tokenizer(folder: Path, config: Config) -> Path | None:
    """The tokenizer a checkpoint was trained with: ``data.tokenizer`` when it is a Hugging Face folder (its
    tokenizer_config.json says which token is which), else the checkpoint's or its run's ``tokenizer.model``,
    else ``data.tokenizer``."""
    configured = Path(config.data.tokenizer) if config.data.tokenizer else None
    if configured is not None and configured.is_dir():
        return configured
    own = folder / TOKENIZER
    if own.is_file():
        return own
    return run_tokenizer(folder) or (configured if configured is not None and configured.exists() else None)


def _generation_config(ids: dict, use_cache: bool):
    """Special ids, and no key/value cache for the blocks that have none (``growth/model/hf_model.py``)."""
    from transformers import GenerationConfig

    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None}, use_cache=use_cache)


# -- shared ---------------------------------------------------------------------------------------------
def _compare(
    load_hf: Callable, model: ModelConfig, weights: Mapping[str, torch.Tensor], tolerance: float, what: str
) -> dict:
    """Logits of transformers' model and of the project's on random ids, fp32; refuse beyond ``tolerance``."""
    from growth.model import build_model

    ours = build_model(dataclasses.replace(model, dropout=0.0))
    state = {name: weights[name].float() for name in ours.state_dict()}
    ours.load_state_dict(state, strict=True)
    ours.eval()
    theirs = load_hf()
    ids = torch.randint(
        model.vocab_size, (2, min(32, model.max_seq_len)), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        reference, logits = ours(ids), theirs(ids).logits.float()
    diff, scale = (logits - reference).abs().max().item(), reference.abs().max().item()
    relative = diff / max(scale, 1e-12)
    if not relative <= tolerance:
        raise ConfigError(
            f"{what} differs from the project's: max |logit diff| {diff:.3g} = {relative:.3g} of the "
            f"largest logit (> {tolerance:g}); nothing was written"
        )
    return {"max_abs_logit_diff": diff, "relative_logit_diff": relative, "logit_scale": scale}


def _refuse_existing(out: Path) -> None:
    if out.exists():
        raise ConfigError(f"--out {out} already exists; choose a new folder (nothing was overwritten)")


class _staging:
    """A temporary sibling of ``out`` to fill, renamed to ``out`` on success and removed on any failure."""

    def __init__(self, out: Path):
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.tmp.rename(self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


__all__ = ["HFConversionError", "export_hf", "find_tokenizer", "import_hf"]
