"""Every report figure draws what it promises (axes, lines, labels), colours each system the same way everywhere,
keeps its legend off the data, and saves as PNG and SVG."""
import colorsys
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from fusionkit.report import palette, plots
from fusionkit.errors import InputError
from fusionkit.evaluation.verdicts import compare_to_baseline

# A 12-system study: every strategy family, sequential through three sources, two of representation and merge.
STUDY = ["finetune", "linear_probe", "lora", "scratch", "sequential (mr)", "sequential (subj)", "sequential (trec)",
         "multitask (mr,subj,trec)", "representation sum", "representation pooled-attention", "merge task_arithmetic",
         "distill"]


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
                                     trainable_params=params, train_seconds=params / 1e5))
    return pd.DataFrame(rows)


def comparisons(spread: float = 1.0) -> pd.DataFrame:
    """A compare_pairs table by hand: two systems over their matched controls, minimum effect 1 point."""
    return pd.DataFrame({"target": "cr", "train_size": 128, "system": ["sequential (mr)", "merge ties"],
                         "baseline": ["sequential (mr): no source", "merge ties: no source"], "metric": "accuracy",
                         "gain": [3.0, -0.5], "ci_low": [3.0 - spread, -0.5 - spread],
                         "ci_high": [3.0 + spread, -0.5 + spread], "verdict": ["helps", "inconclusive"],
                         "min_effect": 1.0, "confidence": 0.95})


TRANSFERABILITY = pd.DataFrame({"source": ["none (base)", "mr", "subj", "trec"], "logme": [-0.76, 0.1, 0.3, -0.2],
                                "hscore": [0.69, 0.74, 0.88, 0.73], "leep": [np.nan, -0.64, -0.65, -0.66],
                                "nce": [np.nan, -0.57, -0.65, -0.64], "textemb": [np.nan, 0.61, 0.48, 0.30]})


def every_figure(results) -> dict:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    cka = pd.DataFrame([{"system": system, "layer": layer, "cka": 1 - layer / 10} for system in STUDY[:3]
                        for layer in range(4)])
    gains = pd.DataFrame([[np.nan, 2.0], [-1.0, np.nan]], index=["cr", "mr"], columns=["cr", "mr"])
    return {
        "reliability": plots.reliability_diagram(y, {name: rng.dirichlet(np.ones(2), 200) for name in STUDY[:3]}),
        "critical difference": plots.critical_difference_diagram({"a_b": 1.2, "c": 2.0, "d": 3.1}, cd=1.0),
        "learning curves": plots.learning_curves(results, "accuracy"),
        "accuracy vs params": plots.cost_scatter(results, "accuracy", "trainable_params"),
        "accuracy vs time": plots.cost_scatter(results, "accuracy", "train_seconds"),
        "gain forest": plots.gain_forest(comparisons(), on_test_set=comparisons(0.5)),
        "cka matrix": plots.cka_heatmap(np.eye(3), ["L0", "L1", "L2"], ["L0", "L1", "L2"]),
        "attention": plots.attention_weights_heatmap(np.full((2, 3), 1 / 3), ["base", "mr", "subj"]),
        "transfer matrix": plots.transfer_matrix_heatmap(gains),
        "ranks": plots.transferability_ranks(TRANSFERABILITY),
        "ranks and gain": plots.transferability_ranks(TRANSFERABILITY.iloc[1:].assign(gain=[3.0, -1.9, 1.3]),
                                                      gain="gain"),
        "label balance": plots.label_balance(pd.DataFrame({"task": "cr", "split": ["train", "train", "test", "test"],
                                                           "label": [0, 1, 0, 1], "share": 0.5})),
        "text lengths": plots.text_lengths(pd.DataFrame({"task": ["cr", "mr"] * 50, "words": rng.integers(1, 40, 100)})),
        "cka by layer": plots.cka_profile(cka),
        "asymmetry": plots.asymmetry_scatter(pd.DataFrame({"task_a": ["cr", "cr", "mr"], "task_b": ["mr", "subj", "subj"],
                                                           "gain_a_to_b": [1.0, -2.0, 0.5],
                                                           "gain_b_to_a": [2.0, -1.0, 0.0]})),
    }


