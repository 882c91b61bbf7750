"""``model.attention=performer``: FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers").

softmax(q.k / sqrt(d)) is approximated by positive random features, linear in the sequence length:
    exp(q.k / sqrt(d)) = E_w[phi(q') phi(k')],  q' = q d^(-1/4),  k' = k d^(-1/4)           (Lemma 1)
    phi(x) = m^(-1/2) exp(W x - |x|^2 / 2)                                                      (Eq. 7)
W (m x d) is made of orthogonal Gaussian blocks (QR), each row rescaled by the norm of an independent
Gaussian vector so its length is chi(d) distributed (Sec. 2.4, "ORF"); one W per layer, shared by its heads
(as in performer-pytorch), a buffer saved with the checkpoint, redrawn every ``model.performer_redraw_interval``
optimizer steps from a generator seeded by the step (``redraw_features``), so every rank draws the same.

Then  out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j).

Stabilisers (a constant that cancels between numerator and denominator):
  * bidirectional: exactly the reference's ``softmax_kernel`` (google-research, performer-pytorch): the
    detached max of the projections w.x per query row, and over all real keys and features for the keys,
    plus eps = 1e-4 after the exponential;
  * causal queries: the detached max over features of each row (a per-row constant cancels);
  * causal: that max would read future positions (and eps would not cancel), so the keys use no data at all:
    w.k' - |k'|^2/2 = |w|^2/2 - |k' - w|^2/2, and the per-feature |w_l|^2/2 moves to the query side, so a
    key's feature is exp(d/2 - |k' - w_l|^2/2) <= exp(d/2) and the product phi(q).phi(k) is unchanged;
    no eps. The causal sums are prefix sums, computed in chunks (a masked product inside a chunk, the
    carried sum of the chunks before), which equals the masked quadratic form on the same features.

RoPE and log-n compose: they act on q and k before the features (the estimator is of the rotated, scaled
softmax). Decoding with a key/value cache is not offered (``supports_kv_cache``: no per-token keys here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from growth.errors import ConfigError
from growth.model.attention import MultiHeadAttention
from growth.model.config import ModelConfig
from growth.model.layer_kind import ATTENTIONS
from growth.model.mask import Visibility

BIDIRECTIONAL_EPS = 1e-4  # the reference's kernel epsilon (performer-pytorch ``softmax_kernel``)
CAUSAL_CHUNK = 64  # tokens per chunk of the causal prefix sums
CAUSAL_SEGMENT = 512  # tokens per pass of the causal path (a multiple of CAUSAL_CHUNK)


def default_features(head_dim: int) -> int:
    """m = floor(d ln d), the paper's and the reference's default."""
    return int(head_dim * math.log(head_dim))


def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, dim): stacked blocks of orthonormal rows (QR of a Gaussian matrix), row j rescaled by the
    norm of an independent N(0, I_dim) vector, so each row is marginally N(0, I_dim) (FAVOR+ ORF)."""
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        # Haar-distributed only with R's diagonal made positive (Mezzadri 2007, "How to generate random
        # matrices from the classical compact groups", Sec. 5); without it the kernel estimate is biased.
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    norms = torch.randn(rows, dim, generator=generator).norm(dim=1)
    return norms[:, None] * torch.cat(blocks)[:rows]


def positive_features(
    x: torch.Tensor, projection: torch.Tensor, is_query: bool, causal: bool, key_real: torch.Tensor | None
) -> torch.Tensor:
    """phi(x d^(-1/4)) for x (B, H, T, d) -> (B, H, T, m), stabilised as the module docstring says."""
    d, m = x.shape[-1], projection.shape[0]
    x = x * d**-0.25
    logits = x @ projection.T.to(x.dtype) - x.pow(2).sum(-1, keepdim=True) / 2  # w.x - |x|^2/2
    if causal:
        half_norms = (
            projection.pow(2).sum(-1).to(x.dtype) / 2
        )  # |w_l|^2/2, moved from the keys to the queries
        if not is_query:
            return m**-0.5 * torch.exp(logits - half_norms + d / 2)  # = exp(d/2 - |x - w_l|^2/2)
        logits = logits + half_norms - d / 2
        return m**-0.5 * torch.exp(logits - logits.amax(-1, keepdim=True).detach())
    # The reference's stabiliser is the max of the projections w.x (not of w.x - |x|^2/2): with eps they differ.
    projections = logits + x.pow(2).sum(-1, keepdim=True) / 2
    if is_query:
        return m**-0.5 * (torch.exp(logits - projections.amax(-1, keepdim=True).detach()) + BIDIRECTIONAL_EPS)
    real = key_real[:, None, :, None] if key_real is not None else None
    masked = projections if real is None else projections.masked_fill(~real, float("-inf"))
    stabilizer = masked.amax((-1, -2), keepdim=True).detach()
    features = m**-0.5 * (torch.exp(logits - stabilizer) + BIDIRECTIONAL_EPS)
    return features if real is None else features * real


