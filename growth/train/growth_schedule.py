"""Moved: the stage planning is ``growth/train/growth_stages.py``, the callback that grows
``growth/train/callbacks/growth_schedule.py``. Kept so that ``growth.train.growth_schedule`` imports go on
working."""

from growth.train.callbacks.growth_schedule import TOLERANCE, GrowthSchedule, resolve_auto_stage
from growth.train.growth_stages import (
    model_at,
    needs_depth_ramp,
    rewarmup_in_effect,
    schedule_position,
    stage_models,
    stage_options,
    stage_plans,
)

__all__ = [
    "TOLERANCE",
    "GrowthSchedule",
    "model_at",
    "needs_depth_ramp",
    "resolve_auto_stage",
    "rewarmup_in_effect",
    "schedule_position",
    "stage_models",
    "stage_options",
    "stage_plans",
]
