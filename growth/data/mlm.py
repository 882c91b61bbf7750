"""BERT masking (Devlin et al. 2019): choose 15% of tokens; of those 80% -> <mask>, 10% -> a random
token, 10% unchanged. Targets are the original ids at chosen positions and -100 elsewhere.

Randomness is drawn from a generator seeded per sample (seed, stream position), so a resumed run,
and a run at another world size, masks every sample exactly as the uninterrupted run did.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(
    tokens: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
    special_ids: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for one sequence of token ids."""
    draws = torch.rand(tokens.shape, generator=generator)
    chosen = draws < probability
    for special in special_ids:
        chosen &= tokens != special
    replace = torch.rand(tokens.shape, generator=generator)
    random_ids = torch.randint(vocab_size, tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[chosen & (replace < 0.8)] = mask_id
    swap = chosen & (replace >= 0.8) & (replace < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, labels
