"""Report figures: tables or arrays in, a matplotlib Figure out; all computing is left to the evaluation modules.

Every figure that draws systems colours them with ``system_colors`` (``fusionkit.report.palette``; pass the same
mapping to every figure of a report), keeps its legend outside the data, and labels its axes in words with their
units (``axis_label``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fusionkit.errors import InputError
from fusionkit.evaluation.verdicts import metric_unit, system_name
from fusionkit.evaluation.metrics import as_checked_array, check_columns, ece, reliability_bins
from fusionkit.evaluation.stats import cd_groups
from fusionkit.evaluation.gains import learning_curve
from fusionkit.evaluation.transferability import rank_correlation
from fusionkit.report.palette import PALETTE, axis_label, category_colors, colors_for, column_name
from fusionkit.report.palette import system_colors  # noqa: F401 (callers colour a report's figures alike with it)

_FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Writing numbers into every cell stops being readable past this many cells.
_MAX_ANNOTATED_CELLS = 200

TRANSFERABILITY_ESTIMATORS = ("logme", "hscore", "leep", "nce", "textemb")


def _legend_outside(figure: Figure, handles: Sequence | None = None, below: bool = False, **options) -> Legend:
    """One legend for the figure, right of (or below) every panel, never on the data; a label repeated across
    panels is listed once."""
    if handles is None:
        by_label = {}
        for axes in figure.axes:
            for handle, label in zip(*axes.get_legend_handles_labels()):
                by_label.setdefault(label, handle)
        handles, labels = list(by_label.values()), list(by_label)
    else:
        labels = [handle.get_label() for handle in handles]
    return figure.legend(handles, labels, loc="outside lower center" if below else "outside right upper",
                         fontsize="small", **options)


def reliability_diagram(y, probs_by_name: Mapping[str, np.ndarray], n_bins: int = 15,
                        colors: Mapping[str, str] | None = None) -> Figure:
    """Accuracy against confidence per bin, one line per model (ECE in the legend) and the diagonal."""
    colors = colors_for(probs_by_name, colors)
    figure = Figure(figsize=(8.5, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, probs in probs_by_name.items():
        bins = reliability_bins(y, probs, n_bins)
        filled = bins["count"] > 0
        axes.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o", color=colors[name],
                  label=f"{name} (ECE {ece(y, probs, n_bins):.3f})")
    axes.set(xlim=(0, 1), ylim=(0, 1), title="Reliability diagram", xlabel="Confidence (highest predicted probability)",
             ylabel="Accuracy (fraction correct)")
    _legend_outside(figure)
    return figure


def ranking_title(ranking) -> str:
    """A critical-difference diagram's title from its Friedman test (``stats.friedman_nemenyi``): the Nemenyi
    post-hoc comparison reads only after a significant Friedman test (Demšar 2006); after a non-significant one the
    diagram is drawn as exploratory and says so."""
    if ranking.p_value < ranking.alpha:
        return f"Critical difference diagram (Nemenyi, after Friedman p={ranking.p_value:.2g})"
    return (f"Exploratory: Friedman p={ranking.p_value:.2g} ≥ {ranking.alpha:g}, no system is shown to differ;\n"
            f"the ranks and the Nemenyi critical difference are drawn for orientation only")


def critical_difference_diagram(avg_ranks: Mapping[str, float], cd: float,
                                colors: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Methods on an average-rank axis (1 = best), the CD bar, and a bar joining each group within CD; ``title``
    (``ranking_title``) says whether the Friedman test before it was significant."""
    avg_ranks = dict(avg_ranks)  # a Series iterates over its values, a mapping over its names
    colors = colors_for(avg_ranks, colors)
    ordered = sorted(avg_ranks.items(), key=lambda item: item[1])
    groups = cd_groups(dict(ordered), cd)
    figure = Figure(figsize=(7, 1.5 + 0.35 * len(ordered)), layout="constrained")
    axes = figure.add_subplot()
    for level, group in enumerate(groups):
        ranks = [avg_ranks[name] for name in group]
        axes.plot([min(ranks), max(ranks)], [0.3 + 0.3 * level] * 2, color="black", linewidth=4)
    bar_height = 0.6 + 0.3 * len(groups)
    axes.plot([1, 1 + cd], [bar_height] * 2, color="black", linewidth=2)
    axes.text(1 + cd / 2, bar_height + 0.15, f"critical difference = {cd:.2f}", ha="center", va="bottom")
    for row, (name, rank) in enumerate(ordered, start=1):
        axes.plot([rank, rank], [0, -row], color=colors[name], linewidth=1.5)
        axes.text(rank, -row, f" {name} ({rank:.2f})", va="center", color=colors[name])
    axes.set(xlim=(0.8, max(len(ordered), 1 + cd) + 0.5), ylim=(-len(ordered) - 0.7, bar_height + 0.8),
             xlabel="Average rank (1 = best)", title=title or "Critical difference diagram (Nemenyi)")
    axes.set_xticks(range(1, len(ordered) + 1))
    axes.get_yaxis().set_visible(False)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    return figure


