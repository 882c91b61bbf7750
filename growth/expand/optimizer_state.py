"""Adam moments grown with the same maps as their parameters.

At the copy-symmetric point the grown model's gradients are the small model's, mapped by the
*gradient* rule: an axis whose weights are copied (the output feeds readers that divide by c)
receives 1/c of the gradient; an axis whose weights are divided receives the full gradient (every
copy sees the same input). So m' = G-map(m), v' = G-map(v) with 1/c^2, and the step count is kept:
each copy's next Adam update equals the small model's update of its source (tested).

With unequal (LEMON) shares a copied axis receives share[j] of the gradient (m x share, v x share^2);
on Su's interleaved stream (values h/sqrt(k)) a copied axis receives share x sqrt(k) and a divided one
1/sqrt(k) of it.

Approximate (documented) for a few scalar-scaled tensors: the tied final norm, gains of a
non-multiple width, GAU's query scale/offset when the key size grows, and q (and k, interleaved) when
the head size grows; their moments are mapped as if unscaled.
"""

from __future__ import annotations

import torch

from growth.expand import blocks
from growth.expand.axes import AxisMap, remap
from growth.expand.width import GrowthPlan


def _gradient_map(value: torch.Tensor, axis: int, axis_map: AxisMap, role: str, power: int) -> torch.Tensor:
    if role == "divide":  # every copy sees the source's input (x write_scale): the full gradient, x that
        out = remap(value, axis, AxisMap(axis_map.src, axis_map.copies), "copy")
        return out * axis_map.write_scale**power if axis_map.write_scale != 1.0 else out
    if axis_map.share is None and axis_map.read_scale == 1.0:
        scaled = AxisMap(axis_map.src, axis_map.copies**power)
        return remap(value, axis, scaled, "divide")
    # A copy read with share x read_scale receives that fraction of the gradient.
    fraction = (axis_map.shares.double() * axis_map.read_scale) ** power
    return remap(value, axis, AxisMap(axis_map.src, axis_map.copies, share=fraction), "divide")


def grow_moment(
    name: str, value: torch.Tensor, plan: GrowthPlan, maps: dict[str, AxisMap], power: int
) -> torch.Tensor:
    """``power`` = 1 for exp_avg, 2 for exp_avg_sq."""
    if plan.new.tie_embeddings and name == "head.proj.weight":
        name = "embed.weight"
    if blocks.NORM.search(name):
        stream = maps["stream"]
        return _gradient_map(value, 0, stream, "copy", power)
    growth_role = blocks.role_for(name, plan.new)
    if growth_role.scale_offset:
        out = torch.zeros(value.shape[0], plan.new.gau_key_size, dtype=value.dtype)
        out[:, : plan.old.gau_key_size] = value
        return out
    out = value
    for axis, map_name, role in growth_role.rule:
        out = _gradient_map(out, axis, maps[map_name], role, power)
    return out


def grow_optimizer_state(
    state: dict[str, dict[str, torch.Tensor]], plan: GrowthPlan, new_names: list[str]
) -> dict[str, dict[str, torch.Tensor]]:
    """{param name: {exp_avg, exp_avg_sq, step}} of the small model -> the grown model's.
    Identity layers start with zero moments and the source's step (so bias correction carries on)."""
    maps = blocks.axis_maps(plan.old, plan.new, plan.options)
    step = next(iter(state.values()))["step"] if state else torch.tensor(0.0)
    grown = {}
    for name in new_names:
        source = plan.source_name(name)
        if source is None or source not in state:
            continue
        moments = state[source]
        grown[name] = {
            "exp_avg": grow_moment(name, moments["exp_avg"], plan, maps, 1),
            "exp_avg_sq": grow_moment(name, moments["exp_avg_sq"], plan, maps, 2),
            "step": moments.get("step", step),
        }
    return grown
