"""Training-step throughput on random tokens: one model, growth vs its HF Llama twin (each eager and
compiled), and layer kinds (attention, GAU, FLASH) across sequence lengths.

A step is forward + causal-LM cross-entropy + backward + AdamW (foreach). Figures are medians over
steps, and models that are compared run in alternating rounds (A B, B A, A B, ...) so that noise and
drift on a shared machine hit each of them alike; ratios are medians of per-round ratios. A compiled
model is ``model.compile()`` (torch.compile in place, what ``train.compile`` does under the engine),
a deep copy of the eager one, so both start from the same weights.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from growth.config import ModelConfig, load_config
from growth.model import accounting, build_model
from growth.model.hf_llama import llama_config


def _logits(output: Any) -> torch.Tensor:
    """growth models return logits; transformers models return an output object with ``.logits``."""
    return output.logits if hasattr(output, "logits") else output


def make_step(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> Callable[[], float]:
    """A closure that runs one training step on fixed random token ids and returns its seconds. The
    ids live on the model's device; on CUDA the step is timed to its end (synchronised), with torch's
    fused AdamW (on CPU foreach, as before)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(model.config.vocab_size, (batch_size, seq_len + 1), generator=generator).to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:].reshape(-1)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    model.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        sync()
        start = time.perf_counter()
        logits = _logits(model(inputs))
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    return step


def summarize(seconds: list[float], tokens_per_step: int) -> dict[str, Any]:
    """Median step time as ms/step, tokens/s and us/token (the fastest step and raw times kept too)."""
    median = statistics.median(seconds)
    return {
        "ms_per_step": 1e3 * median,
        "ms_per_step_min": 1e3 * min(seconds),
        "tokens_per_s": tokens_per_step / median,
        "us_per_token": 1e6 * median / tokens_per_step,
        "seconds": seconds,
    }


