"""The multilevel core, written once against unit groups (DESIGN.md §3-§4)."""

from .config import MultilevelConfig
from .cycle import FASCycle
from .groups import AxisBinding, Layout, Role, WidthModel
from .hierarchy import CoarseningError, Transition, build_model, check_depth, match_model
from .matching import (
    Matching,
    coarse_members,
    match_units,
    merge_counts,
    merged_pairs,
    pairs_kept,
)
from .operators import GroupTransfer
from .transfer import prolong, restrict_gradients, restrict_params
from .work import WorkMeter, forward_backward_flops

__all__ = [
    "AxisBinding",
    "CoarseningError",
    "FASCycle",
    "GroupTransfer",
    "Layout",
    "Matching",
    "MultilevelConfig",
    "Role",
    "Transition",
    "WidthModel",
    "WorkMeter",
    "build_model",
    "check_depth",
    "coarse_members",
    "forward_backward_flops",
    "match_model",
    "match_units",
    "merge_counts",
    "merged_pairs",
    "pairs_kept",
    "prolong",
    "restrict_gradients",
    "restrict_params",
]
