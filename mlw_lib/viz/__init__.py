"""Figures: house style, method palette, curves, tables, hierarchy plots, and saving."""

from mlw_lib.viz.curves import (
    AXIS_LABELS,
    axis_label,
    plot_metric,
    plot_metric_panels,
    results_table,
)
from mlw_lib.viz.figures import save_figure
from mlw_lib.viz.hierarchy import hierarchy_frame, plot_hierarchy_widths
from mlw_lib.viz.style import (
    SINGLE_LEVEL_COLOR,
    STYLE_FILE,
    is_single_level,
    method_palette,
    use_house_style,
)

__all__ = [
    "AXIS_LABELS",
    "SINGLE_LEVEL_COLOR",
    "STYLE_FILE",
    "axis_label",
    "hierarchy_frame",
    "is_single_level",
    "method_palette",
    "plot_hierarchy_widths",
    "plot_metric",
    "plot_metric_panels",
    "results_table",
    "save_figure",
    "use_house_style",
]
