"""Index maps along one tensor axis, and the two ways a weight follows them.

Widening maps every new index j of an axis to a source index ``src[j]`` of the old axis (or -1: a
residue channel that starts empty). ``copies[j]`` is how many new indices share j's source.

  * ``copy``   (the axis *writes* copies): W'[j] = W[src[j]]; residue rows are 0.
  * ``divide`` (the axis *reads* copies):  W'[j] = W[src[j]] / copies[j] + eta[j]; residue 0.

Reading k identical inputs with weights W/k sums to W, so the function is unchanged. eta is
zero-sum noise: within every group of indices that share a source, it sums to 0 (so the sum is
still exact whatever eta is), and it breaks the symmetry between copies — without it the copies
receive identical gradients forever and the wide model is a small one in disguise.

Two generalisations, both exact (docs/design.md Sec. 4.2):

  * ``share`` (LEMON-style unequal splits): a divide axis multiplies by share[j] instead of 1/copies[j];
    the shares of a group sum to 1 (``lemon_shares``: alpha, (1 - alpha)/(c - 1), ...).
  * ``write_scale`` / ``read_scale`` (Su's interleaved stream): the grown axis holds the source's values
    times ``write_scale`` (1/sqrt(k)), so a copy axis multiplies by it and a divide axis by
    share * ``read_scale`` (sqrt(k)): reading k copies of h/sqrt(k) with W/sqrt(k) sums to W h.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AxisMap:
    src: torch.Tensor  # (new_size,) long; -1 marks a residue index with no source
    copies: torch.Tensor  # (new_size,) float; group size of src[j] (1 for residue)
    share: torch.Tensor | None = None  # (new_size,) float; a reader's share of j's group (None: 1/copies)
    write_scale: float = 1.0  # the grown axis holds source values x this (interleaved stream: 1/sqrt(k))
    read_scale: float = 1.0  # a reader of the axis multiplies by share x this (interleaved stream: sqrt(k))

    @property
    def shares(self) -> torch.Tensor:
        return self.share if self.share is not None else 1.0 / self.copies

    @property
    def new_size(self) -> int:
        return self.src.numel()

    @property
    def is_identity(self) -> bool:
        return bool((self.src == torch.arange(self.new_size)).all())


def cyclic_map(old: int, new: int) -> AxisMap:
    """j -> j mod old for every j: exact for any new >= old (groups may differ in size by one)."""
    src = torch.arange(new) % old
    counts = torch.bincount(src, minlength=old).float()
    return AxisMap(src, counts[src])


def tiled_map(old: int, new: int) -> AxisMap:
    """The residual stream [h; h; ...; h; 0_r]: k = new // old block copies, then r empty channels."""
    k = new // old
    src = torch.cat([torch.arange(k * old) % old, torch.full((new - k * old,), -1)])
    return AxisMap(src, torch.where(src >= 0, float(k), 1.0))


def grouped_map(groups_old: int, new_groups: int, group_size: int) -> AxisMap:
    """Whole groups (attention heads) copied cyclically; indices inside a group keep their order."""
    heads = cyclic_map(groups_old, new_groups)
    offsets = torch.arange(group_size)
    src = (heads.src[:, None] * group_size + offsets).flatten()
    return AxisMap(src, heads.copies.repeat_interleave(group_size))


