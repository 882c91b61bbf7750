"""Function-preserving model growth (width and depth), its optimizer-state map and verification."""

from growth.expand.options import GrowthOptions
from growth.expand.width import GrowthError, GrowthPlan, grow_state_dict, plan_growth, widen

__all__ = ["GrowthError", "GrowthOptions", "GrowthPlan", "grow_state_dict", "plan_growth", "widen"]