def linear_attention(q_features: torch.Tensor, k_features: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bidirectional: phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T sum_j phi(k_j)."""
    context = k_features.transpose(-1, -2) @ v  # (B, H, m, d)
    normalizer = q_features @ k_features.sum(-2, keepdim=True).transpose(-1, -2)  # (B, H, T, 1)
    return (q_features @ context) / normalizer


def causal_linear_attention(
    q_features: torch.Tensor,
    k_features: torch.Tensor,
    v: torch.Tensor,
    chunk: int = CAUSAL_CHUNK,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal: the sums run over j <= i. In chunks of ``chunk`` tokens: inside a chunk the masked product
    (phi(q) phi(k)^T * tril) v, plus phi(q) times the carried sums of all earlier chunks and ``state`` (the
    sums sum_j phi(k_j) [v_j, 1] of earlier tokens, (B, H, m, d + 1)). Returns the output and the state
    after these tokens."""
    length = q_features.shape[-2]
    pad = -length % chunk
    values = torch.cat([v, torch.ones_like(v[..., :1])], -1)  # the last column carries the normaliser
    q, k, values = (F.pad(t, (0, 0, 0, pad)) for t in (q_features, k_features, values))
    *batch, padded, _ = q.shape
    n = padded // chunk
    q, k, values = (t.reshape(*batch, n, chunk, t.shape[-1]) for t in (q, k, values))
    chunk_sums = k.transpose(-1, -2) @ values  # (B, H, n, m, d + 1)
    carried = chunk_sums.cumsum(2) - chunk_sums  # sums over the chunks strictly before
    if state is not None:
        carried = carried + state.unsqueeze(2)
    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    inside = ((q @ k.transpose(-1, -2)) * tril) @ values
    out = (inside + q @ carried).reshape(*batch, padded, -1)[..., :length, :]
    numerator, normalizer = out[..., :-1], out[..., -1:]
    # all of a row's visible key features underflowed (keys far from every w): the row reads nothing
    tiny = torch.finfo(out.dtype).tiny
    out = torch.where(normalizer > 0, numerator / normalizer.clamp(min=tiny), 0.0)
    return out, carried[:, :, -1] + chunk_sums[:, :, -1]


@ATTENTIONS.register("performer")
class PerformerAttention(MultiHeadAttention):
    """MultiHeadAttention's projections, RoPE and scale; FAVOR+ instead of the softmax kernel."""

    kept = ("projection",)  # growth copies the random features as they are (head size is kept)
    grows_head_size = False

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.features = config.performer_features or default_features(config.head_dim)
        self.register_buffer("projection", orthogonal_gaussian(self.features, config.head_dim))

    @classmethod
    def validate(cls, m: ModelConfig) -> None:
        if m.performer_features < 0:
            raise ConfigError(
                f"model.performer_features must be > 0 (0: floor(head_dim ln head_dim)), got {m.performer_features}"
            )
        if m.performer_features == 0 and default_features(m.head_dim) <= 0:
            raise ConfigError(
                f"model.performer_features: the default floor(head_dim ln head_dim) is 0 for head_dim {m.head_dim}; "
                "set it"
            )
        if m.performer_redraw_interval < 0:
            raise ConfigError(
                f"model.performer_redraw_interval must be >= 0 (0: fixed features), got {m.performer_redraw_interval}"
            )

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        """Per token and head, multiply-adds: the features of q and k (2 m d), phi(k) v^T (m d), phi(q).(kv)
        (m d); x 6 for forward and backward. No term in the sequence length (the causal chunks add
        ``CAUSAL_CHUNK`` m + ``CAUSAL_CHUNK`` d per token, left out as the softmax count leaves out masking)."""
        m = config.performer_features or default_features(config.head_dim)
        return 6.0 * 4 * m * config.head_dim * config.n_heads

    @classmethod
    def supports_kv_cache(cls, config: ModelConfig) -> bool:
        return False

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator) -> None:
        """A fresh W from ``generator`` (seeded by the step: every rank draws the same)."""
        drawn = orthogonal_gaussian(self.features, self.head_dim, generator)
        self.projection.copy_(drawn.to(self.projection.device, self.projection.dtype))

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        if vis.cache is not None:
            raise ConfigError(
                "model.attention=performer keeps no per-token keys: decode without a key/value cache"
            )
        q, k, v = self.expanded_heads(x, vis)
        out = favor_attention(q, k, v, self.projection, vis.causal, vis.key_real)
        return self.o_proj(out.transpose(1, 2).flatten(2))


def favor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    causal: bool,
    key_real: torch.Tensor | None = None,
) -> torch.Tensor:
    """FAVOR+ for q, k, v (B, H, T, d) with random features ``projection`` (m, d); ``key_real`` (B, T) marks
    real (unpadded) keys."""
    if causal:
        return causal_favor(q, k, v, projection, key_real)
    q_features = positive_features(q, projection, True, causal, key_real)
    k_features = positive_features(k, projection, False, causal, key_real)
    return linear_attention(q_features, k_features, v)


def causal_favor(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor, key_real: torch.Tensor | None
) -> torch.Tensor:
    """Causal FAVOR+ over segments of ``CAUSAL_SEGMENT`` tokens, the prefix sums carried from one to the next:
    the same numbers as one pass (the causal features are per token), with a working set that does not
    grow with the sequence, so the cost per token stays flat once the sequence outgrows the CPU caches."""
    outputs, state = [], None
    for start in range(0, q.shape[-2], CAUSAL_SEGMENT):
        part = slice(start, start + CAUSAL_SEGMENT)
        q_features = positive_features(q[..., part, :], projection, True, True, None)
        k_features = positive_features(k[..., part, :], projection, False, True, None)
        if key_real is not None:
            k_features = k_features * key_real[:, None, part, None]
        out, state = causal_linear_attention(q_features, k_features, v[..., part, :], state=state)
        outputs.append(out)
    return torch.cat(outputs, -2)