def interleaved_map(old: int, new: int) -> AxisMap:
    """Every index repeated k = new // old times in place, [x1, x1, x2, x2, ...] (Su's repetition); the
    stream also gets the 1/sqrt(k) scale (``su_stream``). Only integer multiples."""
    k = new // old
    if k * old != new:
        raise ValueError(f"interleaving needs an integer multiple, got {old} -> {new}")
    return AxisMap(torch.arange(new) // k, torch.full((new,), float(k)))


def su_stream(axis_map: AxisMap) -> AxisMap:
    """The interleaved stream holds h_i / sqrt(k) (norm-preserving): writers x 1/sqrt(k), readers x sqrt(k)/k."""
    k = float(axis_map.copies[0])
    return dataclasses.replace(axis_map, write_scale=1.0 / math.sqrt(k), read_scale=math.sqrt(k))


def extended_groups(groups_old: int, new_groups: int, group_size: int, new_group_size: int) -> AxisMap:
    """Whole groups (attention heads) copied cyclically, each grown from ``group_size`` to ``new_group_size``
    indices: the old ones first, in order, then new ones (residue, -1) that start empty (head-size growth)."""
    heads = cyclic_map(groups_old, new_groups)
    offsets = torch.arange(new_group_size)
    src = torch.where(offsets < group_size, heads.src[:, None] * group_size + offsets, -1).flatten()
    copies = heads.copies.repeat_interleave(new_group_size)
    return AxisMap(src, torch.where(src >= 0, copies, 1.0))


def interleaved_groups(groups: int, group_size: int, new_group_size: int) -> AxisMap:
    """The same groups, each index repeated in place inside its group (Su: "repeat locally", so a reshape
    into heads keeps every head's own values)."""
    inner = interleaved_map(group_size, new_group_size)
    src = (torch.arange(groups)[:, None] * group_size + inner.src).flatten()
    return AxisMap(src, inner.copies.repeat(groups))


def ranks_in_group(src: torch.Tensor) -> torch.Tensor:
    """For each j, how many earlier indices share its source (0 for the first copy)."""
    order = torch.argsort(src, stable=True)
    ordered = src[order]
    positions = torch.arange(src.numel())
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = torch.cummax(torch.where(starts, positions, 0), 0).values
    ranks = torch.empty_like(positions)
    ranks[order] = positions - first
    return ranks


def lemon_shares(axis_map: AxisMap, alpha: float) -> AxisMap:
    """Unequal splits (LEMON, Wang et al. 2024): in a group of c copies the first reader gets alpha, the
    others (1 - alpha)/(c - 1) each. They sum to 1, so the function is exact whatever alpha is, and the
    copies' different shares give them different gradients (symmetry broken without noise)."""
    c = axis_map.copies
    rest = (1.0 - alpha) / (c - 1).clamp(min=1.0)
    share = torch.where(ranks_in_group(axis_map.src) == 0, torch.full_like(c, alpha), rest)
    return dataclasses.replace(axis_map, share=torch.where(c > 1, share, 1.0).double())


def identity_map(size: int) -> AxisMap:
    return AxisMap(torch.arange(size), torch.ones(size))


def zero_sum_noise(
    shape: tuple[int, ...], axis: int, axis_map: AxisMap, std: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Gaussian noise whose sum over every copy group along ``axis`` is zero (to float rounding)."""
    noise = torch.randn(shape, generator=generator) * std
    noise = noise.movedim(axis, 0)
    noise[axis_map.src < 0] = 0.0  # residue channels: no noise (and none counted into group 0)
    groups = axis_map.src.clamp(min=0)
    sums = torch.zeros((int(groups.max()) + 1, *noise.shape[1:])).index_add_(0, groups, noise)
    noise = noise - sums[groups] / axis_map.copies.view(-1, *[1] * (noise.dim() - 1))
    noise[axis_map.src < 0] = 0.0
    single = axis_map.copies <= 1  # a lone copy cannot carry zero-sum noise
    noise[single] = 0.0
    return noise.movedim(0, axis)


def remap(
    weight: torch.Tensor,
    axis: int,
    axis_map: AxisMap,
    role: str,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply ``axis_map`` along ``axis`` of ``weight`` as a ``copy`` or ``divide`` axis."""
    # In the weight's own dtype: growth runs tensor by tensor, and a float64 copy of a large
    # embedding would dominate peak memory. W/k is exact for k a power of two, else within 1 ulp.
    out = weight.index_select(axis, axis_map.src.clamp(min=0))
    shape = [1] * weight.dim()
    shape[axis] = -1
    out.mul_((axis_map.src >= 0).to(out.dtype).view(shape))
    if role == "copy":
        return out.mul_(axis_map.write_scale) if axis_map.write_scale != 1.0 else out
    if role != "divide":
        raise ValueError(f"unknown axis role {role!r}")
    if axis_map.share is None:
        out.div_(axis_map.copies.to(out.dtype).view(shape))
    else:
        out.mul_(axis_map.share.to(out.dtype).view(shape))
    if axis_map.read_scale != 1.0:
        out.mul_(axis_map.read_scale)
    if noise_std > 0:
        out.add_(zero_sum_noise(tuple(out.shape), axis, axis_map, noise_std, generator).to(out.dtype))
    return out
