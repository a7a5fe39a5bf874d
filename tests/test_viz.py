"""Figures (style, saving, curves, tables, hierarchy) and reproducibility helpers."""

from __future__ import annotations

import os
import random
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from mlw_lib.paths import figures_dir
from mlw_lib.reproducibility import environment_info, seed_everything
from mlw_lib.viz import (
    SINGLE_LEVEL_COLOR,
    boundaries,
    class_one_probability,
    method_palette,
    plot_decision_boundaries,
    plot_field_rows,
    plot_hierarchy_widths,
    plot_metric,
    plot_metric_panels,
    results_table,
    save_figure,
    use_house_style,
)

NOTEBOOK = "97_viz_test"


@pytest.fixture(autouse=True)
def _headless_figures():
    """Agg backend, house style, and no figure left open."""
    plt.switch_backend("Agg")
    use_house_style()
    yield
    plt.close("all")


@pytest.fixture
def figures_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLW_FIGURES_DIR", str(tmp_path / "figures"))
    return tmp_path / "figures"


def make_history(methods=("single-level", "ml-v"), seeds=(0, 1, 2), epochs=4) -> pd.DataFrame:
    """Tidy history: wall-clock differs between seeds, work units do not."""
    rng = np.random.default_rng(0)
    rows = []
    for method in methods:
        for seed in seeds:
            wall_time = 0.0
            for epoch in range(1, epochs + 1):
                wall_time += 1.0 + seed * 0.1
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "epoch": epoch,
                        "work_units": 100.0 * epoch,
                        "wall_time": wall_time,
                        "test_accuracy": 0.5 + 0.1 * epoch + rng.normal(0, 0.01),
                    }
                )
    return pd.DataFrame(rows)


def line_figure() -> plt.Figure:
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4], label="curve")
    ax.set_xlabel("epoch")
    ax.legend()
    return fig


def test_figures_dir_honours_env(figures_tmp: Path) -> None:
    assert figures_dir(NOTEBOOK) == figures_tmp / NOTEBOOK
    assert (figures_tmp / NOTEBOOK).is_dir()


def test_save_figure_writes_byte_stable_pdf_and_png(figures_tmp: Path) -> None:
    fig = line_figure()
    paths = save_figure(fig, NOTEBOOK, "line", log_to_mlflow=False)
    assert paths == [figures_tmp / NOTEBOOK / "line.pdf", figures_tmp / NOTEBOOK / "line.png"]
    first = [path.read_bytes() for path in paths]
    assert first[0].startswith(b"%PDF") and first[1].startswith(b"\x89PNG")
    assert b"CreationDate" not in first[0]
    assert b"/Type3" not in first[0] and b"/CIDFontType2" in first[0]  # TrueType (fonttype 42)
    save_figure(fig, NOTEBOOK, "line", log_to_mlflow=False)
    assert [path.read_bytes() for path in paths] == first
    # A freshly drawn identical figure gives the same bytes too.
    save_figure(line_figure(), NOTEBOOK, "line", log_to_mlflow=False)
    assert [path.read_bytes() for path in paths] == first


def test_save_figure_rejects_paths_as_names(figures_tmp: Path) -> None:
    with pytest.raises(ValueError):
        save_figure(line_figure(), NOTEBOOK, "../escape", log_to_mlflow=False)


def test_house_style_is_idempotent_and_wins_over_seaborn() -> None:
    first = dict(mpl.rcParams)
    use_house_style()
    assert dict(mpl.rcParams) == first
    assert mpl.rcParams["pdf.fonttype"] == 42 and mpl.rcParams["ps.fonttype"] == 42
    assert not mpl.rcParams["axes.spines.top"] and not mpl.rcParams["axes.spines.right"]
    assert mpl.rcParams["axes.grid"]  # seaborn "ticks" turns the grid off; the style wins


def test_method_palette_is_deterministic_and_distinct() -> None:
    methods = ["ml-v2", "single-level", "ml-w3", "ml-v3", "ml-f"]
    palette = method_palette(methods)
    assert palette == method_palette(list(reversed(methods)))
    assert palette["single-level"] == SINGLE_LEVEL_COLOR
    assert method_palette(["single_level"])["single_level"] == SINGLE_LEVEL_COLOR
    multilevel = [palette[m] for m in methods if m != "single-level"]
    assert len(set(multilevel)) == len(multilevel)
    assert SINGLE_LEVEL_COLOR not in multilevel
    many = method_palette([f"ml-{i}" for i in range(10)])
    assert len(set(many.values())) == 10