def learning_curves(results: pd.DataFrame, metric: str, confidence: float = 0.95,
                    colors: Mapping[str, str] | None = None) -> Figure:
    """One panel per target: metric against train size (log2 axis), one line per strategy and sources,
    mean over seeds with its t-interval band."""
    table = learning_curve(results, metric, by=("target", "strategy", "sources"), confidence=confidence)
    names = [system_name(strategy, sources) for strategy, sources in zip(table["strategy"], table["sources"])]
    table, colors = table.assign(system=names), colors_for(names, colors)
    targets = sorted(table["target"].unique())
    figure = Figure(figsize=(5 * len(targets) + 2.5, 4), layout="constrained")
    for index, target in enumerate(targets, start=1):
        axes = figure.add_subplot(1, len(targets), index)
        panel = table[table["target"] == target]
        for system, curve in panel.groupby("system", sort=False):
            axes.plot(curve["train_size"], curve["mean"], marker="o", color=colors[system], label=system)
            axes.fill_between(curve["train_size"], curve["ci_low"], curve["ci_high"], color=colors[system], alpha=0.2)
        axes.set_xscale("log", base=2)
        sizes = sorted(panel["train_size"].unique())
        axes.set_xticks(sizes, [str(size) for size in sizes])
        axes.set(title=f"Target {target}", xlabel=axis_label("train_size", "log2 scale"), ylabel=axis_label(metric))
    _legend_outside(figure, title=f"mean, {confidence:.0%} interval over seeds")
    return figure


def cost_scatter(results: pd.DataFrame, metric: str, cost_column: str,
                 colors: Mapping[str, str] | None = None) -> Figure:
    """Each run's metric against its cost (e.g. trainable_params or train_seconds, log axis), one colour per
    system (its strategy and sources)."""
    check_columns(results, ["strategy", "sources", metric, cost_column])
    names = [system_name(strategy, sources) for strategy, sources in zip(results["strategy"], results["sources"])]
    colors = colors_for(names, colors)
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.add_subplot()
    for system, runs in results.assign(system=names).groupby("system"):
        axes.scatter(runs[cost_column], runs[metric], label=system, color=colors[system], alpha=0.85,
                     edgecolor="0.2", linewidth=0.4)
    _log_x_axis(axes, results[cost_column])
    axes.set(xlabel=axis_label(cost_column, "log scale"), ylabel=axis_label(metric),
             title=f"{column_name(metric)} against {column_name(cost_column).lower()}, every run")
    _legend_outside(figure)
    return figure


