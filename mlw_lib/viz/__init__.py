"""Figures: house style, method palette, curves, tables, hierarchy, matching and attention
plots, and saving."""

from mlw_lib.viz.attention import (
    attention_entropy,
    attention_received,
    plot_head_entropy,
    plot_merge_counts,
    plot_merged_head_maps,
    plot_similarity_with_pairs,
    plot_token_attention,
)
from mlw_lib.viz.boundaries import class_one_probability, plot_decision_boundaries
from mlw_lib.viz.curves import (
    AXIS_LABELS,
    axis_label,
    plot_metric,
    plot_metric_panels,
    results_table,
)
from mlw_lib.viz.feature_maps import feature_maps, first_normalized_layer, plot_merged_channels
from mlw_lib.viz.fields import plot_field_rows
from mlw_lib.viz.figures import markdown_table, save_figure, save_results
from mlw_lib.viz.frontier import plot_frontier
from mlw_lib.viz.hierarchy import hierarchy_frame, plot_hierarchy_widths
from mlw_lib.viz.matching import (
    plot_level_knowledge,
    plot_matching_graph,
    plot_matching_stability,
    plot_merged_receptive_fields,
    plot_similarity_ordered,
    stability_frame,
    unit_order,
)
from mlw_lib.viz.style import (
    SINGLE_LEVEL_COLOR,
    STYLE_FILE,
    is_single_level,
    method_palette,
    use_house_style,
)

__all__ = [
    "AXIS_LABELS",
    "attention_entropy",
    "attention_received",
    "class_one_probability",
    "plot_decision_boundaries",
    "plot_head_entropy",
    "plot_merge_counts",
    "plot_merged_head_maps",
    "plot_similarity_with_pairs",
    "plot_token_attention",
    "SINGLE_LEVEL_COLOR",
    "STYLE_FILE",
    "axis_label",
    "feature_maps",
    "first_normalized_layer",
    "hierarchy_frame",
    "is_single_level",
    "method_palette",
    "plot_field_rows",
    "plot_frontier",
    "plot_hierarchy_widths",
    "plot_level_knowledge",
    "plot_matching_graph",
    "plot_matching_stability",
    "plot_merged_receptive_fields",
    "plot_similarity_ordered",
    "stability_frame",
    "unit_order",
    "markdown_table",
    "plot_merged_channels",
    "plot_metric",
    "plot_metric_panels",
    "results_table",
    "save_figure",
    "save_results",
    "use_house_style",
]
