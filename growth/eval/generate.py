"""Text from a trained model (``tools/generate.py``): a run directory (its newest complete checkpoint), one
checkpoint folder, or a Hugging Face folder written by ``tools/export_hf.py``, with the run's own tokenizer.

The decoding is ``growth/model/sampling.py`` (KV cache for transformer layers, recompute for GAU/FLASH); this
module finds the weights (raw, or EMA with ``ema=True``), the depth-growth gates a checkpoint was saved with (a
checkpoint grown by ramped depth growth is the small model's function at m = 0), the tokenizer and the device
(bf16 on a GPU, fp32 on CPU). Bad input is a ``ConfigError`` / ``DataError`` naming the flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from growth import checkpoint as ckpt
from growth.checkpoint.depth_gates import saved_depth_gates
from growth.checkpoint.hf import find_tokenizer, read_hf_model
from growth.config import load_config
from growth.data.prompt import encode_prompt, sample_text
from growth.data.tokenizer import Tokenizer
from growth.errors import ConfigError
from growth.model.config import ModelConfig
from growth.model.mask import OBJECTIVES
from growth.model.sampling import SamplingOptions, generate, inference_model
from growth.model.transformer import GrowthLM

HF_CONFIG = "config.json"


@dataclass
class LoadedModel:
    model: GrowthLM
    tokenizer: Tokenizer
    description: str  # what was loaded, for a header line


@dataclass
class Weights:
    model: ModelConfig
    tensors: Mapping[str, torch.Tensor]
    gates: dict[int, float]
    tokenizer: Path | None
    description: str


def check_sampling(options: SamplingOptions, num_samples: int) -> None:
    """The flags' ranges, each refused in one line naming it."""
    if options.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {options.max_new_tokens}")
    if not (math.isfinite(options.temperature) and options.temperature >= 0):
        raise ConfigError(f"--temperature must be >= 0 (0: greedy), got {options.temperature}")
    if options.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (0: every token), got {options.top_k}")
    if not 0 < options.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (1: every token), got {options.top_p}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """``auto``: the GPU when there is one; bf16 there (the training precision), fp32 on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use --device cpu")
    if dtype == "auto":
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    return torch.device(device), {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]


def read_weights(path: Path, ema: bool = False) -> Weights:
    """The model, weights, gates and tokenizer of a run dir, checkpoint folder or Hugging Face folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"checkpoint {path} does not exist; pass a run directory, a checkpoint folder or a Hugging Face folder"
        )
    if (path / HF_CONFIG).is_file() and not (path / ckpt.CONFIG).is_file():
        return _hf_weights(path, ema)
    return _checkpoint_weights(path, ema)


def _checkpoint_weights(path: Path, ema: bool) -> Weights:
    folder = ckpt.resolve_checkpoint(path, "checkpoint")
    config = load_config(folder / ckpt.CONFIG)
    if config.contrastive.objective != "none":
        raise ConfigError(
            f"{folder} is a sentence encoder (contrastive.objective={config.contrastive.objective}), not a "
            "language model; generate from the pretraining run it started from"
        )
    try:
        tensors: dict[str, torch.Tensor] = ckpt.load_weights(folder)
    except SafetensorError as err:
        raise ConfigError(
            f"{folder / ckpt.WEIGHTS} is unreadable ({err}); the checkpoint is damaged"
        ) from None
    state = ckpt.run_state_or_empty(folder)
    which = "raw weights"
    if ema:
        tensors, which = _ema_weights(folder, tensors, config.model.tie_embeddings)
    return Weights(
        config.model,
        tensors,
        saved_depth_gates(state),
        find_tokenizer(folder, config),
        f"{folder} (step {state.step}, {which})",
    )


def _ema_weights(
    folder: Path, raw: dict[str, torch.Tensor], tied: bool
) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's EMA weights as a full state dict. EMA covers parameters by name (a tied matrix once);
    buffers come from the raw weights, and a tied head is the EMA embedding."""
    saved = ckpt.read_ema(folder)
    if saved is None:
        raise ConfigError(f"--ema: {folder} has no EMA weights (the run trained with train.ema_decay=0)")
    tensors = {name: saved["weights"][name] if name in saved["weights"] else t for name, t in raw.items()}
    if tied:
        tensors["head.proj.weight"] = tensors["embed.weight"]
    return tensors, f"EMA weights (decay {saved['decay']:g})"


def _hf_weights(folder: Path, ema: bool) -> Weights:
    if ema:
        raise ConfigError(
            f"--ema: {folder} is a Hugging Face folder, which holds one set of weights and no EMA"
        )
    model, tensors = read_hf_model(folder)
    tokenizer = folder if (folder / "tokenizer.json").is_file() else None
    return Weights(model, tensors, {}, tokenizer, f"{folder} (Hugging Face folder)")


def load_for_sampling(
    path: Path,
    tokenizer: Path | None = None,
    ema: bool = False,
    device: str = "auto",
    dtype: str = "auto",
) -> LoadedModel:
    weights = read_weights(path, ema)
    if not OBJECTIVES.get(weights.model.objective).causal:
        raise ConfigError(
            f"{path}: model.objective={weights.model.objective} is not a causal language model (it fills in "
            "masked tokens from both sides), so it cannot continue a prompt; generate from a model.objective=clm "
            "model"
        )
    tokenizer_path = tokenizer or weights.tokenizer
    if tokenizer_path is None:
        raise ConfigError(
            f"{path}: no tokenizer found (tokenizer.model beside the checkpoint or in its run directory, or "
            "data.tokenizer); pass --tokenizer"
        )
    loaded_tokenizer = Tokenizer.load(tokenizer_path)
    if loaded_tokenizer.vocab_size > weights.model.vocab_size:
        raise ConfigError(
            f"--tokenizer {tokenizer_path} has {loaded_tokenizer.vocab_size} pieces, more than the model's "
            f"{weights.model.vocab_size} (model.vocab_size): it is not the tokenizer the model was trained with"
        )
    on, precision = resolve_device(device, dtype)
    model = inference_model(weights.model, weights.tensors, on, precision, weights.gates)
    where = f"{on.type} {str(precision).removeprefix('torch.')}"
    return LoadedModel(model, loaded_tokenizer, f"{weights.description}, {where}")


def sample_ids(
    loaded: LoadedModel, prompt: list[int], options: SamplingOptions, num_samples: int = 1, seed: int = 0
) -> torch.Tensor:
    """(num_samples, len(prompt) + n) ids; the same seed gives the same samples on the same device."""
    device = loaded.model.embed.weight.device
    generator = torch.Generator(device).manual_seed(seed)
    batch = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
    eos = loaded.tokenizer.eos_id
    return generate(loaded.model, batch, options, generator, eos if eos >= 0 else None)


def sample_texts(
    loaded: LoadedModel, prompt: str, options: SamplingOptions, num_samples: int = 1, seed: int = 0
) -> list[str]:
    """The prompt and its continuation, ``num_samples`` times."""
    ids = encode_prompt(loaded.tokenizer, prompt, "--prompt")
    out = sample_ids(loaded, ids, options, num_samples, seed)
    return [sample_text(loaded.tokenizer, row.tolist(), len(ids)) for row in out]
