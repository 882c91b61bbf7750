"""``model.attention=nystrom``: Nystromformer (Xiong et al., AAAI 2021), softmax attention through landmarks.

With Q, K scaled by d^(-1/4) each and m landmarks Q~, K~ (means of m contiguous segments of the queries and
keys; the sequence is padded on the left to a multiple of m, padding never counted in a mean):
    out = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V                             (Eq. 15)
pinv by 6 Newton-Schulz iterations  Z <- 1/4 Z (13 I - AZ (15 I - AZ (7 I - AZ)))  from
Z_0 = A^T / (max_i sum_j |A_ij| * max_j sum_i |A_ij|)  (Sec. 3.3; Razavi et al. 2014), taken per matrix,
so no sample of a batch changes another's output (lucidrains/nystrom-attention takes the max over the whole
batch; the two agree for one matrix). Optional depthwise convolution over the tokens of each head's values
added to the output (``model.nystrom_conv_kernel``; lucidrains' ``res_conv``, kernel 33 there).

It is not causal: a landmark averages a segment that includes later tokens, so ``model.objective=clm`` is
refused; it is offered for mlm and the contrastive encoder. With m = sequence length each landmark is one
token and Eq. 15 is exact softmax attention (given enough iterations for the pseudo-inverse).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from growth.errors import ConfigError
from growth.model.attention import MultiHeadAttention
from growth.model.config import ModelConfig
from growth.model.layer_kind import ATTENTIONS
from growth.model.mask import OBJECTIVES, Visibility

PINV_ITERATIONS = 6  # the paper's choice (Sec. 3.3)
LANDMARK_EPS = 1e-8  # the reference's guard on a segment's count of real tokens


def newton_schulz_pinv(a: torch.Tensor, iterations: int = PINV_ITERATIONS) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of each (m, m) matrix of ``a`` by the paper's iteration."""
    magnitude = a.abs()
    rows, columns = magnitude.sum(-1).amax(-1), magnitude.sum(-2).amax(-1)
    z = a.transpose(-1, -2) / (rows * columns)[..., None, None]
    identity = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * identity - az @ (15 * identity - az @ (7 * identity - az)))
    return z


def segment_means(x: torch.Tensor, real: torch.Tensor, landmarks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, m*l, d) -> the m means of l contiguous real rows each, and which segments hold any."""
    *batch, length, dim = x.shape
    sums = x.reshape(*batch, landmarks, length // landmarks, dim).sum(-2)
    counts = real.reshape(real.shape[0], 1, landmarks, -1).sum(-1, dtype=x.dtype)
    return sums / (counts[..., None] + LANDMARK_EPS), counts > 0


def nystrom_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    landmarks: int,
    key_real: torch.Tensor | None = None,
    iterations: int = PINV_ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 15 for q, k, v (B, H, T, d); returns the output and the (zero-padded) values it read, both
    left-padded to a multiple of ``landmarks`` tokens (the caller trims and may convolve the values)."""
    batch, _, length, dim = q.shape
    pad = -length % landmarks
    real = torch.ones(batch, length, dtype=torch.bool, device=q.device) if key_real is None else key_real
    real = F.pad(real, (pad, 0), value=False)
    keep = real[:, None, :, None].to(q.dtype)
    q, k, v = (F.pad(t, (0, 0, pad, 0)) * keep for t in (q, k, v))
    q, k = q * dim**-0.25, k * dim**-0.25
    q_marks, marks_real = segment_means(q, real, landmarks)
    k_marks, _ = segment_means(k, real, landmarks)
    real = real[:, None, :]  # (B, 1, T); marks_real is (B, 1, m)
    lowest = torch.finfo(q.dtype).min
    kernel_1 = (q @ k_marks.transpose(-1, -2)).masked_fill(
        ~(real[..., None] & marks_real[..., None, :]), lowest
    )
    kernel_2 = (q_marks @ k_marks.transpose(-1, -2)).masked_fill(
        ~(marks_real[..., None] & marks_real[..., None, :]), lowest
    )
    kernel_3 = (q_marks @ k.transpose(-1, -2)).masked_fill(
        ~(marks_real[..., None] & real[..., None, :]), lowest
    )
    kernel_1, kernel_2, kernel_3 = (t.softmax(-1) for t in (kernel_1, kernel_2, kernel_3))
    out = (kernel_1 @ newton_schulz_pinv(kernel_2, iterations)) @ (kernel_3 @ v)
    return out, v


@ATTENTIONS.register("nystrom")
class NystromAttention(MultiHeadAttention):
    """MultiHeadAttention's projections, RoPE and scale; the Nystrom approximation instead of the softmax."""

    grows_head_size = False
    # the depthwise conv over each head's values: heads copied with their kernels (growth/expand/blocks.py)
    growth_tensors = {"v_conv.weight": [(0, "head_index", "copy")]}

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.landmarks, kernel = config.nystrom_landmarks, config.nystrom_conv_kernel
        self.v_conv = (
            nn.Conv2d(
                self.n_heads,
                self.n_heads,
                (kernel, 1),
                padding=(kernel // 2, 0),
                groups=self.n_heads,
                bias=False,
            )
            if kernel
            else None
        )

    @classmethod
    def validate(cls, m: ModelConfig) -> None:
        if OBJECTIVES.get(m.objective).causal:
            raise ConfigError(
                f"model.attention=nystrom is not causal (its landmarks average segments that include later "
                f"tokens), so model.objective={m.objective} would see the future; use model.objective=mlm"
            )
        if not 0 < m.nystrom_landmarks <= m.max_seq_len:
            raise ConfigError(
                f"model.nystrom_landmarks must be in [1, model.max_seq_len={m.max_seq_len}], got {m.nystrom_landmarks}"
            )
        if m.nystrom_conv_kernel < 0 or (m.nystrom_conv_kernel and m.nystrom_conv_kernel % 2 == 0):
            raise ConfigError(
                f"model.nystrom_conv_kernel must be odd (centred on each token) or 0 (off), got {m.nystrom_conv_kernel}"
            )

    @classmethod
    def attention_flops(cls, config: ModelConfig, seq_len: int) -> float:
        """Per token and head, multiply-adds: Q K~^T and Q~ K^T (2 m d), softmax(Q~ K^T) V and the product with
        it (2 m d), kernel_1 times the m x m inverse (m^2), and per sequence the pinv (4 x 6 products of m^3)
        and Q~ K~^T (m^2 d) spread over its tokens; the conv adds kernel x d. x 6 for forward and backward."""
        m, d = min(config.nystrom_landmarks, seq_len), config.head_dim
        per_sequence = 4 * PINV_ITERATIONS * m**3 + m * m * d
        per_token = 4 * m * d + m * m + per_sequence / seq_len + config.nystrom_conv_kernel * d
        return 6.0 * per_token * config.n_heads

    def forward(self, x: torch.Tensor, vis: Visibility) -> torch.Tensor:
        length = x.shape[1]
        q, k, v = self.expanded_heads(x, vis)
        out, values = nystrom_attention(q, k, v, min(self.landmarks, length), vis.key_real)
        if self.v_conv is not None:
            out = out + self.v_conv(values)
        return self.o_proj(out[:, :, -length:].transpose(1, 2).flatten(2))
