"""Autoregressive sampling from a causal ``GrowthLM``: greedy, temperature, top-k and nucleus (top-p).

``generate`` extends every row of a prompt batch one token at a time. Standard transformer layers decode with a
key/value cache (``kv_cache.py``); GAU/FLASH layers recompute the whole sequence each step (same tokens, more
work). The context is the last ``model.max_seq_len`` tokens: past it, every step recomputes that window, as
nanoGPT's ``sample.py`` crops its context.

Randomness comes only from the ``generator`` passed in, never from torch's global RNG, so sampling inside a
training run leaves the training's random stream as it was, and the same seed gives the same text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from growth.model.config import ModelConfig
from growth.model.kv_cache import KVCache, supports_kv_cache
from growth.model.transformer import GrowthLM, set_depth_gate


@dataclass(frozen=True)
class SamplingOptions:
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens; 0: all
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p; 1: all


def filtered_logits(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """(B, V) fp32 logits / temperature with the tokens outside top-k and outside the nucleus set to -inf
    (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", Sec. 3.1: the smallest set whose
    probability mass reaches p; the most likely token always stays)."""
    logits = logits.float() / options.temperature
    if 0 < options.top_k < logits.shape[-1]:
        kth = torch.topk(logits, options.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if options.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens more likely than this one
        drop_sorted = before >= options.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(
    logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of (B, V) logits: argmax at temperature 0, else a draw from the filtered softmax."""
    if options.temperature == 0:
        return logits.argmax(-1)
    probs = filtered_logits(logits, options).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def last_logits(model: GrowthLM, ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits of the next token after ``ids`` (B, T): the uncached tokens through the cache while the sequence
    fits the window, else the whole window recomputed."""
    window = model.config.max_seq_len
    if cache is not None and ids.shape[1] <= window:
        return model(ids[:, cache.length :], cache=cache)[:, -1]
    return model(ids[:, -window:])[:, -1]


@torch.no_grad()
def generate(
    model: GrowthLM,
    prompt: torch.Tensor,
    options: SamplingOptions,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """(B, T) prompt ids -> (B, T + n) with n <= ``options.max_new_tokens``; ``model`` in eval mode. A row that
    produced ``eos_id`` continues with ``eos_id`` until every row has (as ``transformers``' ``generate``).
    ``use_cache=False`` recomputes every step (the reference the cache is tested against)."""
    cache = KVCache(len(model.layers)) if use_cache and supports_kv_cache(model.config) else None
    ids = prompt
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for _ in range(options.max_new_tokens):
        token = next_tokens(last_logits(model, ids, cache), options, generator)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        ids = torch.cat((ids, token[:, None]), dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return ids


def inference_model(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    gates: Mapping[int, float] | None = None,
) -> GrowthLM:
    """A model in eval mode holding ``weights`` (its full ``state_dict``), with depth-growth gates {layer: m}
    (``transformer.set_depth_gate``). Building it draws its initial weights from a forked RNG, so a caller's
    random stream (a training run's) is left as it was."""
    with torch.random.fork_rng(devices=[]):
        model = GrowthLM(replace(config, dropout=0.0))
    model.load_state_dict(dict(weights), strict=True)
    for index, m in (gates or {}).items():
        set_depth_gate(model.layers, index, m)
    return model.to(device=device, dtype=dtype).eval()
