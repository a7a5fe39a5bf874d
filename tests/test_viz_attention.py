"""Attention plots and the analyses behind them, on hand-made maps and matchings, and on a
real (tiny) transformer's maps and matching."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch

from mlw_lib.models import TransformerClassifier
from mlw_lib.multilevel import MultilevelConfig, coarse_members, merge_counts
from mlw_lib.multilevel.matching import similarity_matrix
from mlw_lib.training import matched_hierarchy
from mlw_lib.viz import (
    attention_entropy,
    attention_received,
    plot_head_entropy,
    plot_merge_counts,
    plot_merged_head_maps,
    plot_similarity_with_pairs,
    plot_token_attention,
)


def test_coarse_members_lists_the_members_of_every_coarse_unit() -> None:
    assert coarse_members(torch.tensor([1, 0, 1, 2])) == [[1], [0, 2], [3]]


def test_entropy_of_uniform_and_one_hot_attention() -> None:
    uniform = torch.full((1, 4, 4), 0.25)
    one_hot = torch.eye(4)[None]
    entropy = attention_entropy(torch.cat([uniform, one_hot]))
    assert entropy.tolist() == pytest.approx([math.log(4), 0.0])
    batch = torch.stack([torch.cat([uniform, one_hot]), torch.cat([one_hot, one_hot])])
    pad = torch.tensor([[False] * 4, [False, True, True, True]])  # 1 real query in the second
    expected = [(4 * math.log(4) + 0) / 5, 0.0]
    assert attention_entropy(batch, pad).tolist() == pytest.approx(expected)


def test_attention_received_is_a_distribution_over_tokens() -> None:
    maps = torch.softmax(torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0)), -1)
    received = attention_received(maps)
    assert received.shape == (5,) and float(received.sum()) == pytest.approx(1.0)
    one_hot = torch.zeros(2, 5, 5)
    one_hot[..., 3] = 1.0  # every query of every head looks at token 3
    assert attention_received(one_hot).tolist() == [0, 0, 0, 1, 0]


def test_merge_counts_on_hand_made_assignments() -> None:
    counts = merge_counts([torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0])])
    expected = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    assert torch.equal(counts, expected)
    with pytest.raises(ValueError, match="cannot be combined"):
        merge_counts([torch.tensor([0, 0]), torch.tensor([0, 0, 1])])


@pytest.fixture(scope="module")
def hierarchy():
    """A tiny transformer, its level-1 net (heads merged by the functional similarity), the
    maps of one sequence on both levels, and the matching."""
    torch.manual_seed(0)
    tokens = torch.randint(1, 30, (4, 10), generator=torch.Generator().manual_seed(1))
    fine = TransformerClassifier(
        30, 2, d_model=16, layers=1, heads=6, head_dim=4, ffn=8, max_len=10, probe=tokens
    ).eval()
    config = MultilevelConfig(levels=2, convention="avg_sum")
    (same, coarse), (transition,) = matched_hierarchy(fine, config, [])
    assert same is fine and coarse.config["heads"] == [transition.transfers["heads0"].n_coarse]
    return fine, coarse, transition, tokens[:1]


def test_merged_head_maps_show_each_merged_pair_and_its_coarse_head(hierarchy) -> None:
    fine, coarse, transition, x = hierarchy
    assign = transition.transfers["heads0"].assign
    pairs = sum(len(m) == 2 for m in coarse_members(assign))
    assert pairs >= 1
    fig = plot_merged_head_maps(
        fine.attention_maps(x)[0][0], coarse.attention_maps(x)[0][0], assign, list("abcdefghij")
    )
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 * pairs
    assert {im.get_clim() for ax in images for im in ax.images} == {images[0].images[0].get_clim()}
    plt.close(fig)
    with pytest.raises(ValueError, match="no two heads were merged"):
        plot_merged_head_maps(
            fine.attention_maps(x)[0][0][:2],
            coarse.attention_maps(x)[0][0],
            torch.tensor([0, 1]),
            list("abcdefghij"),
        )


def test_token_attention_entropy_similarity_and_merge_plots_draw(hierarchy) -> None:
    fine, coarse, transition, x = hierarchy
    fine_maps, coarse_maps = fine.attention_maps(x)[0][0], coarse.attention_maps(x)[0][0]
    tokens = [f"t{i}" for i in range(10)]
    fig = plot_token_attention(
        tokens, {"fine": attention_received(fine_maps), "coarse": attention_received(coarse_maps)}
    )
    assert [len(ax.texts) for ax in fig.axes] == [10, 10]
    fig_e = plot_head_entropy(
        {"fine": attention_entropy(fine_maps), "coarse": attention_entropy(coarse_maps)}
    )
    assert [len(ax.patches) for ax in fig_e.axes] == [6, coarse.config["heads"][0]]
    assign = transition.transfers["heads0"].assign
    sim = similarity_matrix(fine.unit_features("heads0"))
    fig_s = plot_similarity_with_pairs(sim, assign)
    outlined = [p for p in fig_s.axes[0].patches if not p.get_fill()]
    assert len(outlined) == 2 * sum(len(m) == 2 for m in coarse_members(assign))
    fig_m = plot_merge_counts(merge_counts([assign, assign]), 2)
    assert fig_m.axes[0].collections[0].get_array().max() == 1.0
    for f in (fig, fig_e, fig_s, fig_m):
        plt.close(f)