def test_plot_metric_panels_axes_and_labels() -> None:
    history = make_history()
    fig = plot_metric_panels(history)
    assert len(fig.axes) == 3
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "epoch",
        "work units (fine fwd+bwd minibatches)",
        "wall-clock (s)",
    ]
    assert fig.axes[0].get_ylabel() == "test accuracy"
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[2])
    assert [ax.get_legend() is not None for ax in fig.axes] == [False, False, True]
    line_colors = [mpl.colors.to_hex(line.get_color()) for line in fig.axes[0].lines[:2]]
    palette = method_palette(["single-level", "ml-v"])
    assert line_colors == [palette["single-level"].lower(), palette["ml-v"].lower()]


def test_plot_metric_panels_leave_out_the_initial_net_unless_asked() -> None:
    history = make_history(epochs=3)
    start = history[history["epoch"] == 1].assign(epoch=0, work_units=0.0, wall_time=0.0)
    history = pd.concat([start.assign(test_accuracy=0.1), history], ignore_index=True)

    def lowest(fig) -> float:
        return min(min(line.get_ydata()) for line in fig.axes[0].lines if len(line.get_ydata()))

    assert lowest(plot_metric_panels(history)) > 0.5
    assert lowest(plot_metric_panels(history, from_start=True)) == pytest.approx(0.1)


def test_plot_metric_aligns_wall_clock_across_seeds() -> None:
    history = make_history(methods=("ml-v",))
    ax = plot_metric(history, x="wall_time", y="test_accuracy")
    line = ax.lines[0]
    expected_x = history.groupby("epoch")["wall_time"].mean().to_numpy()
    expected_y = history.groupby("epoch")["test_accuracy"].mean().to_numpy()
    np.testing.assert_allclose(line.get_xdata(), expected_x)
    np.testing.assert_allclose(line.get_ydata(), expected_y)
    assert ax.get_xlabel() == "wall-clock (s)"


def test_results_table_formats_mean_and_std() -> None:
    final = pd.DataFrame(
        {
            "method": ["single-level"] * 3 + ["ml-v"] * 2 + ["ml-w"],
            "seed": [0, 1, 2, 0, 1, 0],
            "test_accuracy": [0.90, 0.92, 0.94, 0.80, 0.90, 0.7],
            "wall_time": [10.0, 12.0, 14.0, 5.0, 7.0, 3.0],
            "work_units": [300, 300, 300, 250, 270, 100],
        }
    )
    table = results_table(final)
    assert list(table.index) == ["single-level", "ml-v", "ml-w"]
    assert table.loc["single-level", "n"] == 3
    assert table.loc["single-level", "test_accuracy"] == "0.920 ± 0.020"
    assert table.loc["single-level", "wall_time"] == "12.0 ± 2.0"
    assert table.loc["single-level", "work_units"] == "300 ± 0"
    assert table.loc["ml-v", "test_accuracy"] == "0.850 ± 0.071"
    assert table.loc["ml-v", "work_units"] == "260 ± 14"
    assert table.loc["ml-w", "n"] == 1
    assert table.loc["ml-w", "test_accuracy"] == "0.700"
    assert results_table(final, metrics=("wall_time",), decimals=2).loc["ml-v", "wall_time"] == (
        "6.00 ± 1.41"
    )
    with pytest.raises(KeyError):
        results_table(final, metrics=("missing",))


def test_plot_hierarchy_widths_from_dict_and_frame() -> None:
    widths = {"fc1": [64, 32, 16], "fc2": [100, 48]}
    fig = plot_hierarchy_widths(widths)
    ax = fig.axes[0]
    heights = sorted(int(patch.get_height()) for patch in ax.patches)
    assert heights == sorted([64, 32, 16, 100, 48])
    texts = {text.get_text() for text in ax.texts}
    assert {"64", "32 (×0.50)", "16 (×0.50)", "100", "48 (×0.48)"} <= texts
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["fc1", "fc2"]
    frame = pd.DataFrame(
        {
            "level": [0, 1, 2, 0, 1],
            "group": ["fc1"] * 3 + ["fc2"] * 2,
            "width": [64, 32, 16, 100, 48],
        }
    )
    fig_from_frame = plot_hierarchy_widths(frame)
    assert {t.get_text() for t in fig_from_frame.axes[0].texts} == texts