def training_step_throughput(
    model: nn.Module, batch_size: int, seq_len: int, steps: int = 5, warmup: int = 1
) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup`` untimed ones) of one model."""
    step = make_step(model, batch_size, seq_len)
    for _ in range(warmup):
        step()
    return summarize([step() for _ in range(steps)], batch_size * seq_len)


def interleaved(
    models: dict[str, nn.Module], batch_size: int, seq_len: int, rounds: int, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Time one step of each model per round, in alternating order (A B, B A, ...); summaries per model."""
    steps = {name: make_step(model, batch_size, seq_len) for name, model in models.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    names, times = list(models), {name: [] for name in models}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(steps[name]())
    return {name: summarize(seconds, batch_size * seq_len) for name, seconds in times.items()}


def llama_twin(config: ModelConfig) -> nn.Module:
    """A randomly initialised ``transformers.LlamaForCausalLM`` of the same shape (built locally, no download)."""
    from transformers import LlamaForCausalLM

    hf_config = llama_config(config)  # raises unless layer=transformer, pre, rmsnorm, swiglu, full rope
    hf_config.use_cache = False  # training: no KV cache
    return LlamaForCausalLM(hf_config)


def compiled_copy(model: nn.Module) -> nn.Module:
    """A deep copy (same weights) compiled in place: parameter names unchanged, as under ``train.compile``."""
    twin = copy.deepcopy(model)
    twin.compile()
    return twin


def round_ratio(times: dict[str, list[float]], faster: list[str], slower: list[str]) -> list[float]:
    """Per round: the best (least) time among ``slower`` over the best among ``faster`` (> 1: ``faster``
    wins). Each round's steps ran back to back, so a ratio sees one machine state."""
    return [
        min(times[n][r] for n in slower) / min(times[n][r] for n in faster)
        for r in range(len(times[faster[0]]))
    ]


def compare_with_llama(
    config: ModelConfig, batch_size: int, seq_len: int, rounds: int, warmup: int = 1, compiled: bool = False
) -> dict[str, Any]:
    """growth vs HF Llama of the same shape, interleaved; ``ratio``: growth / HF tokens/s, median over
    rounds. With ``compiled``, compiled copies of both run in the same rounds, and
    ``ratio_compiled`` (compiled growth / compiled HF) and ``ratio_best`` (the better growth mode / the
    better of the two references, per round) are added."""
    torch.manual_seed(0)
    models = {"growth": build_model(config), "hf_llama": llama_twin(config)}
    if compiled:
        models.update(
            growth_compiled=compiled_copy(models["growth"]),
            hf_llama_compiled=compiled_copy(models["hf_llama"]),
        )
    result: dict[str, Any] = interleaved(models, batch_size, seq_len, rounds, warmup + (1 if compiled else 0))
    for name, model in models.items():
        result[name]["params"] = accounting.num_params(model)
    times = {name: result[name]["seconds"] for name in models}
    result["round_ratios"] = round_ratio(times, ["growth"], ["hf_llama"])
    result["ratio"] = statistics.median(result["round_ratios"])
    result["ratio_of_medians"] = result["growth"]["tokens_per_s"] / result["hf_llama"]["tokens_per_s"]
    if compiled:
        result["round_ratios_compiled"] = round_ratio(times, ["growth_compiled"], ["hf_llama_compiled"])
        result["ratio_compiled"] = statistics.median(result["round_ratios_compiled"])
        result["round_ratios_best"] = round_ratio(
            times, ["growth", "growth_compiled"], ["hf_llama", "hf_llama_compiled"]
        )
        result["ratio_best"] = statistics.median(result["round_ratios_best"])
    return result


def layer_kinds(base: ModelConfig, chunk_size: int) -> dict[str, list[str]]:
    """Overrides for the three layer kinds; a GAU stack has twice the layers (2 GAU ~ 1 block in params)."""
    gau = ["model.layer=gau", f"model.n_layers={2 * base.n_layers}", "model.gau_attention=softmax"]
    return {"attention": [], "gau": gau, "flash": [*gau, f"model.chunk_size={chunk_size}"]}


def seq_len_sweep(
    overrides: list[str],
    seq_lens: list[int],
    tokens_per_batch: int = 4096,
    chunk_size: int = 128,
    rounds: int = 2,
    warmup: int = 1,
    compiled_seq_lens: tuple[int, ...] | list[int] = (),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Attention vs GAU vs FLASH at each sequence length, same d_model and tokens per step (interleaved).
    At ``compiled_seq_lens`` compiled copies run in the same rounds (rows with ``compiled`` true).
    ``ratio_to_attention``: per-round median of a kind's step time over attention's in the same mode."""
    kinds = layer_kinds(load_config(overrides=overrides).model, chunk_size)
    rows = []
    for seq_len in seq_lens:
        batch_size = max(1, tokens_per_batch // seq_len)
        lengths = [f"model.max_seq_len={seq_len}", f"data.seq_len={seq_len}"]
        configs = {
            kind: load_config(overrides=[*overrides, *extra, *lengths]).model for kind, extra in kinds.items()
        }
        torch.manual_seed(0)
        models = {
            kind: build_model(config).to(device=device, dtype=dtype) for kind, config in configs.items()
        }
        modes = [(kind, kind, False) for kind in models]
        if seq_len in compiled_seq_lens:
            models.update({f"{kind}_compiled": compiled_copy(models[kind]) for kind in configs})
            modes += [(f"{kind}_compiled", kind, True) for kind in configs]
        timings = interleaved(
            models, batch_size, seq_len, rounds, warmup + (1 if seq_len in compiled_seq_lens else 0)
        )
        for name, kind, compiled in modes:
            timing, base = timings[name], timings["attention_compiled" if compiled else "attention"]
            flops = accounting.flops_per_token(configs[kind], seq_len)
            rows.append(
                {
                    "kind": kind,
                    "compiled": compiled,
                    "seq_len": seq_len,
                    "batch_size": batch_size,
                    "n_layers": configs[kind].n_layers,
                    "params": accounting.num_params(models[name]),
                    "gflops_per_s": flops * timing["tokens_per_s"] / 1e9,
                    "ratio_to_attention": statistics.median(
                        t / a for t, a in zip(timing["seconds"], base["seconds"])
                    ),
                    **timing,
                }
            )
    return rows
