"""What matching did, on hand-made matchings: pairs, their stability over re-matchings, the
deterministic order of the graph, and the figures drawn from them."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from mlw_lib.multilevel import coarse_members, merged_pairs, pairs_kept
from mlw_lib.viz import (
    plot_level_knowledge,
    plot_matching_graph,
    plot_matching_stability,
    plot_merged_receptive_fields,
    plot_similarity_ordered,
    stability_frame,
    unit_order,
)

# 6 units: 0+3 and 1+4 merged, 2 and 5 singletons -> 4 coarse units; then 0+2 -> 3 coarser
FIRST = torch.tensor([0, 1, 2, 0, 1, 3])
SECOND = torch.tensor([0, 1, 0, 2])


def test_coarse_members_and_pairs() -> None:
    assert coarse_members(FIRST) == [[0, 3], [1, 4], [2], [5]]
    assert merged_pairs(FIRST) == {(0, 3), (1, 4)}


def test_pairs_kept_counts_the_pairs_formed_again() -> None:
    again = torch.tensor([0, 1, 2, 0, 3, 1])  # 0+3 again, 1+5 new, 4 alone
    shares = pairs_kept([FIRST, again, again, torch.arange(6)])
    assert shares[:3] == [0.5, 1.0, 0.0]
    assert math.isnan(pairs_kept([torch.arange(6), FIRST])[0])  # no pairs before


def test_unit_order_keeps_the_members_of_every_coarse_unit_together() -> None:
    orders = unit_order([FIRST, SECOND])
    assert orders == [[0, 3, 2, 1, 4, 5], [0, 2, 1, 3], [0, 1, 2]]
    assert unit_order([FIRST, SECOND]) == orders  # deterministic


def test_matching_graph_draws_one_edge_per_unit_and_level() -> None:
    sims = [torch.eye(6) * 0 + 0.5, torch.zeros(4, 4)]
    fig = plot_matching_graph([FIRST, SECOND], sims, unit="neuron")
    solid, dashed = fig.axes[0].collections[-2:]
    assert len(solid.get_segments()) == 4 + 2  # merged: 4 units, then 2
    assert len(dashed.get_segments()) == 2 + 2  # singletons: 2, then 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "level 0\n6 neurons"
    plt.close(fig)


def test_similarity_ordered_puts_pairs_on_the_diagonal() -> None:
    sim = torch.full((6, 6), -0.2)
    sim[0, 3] = sim[3, 0] = sim[1, 4] = sim[4, 1] = 0.9
    fig = plot_similarity_ordered(sim, FIRST, torch.arange(1.0, 7.0))
    shown = fig.axes[0].collections[0].get_array().reshape(6, 6)
    assert shown[0, 1] == pytest.approx(0.9) and shown[2, 3] == pytest.approx(0.9)
    heights = [p.get_height() for p in fig.axes[2].patches]
    assert heights == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]  # omega in the matching order
    plt.close(fig)


def test_receptive_fields_show_each_pair_and_its_coarse_unit() -> None:
    fine, coarse = torch.randn(6, 16), torch.randn(4, 16)
    fig = plot_merged_receptive_fields(fine, coarse, FIRST, (4, 4), max_pairs=1)
    assert [ax.get_title() for ax in fig.axes] == ["fine 0", "fine 3", "coarse 0"]
    assert fig.axes[2].images[0].get_array().tolist() == coarse[0].reshape(4, 4).tolist()
    plt.close(fig)
    with pytest.raises(ValueError, match="no two units were merged"):
        plot_merged_receptive_fields(fine, coarse, torch.arange(6), (4, 4))


def test_stability_frame_and_its_figure() -> None:
    again = torch.tensor([0, 1, 2, 0, 3, 1])
    log = [
        {"cycle": 0, "level": 0, "assign": {"hidden0": FIRST}},
        {"cycle": 0, "level": 1, "assign": {"hidden0": SECOND}},
        {"cycle": 10, "level": 0, "assign": {"hidden0": again}},
    ]
    frame = stability_frame(log)
    assert frame["cycle"].tolist() == [0, 10] and frame["kept"].tolist()[1] == 0.5
    assert frame["ratio"].tolist() == [4 / 6, 4 / 6]
    fig = plot_matching_stability(frame)
    assert len(fig.axes[0].lines) >= 1
    plt.close(fig)


def test_level_knowledge_has_a_panel_per_model_and_a_bar_per_level() -> None:
    frame = pd.DataFrame(
        {
            "model": ["MLP"] * 4 + ["ResNet"] * 2,
            "level": [0, 1, 0, 1, 0, 1],
            "parameters": [100, 50, 100, 50, 80, 40],
            "test_accuracy": [0.9, 0.8, 0.92, 0.78, 0.85, 0.6],
        }
    )
    fig = plot_level_knowledge(frame)
    assert [ax.get_title() for ax in fig.axes] == ["MLP", "ResNet"]
    assert [len(ax.patches) for ax in fig.axes] == [2, 2]
    assert fig.axes[0].patches[0].get_height() == pytest.approx(0.91)
    plt.close(fig)
