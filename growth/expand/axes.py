"""Index maps along one tensor axis, and the two ways a weight follows them.

Widening maps every new index j of an axis to a source index ``src[j]`` of the old axis (or -1: a
residue channel that starts empty). ``copies[j]`` is how many new indices share j's source.

  * ``copy``   (the axis *writes* copies): W'[j] = W[src[j]]; residue rows are 0.
  * ``divide`` (the axis *reads* copies):  W'[j] = W[src[j]] / copies[j] + eta[j]; residue 0.

Reading k identical inputs with weights W/k sums to W, so the function is unchanged. eta is
zero-sum noise: within every group of indices that share a source, it sums to 0 (so the sum is
still exact whatever eta is), and it breaks the symmetry between copies — without it the copies
receive identical gradients forever and the wide model is a small one in disguise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AxisMap:
    src: torch.Tensor  # (new_size,) long; -1 marks a residue index with no source
    copies: torch.Tensor  # (new_size,) float; group size of src[j] (1 for residue)

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


def identity_map(size: int) -> AxisMap:
    return AxisMap(torch.arange(size), torch.ones(size))


def zero_sum_noise(shape: tuple[int, ...], axis: int, axis_map: AxisMap, std: float,
                   generator: torch.Generator | None) -> torch.Tensor:
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


def remap(weight: torch.Tensor, axis: int, axis_map: AxisMap, role: str, noise_std: float = 0.0,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``axis_map`` along ``axis`` of ``weight`` as a ``copy`` or ``divide`` axis."""
    # In the weight's own dtype: growth runs tensor by tensor, and a float64 copy of a large
    # embedding would dominate peak memory. W/k is exact for k a power of two, else within 1 ulp.
    out = weight.index_select(axis, axis_map.src.clamp(min=0))
    shape = [1] * weight.dim()
    shape[axis] = -1
    out.mul_((axis_map.src >= 0).to(out.dtype).view(shape))
    if role == "copy":
        return out
    if role != "divide":
        raise ValueError(f"unknown axis role {role!r}")
    out.div_(axis_map.copies.to(out.dtype).view(shape))
    if noise_std > 0:
        out.add_(zero_sum_noise(tuple(out.shape), axis, axis_map, noise_std, generator).to(out.dtype))
    return out
