"""Function-preserving model growth (width and depth), its optimizer-state map and verification."""

from growth.expand.width import GrowthError, GrowthPlan, grow_state_dict, plan_growth, widen

__all__ = ["GrowthError", "GrowthPlan", "grow_state_dict", "plan_growth", "widen"]