def _log_x_axis(axes: Axes, values) -> None:
    """A log x axis whose ticks read as plain numbers (50, 2k, 10M), at 1, 2 and 5 per decade over few decades."""
    axes.set_xscale("log")
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(values.max() / values.min()) if len(values) else 0.0
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    axes.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def gain_forest(comparisons: pd.DataFrame, reference: str | None = None, on_test_set: pd.DataFrame | None = None,
                colors: Mapping[str, str] | None = None) -> Figure:
    """Forest plot of a comparisons table (``compare_pairs`` or ``compare_to_baseline``): each gain with its interval
    over seeds (filled dot), the same gain over test examples from ``on_test_set`` when given (hollow diamond,
    secondary), 0 and the band within the declared minimum effect marked, one colour per system, the verdict at
    the right. ``reference`` names what the gains are over (default: the baseline column's one name, or "each
    system's reference")."""
    columns = ["target", "train_size", "system", "metric", "gain", "ci_low", "ci_high", "verdict"]
    check_columns(comparisons, columns, "comparisons")
    if on_test_set is not None:
        check_columns(on_test_set, columns, "on_test_set")
    colors = colors_for(comparisons["system"], colors)
    figure = Figure(figsize=(8, 1.8 + 0.45 * len(comparisons)), layout="constrained")
    axes = figure.add_subplot()
    keys = ["target", "train_size", "system"]
    test_rows = {} if on_test_set is None else {tuple(row[keys]): row for _, row in on_test_set.iterrows()}
    positions = np.arange(len(comparisons))[::-1]
    for position, (_, row) in zip(positions, comparisons.iterrows()):
        color = colors[row["system"]]
        _interval(axes, row, position, color, fmt="o", markerfacecolor=color, elinewidth=2)
        test = test_rows.get(tuple(row[keys]))
        if test is not None:
            _interval(axes, test, position - 0.3, color, fmt="D", markerfacecolor="white", elinewidth=1)
        verdict = row["verdict"] + (f" (test set: {test['verdict']})" if test is not None else "")
        axes.text(1.01, position, verdict, transform=axes.get_yaxis_transform(), va="center", fontsize="small")
    handles = [Line2D([], [], color="black", marker="o", linewidth=2,
                      label=f"{_level(comparisons)} interval over seeds (the verdict)")]
    if test_rows:
        handles.append(Line2D([], [], color="black", marker="D", markerfacecolor="white", linewidth=1,
                              label=f"{_level(on_test_set)} interval over test examples (secondary)"))
    axes.axvline(0, color="black", linewidth=0.8)
    min_effect = float(comparisons["min_effect"].max()) if "min_effect" in comparisons and len(comparisons) else 0.0
    if min_effect > 0:
        axes.axvspan(-min_effect, min_effect, color="0.9", zorder=0)
        handles.append(Patch(color="0.9", label=f"within the declared minimum effect (±{min_effect:g})"))
    _label_forest(axes, comparisons, positions, reference)
    _legend_outside(figure, handles, below=True, ncols=2)
    return figure


def _label_forest(axes: Axes, comparisons: pd.DataFrame, positions, reference: str | None) -> None:
    """A row per comparison named by its system (and target and size where they vary); what the gain is over."""
    several = {key: comparisons[key].nunique() > 1 for key in ("target", "train_size")}
    labels = [row.system + (f", {row.target}" if several["target"] else "")
              + (f", n={row.train_size}" if several["train_size"] else "") for row in comparisons.itertuples()]
    axes.set_yticks(positions, labels)
    axes.set_ylim(-0.8, len(comparisons) - 0.5)
    if len(comparisons):
        references = comparisons["baseline"].unique() if "baseline" in comparisons else ["baseline"]
        reference = reference or (references[0] if len(references) == 1 else "each system's reference")
        axes.set_xlabel(f"Gain over {reference} ({metric_unit(comparisons['metric'].iloc[0])})")
        sizes = "" if several["train_size"] else f" at n={comparisons['train_size'].iloc[0]}"
        axes.set_title(f"Gain of each system over {reference}{sizes}")