def data_axes(figure: Figure) -> list:
    """The panels that draw data (colour bars left out)."""
    return [axes for axes in figure.axes if not hasattr(axes, "_colorbar")]


def lab(color) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour: distances in it are the colour differences a reader sees."""
    rgb = np.array(to_rgb(color))
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(np.maximum(xyz / [0.95047, 1.0, 1.08883], 0.008856))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_system_colors_are_stable_and_distinct_with_one_hue_per_family():
    colors = plots.system_colors(STUDY)
    assert colors == plots.system_colors(reversed(STUDY))
    # controls and ablations take shades after the systems': adding them changes no system's colour
    with_controls = plots.system_colors(STUDY + [f"{system}: no source" for system in STUDY[4:]])
    assert {system: with_controls[system] for system in STUDY} == colors
    assert len(set(colors.values())) == len(STUDY) == len(set(with_controls.values())) - 8
    assert min(np.linalg.norm(lab(a) - lab(b)) for a, b in itertools.combinations(colors.values(), 2)) > 15
    hue = lambda system: colorsys.rgb_to_hls(*to_rgb(colors[system]))[0]  # noqa: E731
    assert hue("sequential (mr)") == pytest.approx(hue("sequential (subj)"), abs=0.01)
    assert hue("sequential (trec)") == pytest.approx(hue("sequential (mr)"), abs=0.01)
    assert hue("representation sum") == pytest.approx(hue("representation pooled-attention"), abs=0.01)
    assert colors["sequential (mr)"] == to_hex(palette.FAMILY_COLORS["sequential"])  # first variant: the palette's


def test_figures_colour_each_system_from_the_mapping_they_are_given(results):
    colors = plots.system_colors(["finetune", "attention (sources subj)", "attention (sources mr)"])
    for axes in plots.learning_curves(results, "accuracy", colors=colors).axes:
        assert {line.get_label(): to_hex(line.get_color()) for line in axes.lines} == {
            name: colors[name] for name in ("finetune", "attention (sources subj)")}
    with pytest.raises(InputError, match="colors has no colour for \\['finetune'\\]"):
        plots.cost_scatter(results, "accuracy", "trainable_params", colors={"attention (sources subj)": "red"})


def test_every_figure_labels_its_axes_in_words(results):
    for name, figure in every_figure(results).items():
        for axes in figure.axes:
            labels = [axes.get_xlabel(), axes.get_ylabel()]
            assert not any("_" in label for label in labels), (name, labels)
        assert all(axes.get_xlabel() for axes in data_axes(figure)), name


def test_legends_stay_outside_the_data(results):
    checked = 0
    for name, figure in every_figure(results).items():
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        legends = figure.legends + [axes.get_legend() for axes in figure.axes if axes.get_legend()]
        for legend, axes in itertools.product(legends, data_axes(figure)):
            assert not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer)), name
            checked += 1
    assert checked >= 9


def test_axis_labels_carry_units_and_scale():
    assert plots.axis_label("train_seconds", "log scale") == "Training time (s, log scale)"
    assert plots.axis_label("trainable_params", "log scale") == "Trainable parameters (log scale)"
    assert plots.axis_label("accuracy") == "Accuracy (fraction correct)"
    assert plots.axis_label("some_new_column") == "Some new column"


def test_reliability_diagram_draws_one_line_per_model_and_the_diagonal():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    probs = {name: rng.dirichlet(np.ones(3), 200) for name in ("finetune", "attention")}
    figure = plots.reliability_diagram(y, probs, n_bins=10)
    (axes,) = figure.axes
    assert len(axes.lines) == 3
    assert any("ECE" in text.get_text() for text in figure.legends[0].get_texts())


@pytest.mark.parametrize("as_series", [False, True])  # friedman_nemenyi gives its ranks as a Series
def test_critical_difference_diagram_joins_groups_within_cd(as_series):
    ranks = {"a": 1.2, "b": 2.0, "c": 3.1, "d": 3.7}
    figure = plots.critical_difference_diagram(pd.Series(ranks) if as_series else ranks, cd=1.0)
    (axes,) = figure.axes
    # Two group bars (a-b, c-d), the CD bar, and one leader line per method.
    assert len(axes.lines) == 2 + 1 + 4
    assert any(text.get_text() == "critical difference = 1.00" for text in axes.texts)


def test_learning_curves_have_a_panel_per_target_and_a_band_per_line(results):
    figure = plots.learning_curves(results, "accuracy")
    assert len(figure.axes) == 2
    for axes in figure.axes:
        assert len(axes.lines) == 2
        assert sum(isinstance(item, PolyCollection) for item in axes.collections) == 2
        assert axes.get_xscale() == "log"


def test_cost_scatter_has_one_series_per_system_on_a_log_axis(results):
    (axes,) = plots.cost_scatter(results, "accuracy", "trainable_params").axes
    assert len(axes.collections) == 2 and axes.get_xscale() == "log"
    assert axes.get_xlabel() == "Trainable parameters (log scale)"


def test_gain_forest_shows_both_intervals_the_minimum_effect_and_zero():
    seeds, test_set = comparisons(), comparisons(0.5)
    (axes,) = plots.gain_forest(seeds, on_test_set=test_set).axes
    assert [label.get_text() for label in axes.get_yticklabels()] == ["sequential (mr)", "merge ties"]
    assert len(axes.containers) == 2 * len(seeds)  # an interval over seeds and one over test examples per row
    widths = sorted({round(float(np.ptp(bar.lines[2][0].get_segments()[0][:, 0])), 6) for bar in axes.containers})
    assert widths == [1.0, 2.0]
    band = [patch for patch in axes.patches if patch.get_x() == -1.0]
    assert len(band) == 1 and band[0].get_width() == 2.0
    assert [line.get_xdata()[0] for line in axes.lines if line.get_linestyle() == "-"] == [0]
    assert "helps (test set: helps)" in [text.get_text() for text in axes.texts]
    assert axes.get_xlabel() == "Gain over each system's reference (accuracy points)"


def test_gain_forest_of_compare_to_baseline_labels_sizes_and_targets(results):
    table = compare_to_baseline(results, "finetune")
    (axes,) = plots.gain_forest(table).axes
    assert len(axes.get_yticklabels()) == len(table) == 6
    assert axes.get_yticklabels()[0].get_text() == "attention (sources subj), cr, n=64"
    assert axes.get_xlabel() == "Gain over finetune (accuracy points)"


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


def test_transferability_ranks_give_rank_one_to_the_highest_score():
    (axes,) = plots.transferability_ranks(TRANSFERABILITY).axes
    texts = [text.get_text() for text in axes.texts]
    assert "#1\n0.300" in texts and "#4\n-0.760" in texts  # LogME: subj highest, the base lowest
    assert texts.count("—") == 3  # LEEP, NCE and the text-embedding similarity cannot score the base encoder
    assert [label.get_text() for label in axes.get_xticklabels()] == ["LogME", "H-score", "LEEP", "NCE",
                                                                      "Text-embedding similarity (cosine)"]


def test_transferability_ranks_sit_beside_the_observed_gain_with_kendall_tau():
    table = TRANSFERABILITY.iloc[1:].assign(gain=[3.0, -1.9, 1.3])  # mr, subj, trec
    (axes,) = plots.transferability_ranks(table, gain="gain").axes
    assert [label.get_text() for label in axes.get_yticklabels()] == ["mr", "trec", "subj"]  # by observed gain
    columns = [label.get_text() for label in axes.get_xticklabels()]
    assert columns[0] == "LogME\nτ = -0.33" and columns[-1] == "Observed gain"
    assert "#1\n+3.0 points" in [text.get_text() for text in axes.texts]
    two = plots.transferability_ranks(table.iloc[:2], gain="gain").axes[0]
    assert two.get_xticklabels()[0].get_text() == "LogME"  # too few sources for a rank correlation


def test_save_figure_writes_png_and_svg(tmp_path):
    figure = Figure()
    figure.add_subplot().plot([0, 1], [0, 1])
    png, svg = plots.save_figure(figure, tmp_path / "figures", "line")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "<svg" in svg.read_text()
    with pytest.raises(InputError, match="figure name must be"):
        plots.save_figure(figure, tmp_path, "../line")