def test_seed_everything_repeats_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # records the original for teardown
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    previous = torch.are_deterministic_algorithms_enabled()
    try:

        def draws() -> tuple:
            return torch.randn(5), np.random.rand(3), random.random()

        seed_everything(123)
        first = draws()
        seed_everything(123)
        second = draws()
        seed_everything(124)
        third = draws()
        assert torch.equal(first[0], second[0])
        assert np.array_equal(first[1], second[1]) and first[2] == second[2]
        assert not torch.equal(first[0], third[0])
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        seed_everything(123, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_environment_info_keys() -> None:
    info = environment_info()
    expected = {
        "python",
        "platform",
        "torch",
        "torchvision",
        "numpy",
        "mlflow",
        "papermill",
        "cpu_count",
        "torch_threads",
        "device",
        "device_name",
        "git_commit",
        "git_dirty",
    }
    assert expected <= set(info)
    assert all(isinstance(value, str) for value in info.values())
    assert info["torch"] == torch.__version__.split("+")[0]
    assert info["torch_threads"] == str(torch.get_num_threads())
    assert info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert environment_info("cpu")["device"] == "cpu"


def test_plot_field_rows_shares_one_symmetric_range_among_a_rows_errors() -> None:
    grid = np.arange(16.0).reshape(4, 4)
    rows = [
        {"kappa": grid, "A error": grid - 3, "B error": 0.5 * grid},
        {"kappa": grid, "A error": -grid},
    ]
    fig = plot_field_rows(rows, ["worst", "second"], "worst samples")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 5
    first_row_errors = [image.get_clim() for image in images[1:3]]
    assert first_row_errors == [(-12.0, 12.0), (-12.0, 12.0)]  # |grid - 3| peaks at 12
    assert images[4].get_clim() == (-15.0, 15.0)
    assert images[0].get_cmap().name == "viridis" and images[1].get_cmap().name == "RdBu_r"
    plt.close(fig)
    rows = [{"true": grid, "predicted": 2 * grid, "other": grid + 1}]
    fig = plot_field_rows(rows, ["one"], same_scale="true")
    assert [ax.images[0].get_clim() for ax in fig.axes if ax.images] == [
        (0.0, 15.0),
        (0.0, 30.0),
        (1.0, 16.0),
    ]
    fig = plot_field_rows([{"true a": grid, "true b": 2 * grid}], ["one"], same_scale="true")
    assert {ax.images[0].get_clim() for ax in fig.axes if ax.images} == {(0.0, 30.0)}
    plt.close("all")
    with pytest.raises(ValueError, match="one label per row"):
        plot_field_rows(rows * 2, ["only one"])


def test_decision_boundaries_show_each_nets_class_one_probability(monkeypatch) -> None:
    """A net that says class 1 right of x = 0: probability > 0.5 exactly there, one panel per
    net and row, the points drawn."""
    right = torch.nn.Linear(2, 2)
    with torch.no_grad():
        right.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        right.bias.zero_()
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
    p = class_one_probability(right, xs, ys)
    assert p.shape == (3, 5) and (p[:, xs > 0] > 0.5).all() and (p[:, xs < 0] < 0.5).all()
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    grids = []

    def spy(net, xs, ys):
        grids.append((len(xs), len(ys)))
        return class_one_probability(net, xs, ys)

    monkeypatch.setattr(boundaries, "class_one_probability", spy)
    fig = plot_decision_boundaries(
        [("a", {"right": right, "again": right}, x, y), ("b", {"right": right}, x, y)],
        resolution=20,
    )
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3 and all(len(ax.collections) >= 3 for ax in visible)
    assert visible[0].get_title() == "a: right" and grids == [(20, 20)] * 3  # resolution
    with pytest.raises(ValueError, match="at least one net"):
        plot_decision_boundaries([("a", {}, x, y)])