def _interval(axes: Axes, row, position: float, color, **style) -> None:
    # A row without a test has no interval: the point alone.
    spread = np.nan_to_num([[row["gain"] - row["ci_low"]], [row["ci_high"] - row["gain"]]])
    axes.errorbar([row["gain"]], [position], xerr=spread, color=color, capsize=3, markeredgecolor=color, **style)


def _level(comparisons: pd.DataFrame) -> str:
    """What a comparisons table's intervals are: "simultaneous 95% (Bonferroni over 6)" for a family judged at a
    declared alpha (``compare_pairs``), else their own confidence level."""
    if not len(comparisons):
        return "95%"
    first = comparisons.iloc[0]
    if "comparisons" in comparisons and "alpha" in comparisons:
        looks = f", {int(first['looks'])} looks" if first.get("looks", 1) > 1 else ""
        return f"simultaneous {1 - first['alpha']:.0%} (Bonferroni over {int(first['comparisons'])}{looks})"
    return f"{first['confidence']:.0%}" if "confidence" in comparisons else "95%"


def _annotated_heatmap(values, row_labels: Sequence, column_labels: Sequence, texts=None, *, cmap, vmin=None,
                       vmax=None, colorbar: str | None = None, cell=(0.6, 0.5), **labels) -> tuple[Figure, Axes]:
    """``values`` as coloured cells (a NaN cell grey), ``texts`` written on them in black or white, whichever reads
    on the cell; ``labels``: title, xlabel, ylabel."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(row_labels), len(column_labels)):
        raise InputError(f"matrix has shape {values.shape} but there are {len(row_labels)} row labels "
                         f"and {len(column_labels)} column labels")
    figure = Figure(figsize=(2.2 + cell[0] * values.shape[1], 1.6 + cell[1] * values.shape[0]), layout="constrained")
    axes = figure.add_subplot()
    axes.set_facecolor("lightgrey")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    # about 0.08 inch a character at tick size: rotate labels wider than their cells
    long_names = max(len(line) for label in column_labels for line in str(label).splitlines()) * 0.08 > cell[0]
    axes.set_xticks(range(values.shape[1]), [str(label) for label in column_labels], rotation=45 if long_names else 0,
                    ha="right" if long_names else "center")
    axes.set_yticks(range(values.shape[0]), [str(label) for label in row_labels])
    if texts is not None:
        for (row, column), value in np.ndenumerate(values):
            red, green, blue, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(column, row, texts[row][column], ha="center", va="center", fontsize="small",
                      color="white" if dark else "black")
    if colorbar:
        figure.colorbar(image, ax=axes, label=colorbar)
    axes.set(**labels)
    return figure, axes


def _values_written(values: np.ndarray) -> list[list[str]] | None:
    return None if values.size > _MAX_ANNOTATED_CELLS else [[f"{value:.2f}" for value in row] for row in values]


def cka_heatmap(matrix, labels_a: Sequence[str], labels_b: Sequence[str], name_a: str = "encoder A",
                name_b: str = "encoder B", title: str = "Linear CKA between layers") -> Figure:
    """A layerwise_cka matrix [L_a, L_b] with its layer labels, on a fixed 0-1 colour scale; ``name_a`` and
    ``name_b`` say whose layers the rows and the columns are."""
    values = as_checked_array(matrix, "matrix", ndim=2)
    figure, _ = _annotated_heatmap(values, labels_a, labels_b, _values_written(values), cmap="viridis", vmin=0.0,
                                   vmax=1.0, colorbar="Linear CKA (0-1)", title=title, ylabel=f"Layer of {name_a}",
                                   xlabel=f"Layer of {name_b}")
    return figure


def geometry_beside_gains(cosines: pd.DataFrame, gains: pd.DataFrame,
                          colors: Mapping[str, str] | None = None) -> Figure:
    """Left, the cosine similarity of the sources' task vectors (``cosines``, square, index the sources); right, on
    the same rows, what each source did (``tables.geometry_beside_gains``): each gain with the interval its verdict
    read, one colour per kind of gain (sequential transfer from the source, its leave-one-out contribution to each
    merge), 0 and the declared minimum effect marked."""
    check_columns(gains, ["source", "gain_of", "gain", "ci_low", "ci_high"], "gains")
    names = [str(name) for name in cosines.index]
    values = cosines.loc[names, names].to_numpy(dtype=np.float64)
    figure = Figure(figsize=(10, 2.0 + 0.6 * len(names)), layout="constrained")
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    image = left.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        left.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize="small",
                  color="white" if abs(value) > 0.6 else "black")
    left.set_xticks(range(len(names)), names)
    left.set_yticks(range(len(names)), names)
    left.set(title="Task-vector cosine (expert minus base)", xlabel="Source", ylabel="Source")
    figure.colorbar(image, ax=left, label="Cosine similarity (-1 to 1)", location="bottom", shrink=0.8)
    kinds = list(dict.fromkeys(gains["gain_of"]))
    colors = colors_for(kinds, colors)
    offsets = dict(zip(kinds, np.linspace(-0.25, 0.25, len(kinds)) if len(kinds) > 1 else [0.0]))
    for _, row in gains.iterrows():
        _interval(right, row, names.index(row["source"]) + offsets[row["gain_of"]], colors[row["gain_of"]], fmt="o",
                  markerfacecolor=colors[row["gain_of"]], elinewidth=2)
    right.axvline(0, color="black", linewidth=0.8)
    min_effect = float(gains["min_effect"].max()) if "min_effect" in gains and len(gains) else 0.0
    if min_effect > 0:
        right.axvspan(-min_effect, min_effect, color="0.9", zorder=0)
    right.set_yticks(range(len(names)), names)
    right.set_ylim(len(names) - 0.5, -0.5)  # the heatmap's row order
    right.set(title="What each source did", xlabel="Gain (accuracy points) with the interval its verdict read")
    handles = [Line2D([], [], color=colors[kind], marker="o", linewidth=2,
                      label="sequential transfer from it, over its matched control" if kind == "sequential" else
                      f"its contribution to {kind} (leave-one-out)") for kind in kinds]
    if handles:
        _legend_outside(figure, handles, below=True, ncols=1)
    return figure


def attention_weights_heatmap(weights, source_names: Sequence[str], layers: Sequence[int] | None = None) -> Figure:
    """Fusion attention weights [n_layers, n_sources]: which source each layer draws on. ``layers`` names the
    encoder layer of each row (0 = embeddings); by default rows are numbered from 1."""
    values = as_checked_array(weights, "weights", ndim=2)
    layers = list(layers) if layers is not None else list(range(1, len(values) + 1))
    figure, _ = _annotated_heatmap(values, [f"layer {index}" for index in layers], source_names,
                                   _values_written(values), cmap="viridis", vmin=0.0,
                                   colorbar="Attention weight (share, 0-1)", title="Attention weight per source",
                                   xlabel="Source expert", ylabel="Encoder layer (0 = embeddings)")
    return figure


def transfer_matrix_heatmap(gains: pd.DataFrame, marks: pd.DataFrame | None = None) -> Figure:
    """Gain of transfer from each source (rows) to each target (columns), in accuracy points, on a diverging
    colour scale centred on 0 (blue: helps, red: hurts; readable with red-green colour blindness). ``marks``
    (same shape, strings) is written after each number; a cell without a value (a task and itself) is grey."""
    values = gains.to_numpy(dtype=np.float64)
    limit = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
    texts = [["—" if np.isnan(value) else f"{value:+.1f}{'' if marks is None else marks.iloc[row, column]}"
              for column, value in enumerate(line)] for row, line in enumerate(values)]
    figure, _ = _annotated_heatmap(values, gains.index, gains.columns, texts, cmap="RdBu", vmin=-limit, vmax=limit,
                                   colorbar="Gain over matched control (accuracy points)", cell=(0.9, 0.6),
                                   xlabel="Target task", ylabel="Source task",
                                   title="Gain of transfer from each source to each target")
    return figure


def transferability_ranks(table: pd.DataFrame, scores: Sequence[str] = TRANSFERABILITY_ESTIMATORS,
                          gain: str | None = None) -> Figure:
    """The rank each estimator gives each source (1 = highest score = predicted most helpful), the raw score under
    it. With ``gain`` (a column of observed gains in accuracy points), a last column ranks the sources by it and
    each estimator's Kendall tau with it is under the estimator's name: an estimator that ranked the sources right
    has the last column's ranks. A source an estimator cannot score (LEEP or NCE of the base encoder) is grey."""
    check_columns(table, ["source", *scores, *([gain] if gain else [])], "table")
    if table.empty:
        raise InputError("table has no sources to rank")
    table = table.sort_values(gain, ascending=False) if gain else table
    columns = [*scores, *([gain] if gain else [])]
    values = table[columns].to_numpy(dtype=np.float64)
    ranks = table[columns].rank(ascending=False, method="min").to_numpy()
    texts = [["—" if np.isnan(value) else f"#{rank:.0f}\n{value:+.1f} points" if column == gain else
              f"#{rank:.0f}\n{value:.3f}" for column, value, rank in zip(columns, row_values, row_ranks)]
             for row_values, row_ranks in zip(values, ranks)]
    names = [axis_label(score) + (_tau_with(table, score, gain) if gain else "") for score in scores]
    tau = "; τ: Kendall's tau with the gain" if gain and len(table) >= 3 else ""
    figure, axes = _annotated_heatmap(
        ranks, table["source"], names + (["Observed gain"] if gain else []), texts, cmap="Blues_r", vmin=1,
        vmax=len(table) + 1, cell=(1.1, 0.6), ylabel="Source",
        xlabel="Estimator: rank (1 = predicted most helpful) and raw score" + tau,
        title="How each estimator ranks the sources" + (", beside how much each helped" if gain else ""))
    if gain:
        axes.axvline(len(scores) - 0.5, color="white", linewidth=4)
    return figure


