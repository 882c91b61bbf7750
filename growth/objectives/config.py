"""The ``contrastive`` section: contrastive fine-tuning (docs/contrastive.md), and R-Drop's checks."""

from __future__ import annotations

from dataclasses import dataclass

from growth.errors import ConfigError
from growth.objectives.contrastive_losses import CONTRASTIVE_LOSSES, similarity_logits
from growth.schema import require_positive

# contrastive.objective=none turns the contrastive stage off: a value of the key, not a registered loss.
OBJECTIVES_OFF = ("none",)
OPTIONS: dict[str, tuple[str, ...]] = {
    "contrastive.format": ("sts", "pairs", "text"),
    "contrastive.simcse_variant": ("symmetric", "paper"),  # contrastive_losses.py SIMCSE_VARIANTS
}


@dataclass
class ContrastiveConfig:
    """Contrastive fine-tuning (docs/contrastive.md); objective=none is token pretraining."""

    objective: str = "none"  # none | simcse (unsupervised) | infonce (sentence pairs) | cosent (scored pairs)
    data: str = (
        "bundled:sts-train"  # training file in `format`; bundled:<name> for data shipped in the package
    )
    format: str = "sts"  # sts (STS-B: genre, file, year, id, score, s1, s2, ...) | pairs (s1<TAB>s2) | text (a sentence a line)
    eval_data: str = "bundled:sts-dev"  # STS-B layout, for val/spearman; empty: none
    temperature: float = 0.05  # tau of SimCSE and InfoNCE
    # SimCSE's form: symmetric (Su's: all 2N views against each other; the default, so earlier results hold)
    # | paper (Gao et al. 2021 Eq. 1: N first views against the N second views, one direction)
    simcse_variant: str = "symmetric"
    cosent_scale: float = 20.0  # lambda of CoSENT
    positive_min_score: float = 4.0  # infonce on scored pairs: only pairs scored >= this are positives
    max_len: int = 64  # tokens per sentence (longer ones are truncated)
    batch_size: int = (
        0  # global examples per optimizer step; 0: train.micro_batch_size * train.grad_accum * world
    )


def validate_contrastive(c: ContrastiveConfig, max_seq_len: int, grows: bool) -> None:
    """Reject impossible values with a one-line message naming the key; ``grows``: train.growth is set."""
    for dotted, allowed in {
        "contrastive.objective": OBJECTIVES_OFF + CONTRASTIVE_LOSSES.names(),
        **OPTIONS,
    }.items():
        value = getattr(c, dotted.split(".")[1])
        if value not in allowed:
            raise ConfigError(f"{dotted} must be one of {' | '.join(allowed)}, got {value!r}")
    require_positive("contrastive", c, "temperature", "cosent_scale", "max_len")
    if c.objective != "none" and grows:
        raise ConfigError(
            "train.growth grows a pretraining run; contrastive fine-tuning does not grow (remove train.growth)"
        )
    if c.objective != "none" and c.max_len > max_seq_len:
        raise ConfigError(f"contrastive.max_len ({c.max_len}) must be <= model.max_seq_len ({max_seq_len})")
    if c.batch_size < 0 or c.batch_size == 1:
        raise ConfigError(
            f"contrastive.batch_size={c.batch_size} is too small for in-batch negatives: use >= 2 (0: "
            "train.micro_batch_size * train.grad_accum * world size)"
        )
    if not 0.0 <= c.positive_min_score <= 5.0:
        raise ConfigError(
            f"contrastive.positive_min_score must be in [0, 5] (STS scores), got {c.positive_min_score}"
        )
    if c.objective == "cosent" and c.format != "sts":
        raise ConfigError("contrastive.objective=cosent needs scored pairs: set contrastive.format=sts")
    if c.objective == "infonce" and c.format == "text":
        raise ConfigError(
            "contrastive.objective=infonce needs sentence pairs: set contrastive.format=pairs or sts"
        )


def validate_rdrop(alpha: float, dropout: float, objective: str) -> None:
    """``train.rdrop_alpha``: R-Drop needs dropout (two passes without it are identical: nothing to
    regularise) and, for a contrastive ``objective``, a distribution per row of its similarity matrix."""
    if alpha < 0:
        raise ConfigError(f"train.rdrop_alpha must be >= 0 (0 turns R-Drop off), got {alpha}")
    if alpha == 0:
        return
    if dropout == 0:
        raise ConfigError(
            f"train.rdrop_alpha={alpha} needs model.dropout > 0: without dropout the two passes are "
            "identical and there is nothing to regularise (R-Drop used 0.1); set model.dropout or "
            "train.rdrop_alpha=0"
        )
    if objective != "none" and similarity_logits(objective) is None:
        raise ConfigError(
            f"train.rdrop_alpha={alpha} with contrastive.objective={objective}: R-Drop compares the two "
            "passes' similarity distributions, and CoSENT ranks pair cosines without one; use simcse or "
            "infonce, or train.rdrop_alpha=0"
        )
