"""Every report figure draws what it promises (axes, lines, labels) and saves as PNG and SVG."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from fusionkit.report import plots
from fusionkit.errors import InputError
from fusionkit.evaluation.verdicts import compare_to_baseline


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    rows = []
    for target in ("cr", "mr"):
        for size in (64, 128, 256):
            for seed in range(3):
                for strategy, sources, shift, params in (("finetune", "", 0.0, 2e7), ("attention", "subj", 0.03, 4e5)):
                    rows.append(dict(target=target, train_size=size, strategy=strategy, sources=sources, seed=seed,
                                     accuracy=0.7 + 0.03 * np.log2(size / 64) + shift + rng.normal(0, 0.005),
                                     trainable_params=params))
    return pd.DataFrame(rows)


def test_reliability_diagram_draws_one_line_per_model_and_the_diagonal():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    probs = {name: rng.dirichlet(np.ones(3), 200) for name in ("finetune", "attention")}
    figure = plots.reliability_diagram(y, probs, n_bins=10)
    (axes,) = figure.axes
    assert len(axes.lines) == 3
    assert any("ECE" in text.get_text() for text in axes.get_legend().get_texts())


def test_critical_difference_diagram_joins_groups_within_cd():
    figure = plots.critical_difference_diagram({"a": 1.2, "b": 2.0, "c": 3.1, "d": 3.7}, cd=1.0)
    (axes,) = figure.axes
    # Two group bars (a-b, c-d), the CD bar, and one leader line per method.
    assert len(axes.lines) == 2 + 1 + 4
    assert any(text.get_text() == "CD = 1.00" for text in axes.texts)


def test_learning_curves_have_a_panel_per_target_and_a_band_per_line(results):
    figure = plots.learning_curves(results, "accuracy")
    assert len(figure.axes) == 2
    for axes in figure.axes:
        assert len(axes.lines) == 2
        assert sum(isinstance(item, PolyCollection) for item in axes.collections) == 2
        assert axes.get_xscale() == "log"


def test_cost_scatter_has_one_series_per_strategy_on_a_log_axis(results):
    (axes,) = plots.cost_scatter(results, "accuracy", "trainable_params").axes
    assert len(axes.collections) == 2 and axes.get_xscale() == "log"


def test_gain_forest_shows_every_comparison_coloured_by_verdict(results):
    comparisons = compare_to_baseline(results, "finetune")
    (axes,) = plots.gain_forest(comparisons).axes
    assert len(axes.get_yticklabels()) == len(comparisons) == 6
    assert len(axes.containers) == comparisons["verdict"].nunique()
    assert [line.get_xdata()[0] for line in axes.lines if line.get_linestyle() == "-"] == [0]


def test_heatmaps_label_their_rows_and_columns():
    figure = plots.cka_heatmap(np.eye(3)[:, :2], ["a0", "a1", "a2"], ["b0", "b1"])
    heatmap, colourbar = figure.axes
    assert [label.get_text() for label in heatmap.get_yticklabels()] == ["a0", "a1", "a2"]
    assert len(heatmap.texts) == 6
    figure = plots.attention_weights_heatmap(np.full((4, 3), 1 / 3), ["mr", "subj", "trec"])
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["mr", "subj", "trec"]
    assert figure.axes[0].get_yticklabels()[0].get_text() == "layer 1"
    figure = plots.attention_weights_heatmap(np.full((2, 3), 1 / 3), ["mr", "subj", "trec"], layers=[5, 6])
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["layer 5", "layer 6"]
    with pytest.raises(InputError, match="matrix has shape \\(3, 2\\) but there are 2 row labels"):
        plots.cka_heatmap(np.ones((3, 2)), ["a0", "a1"], ["b0", "b1"])


def test_transferability_vs_gain_reports_kendall_tau():
    table = pd.DataFrame({"source": ["mr", "subj", "trec", "sst"], "logme": [0.1, 0.3, -0.2, 0.5],
                          "gain": [1.0, 2.0, -1.0, 3.0]})
    (axes,) = plots.transferability_vs_gain(table, "logme", "gain", label_col="source").axes
    assert axes.get_title().startswith("Kendall τ = 1.00")
    assert len(axes.texts) == 4


def test_save_figure_writes_png_and_svg(tmp_path):
    figure = Figure()
    figure.add_subplot().plot([0, 1], [0, 1])
    png, svg = plots.save_figure(figure, tmp_path / "figures", "line")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "<svg" in svg.read_text()
    with pytest.raises(InputError, match="figure name must be"):
        plots.save_figure(figure, tmp_path, "../line")


def test_transferability_against_gain_draws_two_sources_without_a_correlation():
    import pandas as pd

    figure = plots.transferability_vs_gain(pd.DataFrame({"source": ["mr", "subj"], "logme": [0.1, 0.3],
                                                         "gain": [1.0, -2.0]}), "logme", "gain", "source")
    assert figure.axes[0].get_title() == "2 sources: too few for a rank correlation"