def _tau_with(table: pd.DataFrame, score: str, gain: str) -> str:
    both = table[[score, gain]].dropna()
    if len(both) < 3:
        return ""
    return f"\nτ = {rank_correlation(both[score], both[gain])['kendall_tau']:+.2f}"


def save_figure(figure: Figure, folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write `figure` as <folder>/<name>.png and .svg (folder created if missing); return both paths."""
    if not _FIGURE_NAME.fullmatch(name):
        raise InputError(f"figure name must be letters, digits, '.', '-' or '_', got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    figure.savefig(png, dpi=150)
    figure.savefig(svg)
    return png, svg


def label_balance(counts: pd.DataFrame) -> Figure:
    """Share of each label per task and split (a tables.label_counts table), one panel per task, its labels'
    legend beside it."""
    check_columns(counts, ["task", "split", "label", "share"], "counts")
    tasks = list(dict.fromkeys(counts["task"]))
    figure = Figure(figsize=(4.2 * len(tasks), 3.4), layout="constrained")
    for index, task in enumerate(tasks, start=1):
        axes = figure.add_subplot(1, len(tasks), index)
        table = counts[counts["task"] == task].pivot(index="split", columns="label", values="share")
        table = table.reindex([s for s in ("train", "validation", "test") if s in table.index])
        bottom = np.zeros(len(table))
        for label, color in category_colors(table.columns).items():
            axes.bar(table.index, table[label], bottom=bottom, label=str(label), color=color)
            bottom += table[label].to_numpy()
        axes.set(title=f"Task {task}", xlabel="Split", ylabel="Share of examples (fraction)", ylim=(0, 1))
        axes.legend(fontsize="x-small", title="label", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def text_lengths(lengths: pd.DataFrame, clip: int = 80) -> Figure:
    """Distribution of text length in words per task (a tables.text_length_table), clipped at `clip`."""
    check_columns(lengths, ["task", "words"], "lengths")
    figure = Figure(figsize=(7.5, 4), layout="constrained")
    axes = figure.add_subplot()
    bins = np.arange(0, clip + 2, 2)
    colors = category_colors(lengths["task"])
    for task, rows in lengths.groupby("task", sort=False):
        axes.hist(np.minimum(rows["words"], clip), bins=bins, histtype="step", density=True, linewidth=1.5,
                  color=colors[task], label=f"{task} (median {rows['words'].median():.0f})")
    axes.set(xlabel=f"Words per text (clipped at {clip})", ylabel="Density (share of texts per word)",
             title="Text lengths")
    _legend_outside(figure)
    return figure


def cka_profile(table: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure:
    """CKA between each layer of the base and the same layer after adaptation, one line per system."""
    check_columns(table, ["system", "layer", "cka"], "table")
    colors = colors_for(table["system"], colors)
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.add_subplot()
    for system, rows in table.groupby("system"):
        axes.plot(rows["layer"], rows["cka"], marker="o", color=colors[system], label=str(system))
    axes.set(xlabel="Encoder layer (0 = embeddings)", ylabel="Linear CKA with the same base layer (0-1)",
             ylim=(0, 1.05), title="How much each layer changed")
    _legend_outside(figure)
    return figure


def asymmetry_scatter(pairs: pd.DataFrame, test: Mapping | None = None) -> Figure:
    """gain(A->B) against gain(B->A) for every pair of tasks, each with both intervals where the table has them
    (a_to_b_low/high, b_to_a_low/high), the diagonal (symmetric transfer), and ``test`` in the title: Spearman's rho
    with its permutation p over task labels (``stats.asymmetry_test``)."""
    check_columns(pairs, ["task_a", "task_b", "gain_a_to_b", "gain_b_to_a"], "pairs")
    figure = Figure(figsize=(6.5, 5), layout="constrained")
    axes = figure.add_subplot()
    x, y = pairs["gain_a_to_b"].to_numpy(float), pairs["gain_b_to_a"].to_numpy(float)
    if {"a_to_b_low", "a_to_b_high", "b_to_a_low", "b_to_a_high"} <= set(pairs):
        xerr = np.nan_to_num([x - pairs["a_to_b_low"].to_numpy(float), pairs["a_to_b_high"].to_numpy(float) - x])
        yerr = np.nan_to_num([y - pairs["b_to_a_low"].to_numpy(float), pairs["b_to_a_high"].to_numpy(float) - y])
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=PALETTE[0], ecolor="0.6", elinewidth=1, capsize=2)
        values = np.concatenate([x - xerr[0], x + xerr[1], y - yerr[0], y + yerr[1]])
    else:
        axes.scatter(x, y, color=PALETTE[0])
        values = np.concatenate([x, y])
    for _, row in pairs.iterrows():
        axes.annotate(f"{row['task_a']}/{row['task_b']}", (row["gain_a_to_b"], row["gain_b_to_a"]),
                      textcoords="offset points", xytext=(4, 4), fontsize="small")
    low, high = float(np.nanmin(values)) - 0.5, float(np.nanmax(values)) + 0.5
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8, label="symmetric transfer")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.axvline(0, color="grey", linewidth=0.5)
    title = (f"Spearman ρ = {test['spearman_rho']:.2f} (p = {test['p_value']:.2g} permuting task labels, "
             f"{test['n_pairs']} pairs)" if test else f"{len(pairs)} pairs: no test without a complete matrix")
    axes.set(xlabel="Gain of A → B over its control (accuracy points)",
             ylabel="Gain of B → A over its control (accuracy points)", title=title, aspect="equal")
    _legend_outside(figure, below=True)
    return figure
