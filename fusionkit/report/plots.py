"""Report figures: tables or arrays in, a matplotlib Figure out; all computing is left to the evaluation modules."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fusionkit.errors import InputError
from fusionkit.evaluation.verdicts import metric_unit, system_name
from fusionkit.evaluation.metrics import as_checked_array, check_columns, ece, reliability_bins
from fusionkit.evaluation.stats import cd_groups
from fusionkit.evaluation.gains import HELPS, HURTS, INCONCLUSIVE, learning_curve
from fusionkit.evaluation.transferability import rank_correlation

VERDICT_COLOURS = {HELPS: "tab:green", HURTS: "tab:red", INCONCLUSIVE: "tab:grey", "better": "tab:olive",
                   "worse": "tab:orange"}
_FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Writing numbers into every cell stops being readable past this many cells.
_MAX_ANNOTATED_CELLS = 200


def reliability_diagram(y, probs_by_name: Mapping[str, np.ndarray], n_bins: int = 15) -> Figure:
    """Accuracy against confidence per bin, one line per model (ECE in the legend) and the diagonal."""
    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, probs in probs_by_name.items():
        bins = reliability_bins(y, probs, n_bins)
        filled = bins["count"] > 0
        axes.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o",
                  label=f"{name} (ECE {ece(y, probs, n_bins):.3f})")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy",
             title="Reliability diagram")
    axes.legend(loc="upper left")
    return figure


def critical_difference_diagram(avg_ranks: Mapping[str, float], cd: float) -> Figure:
    """Methods on an average-rank axis (1 = best), the CD bar, and a bar joining each group within CD."""
    ordered = sorted(avg_ranks.items(), key=lambda item: item[1])
    groups = cd_groups(dict(ordered), cd)
    figure = Figure(figsize=(7, 1.5 + 0.35 * len(ordered)), layout="constrained")
    axes = figure.add_subplot()
    for level, group in enumerate(groups):
        ranks = [avg_ranks[name] for name in group]
        axes.plot([min(ranks), max(ranks)], [0.3 + 0.3 * level] * 2, color="black", linewidth=4)
    bar_height = 0.6 + 0.3 * len(groups)
    axes.plot([1, 1 + cd], [bar_height] * 2, color="tab:red", linewidth=2)
    axes.text(1 + cd / 2, bar_height + 0.15, f"CD = {cd:.2f}", ha="center", va="bottom")
    for row, (name, rank) in enumerate(ordered, start=1):
        axes.plot([rank, rank], [0, -row], color="grey", linewidth=0.8)
        axes.text(rank, -row, f" {name} ({rank:.2f})", va="center")
    axes.set(xlim=(0.8, max(len(ordered), 1 + cd) + 0.5), ylim=(-len(ordered) - 0.7, bar_height + 0.8),
             xlabel="average rank (1 = best)")
    axes.set_xticks(range(1, len(ordered) + 1))
    axes.get_yaxis().set_visible(False)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    return figure


def learning_curves(results: pd.DataFrame, metric: str, confidence: float = 0.95) -> Figure:
    """One panel per target: metric against train size (log2 axis), one line per strategy and sources,
    mean over seeds with its t-interval band."""
    table = learning_curve(results, metric, by=("target", "strategy", "sources"), confidence=confidence)
    targets = sorted(table["target"].unique())
    figure = Figure(figsize=(5 * len(targets), 4), layout="constrained")
    for index, target in enumerate(targets, start=1):
        axes = figure.add_subplot(1, len(targets), index)
        panel = table[table["target"] == target]
        for (strategy, sources), curve in panel.groupby(["strategy", "sources"], dropna=False):
            line, = axes.plot(curve["train_size"], curve["mean"], marker="o", label=system_name(strategy, sources))
            axes.fill_between(curve["train_size"], curve["ci_low"], curve["ci_high"], color=line.get_color(), alpha=0.2)
        axes.set_xscale("log", base=2)
        sizes = sorted(panel["train_size"].unique())
        axes.set_xticks(sizes, [str(size) for size in sizes])
        axes.set(title=str(target), xlabel="train size", ylabel=metric)
        axes.legend(fontsize="small")
    return figure


def cost_scatter(results: pd.DataFrame, metric: str, cost_column: str) -> Figure:
    """Each run's metric against its cost (e.g. trainable_params or train_seconds, log axis), coloured by strategy."""
    check_columns(results, ["strategy", metric, cost_column])
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for strategy, runs in results.groupby("strategy"):
        axes.scatter(runs[cost_column], runs[metric], label=str(strategy), alpha=0.8)
    axes.set_xscale("log")
    axes.set(xlabel=cost_column, ylabel=metric, title=f"{metric} against {cost_column}")
    axes.legend(fontsize="small")
    return figure


def gain_forest(comparisons: pd.DataFrame, reference: str | None = None) -> Figure:
    """Forest plot of a comparisons table (``compare_pairs`` or ``compare_to_baseline``): each gain with its CI,
    coloured by verdict, a line at 0. ``reference`` names what the gains are over (default: the baseline column's
    one name, or "each system's reference")."""
    check_columns(comparisons, ["target", "train_size", "system", "metric", "gain", "ci_low", "ci_high", "verdict"],
                  "comparisons")
    figure = Figure(figsize=(7, 1 + 0.4 * len(comparisons)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(comparisons))[::-1]
    for verdict, rows in comparisons.assign(position=positions).groupby("verdict"):
        # Untested rows have no interval: draw the point alone.
        spread = np.nan_to_num([rows["gain"] - rows["ci_low"], rows["ci_high"] - rows["gain"]])
        axes.errorbar(rows["gain"], rows["position"], xerr=spread, fmt="o", capsize=3,
                      color=VERDICT_COLOURS.get(verdict, "black"), label=verdict)
    axes.axvline(0, color="black", linewidth=0.8)
    labels = [f"{row.system} | n={row.train_size}" for row in comparisons.itertuples()]
    axes.set_yticks(positions, labels)
    if len(comparisons):
        references = comparisons["baseline"].unique() if "baseline" in comparisons else ["baseline"]
        reference = reference or (references[0] if len(references) == 1 else "each system's reference")
        axes.set_xlabel(f"gain over {reference} in {metric_unit(comparisons['metric'].iloc[0])}")
    axes.legend(fontsize="small")
    return figure


def _heatmap(matrix, row_labels: Sequence[str], column_labels: Sequence[str], title: str, **limits) -> Figure:
    values = as_checked_array(matrix, "matrix", ndim=2)
    if values.shape != (len(row_labels), len(column_labels)):
        raise InputError(f"matrix has shape {values.shape} but there are {len(row_labels)} row labels "
                         f"and {len(column_labels)} column labels")
    figure = Figure(figsize=(1.5 + 0.6 * values.shape[1], 1.2 + 0.5 * values.shape[0]), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="viridis", aspect="auto", **limits)
    axes.set_xticks(range(values.shape[1]), [str(label) for label in column_labels], rotation=45, ha="right")
    axes.set_yticks(range(values.shape[0]), [str(label) for label in row_labels])
    if values.size <= _MAX_ANNOTATED_CELLS:
        for (row, column), value in np.ndenumerate(values):
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", color="white", fontsize="small")
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    return figure


def cka_heatmap(matrix, labels_a: Sequence[str], labels_b: Sequence[str]) -> Figure:
    """A layerwise_cka matrix [L_a, L_b] with its layer labels, on a fixed 0-1 colour scale."""
    return _heatmap(matrix, labels_a, labels_b, "Linear CKA", vmin=0.0, vmax=1.0)


def attention_weights_heatmap(weights, source_names: Sequence[str], layers: Sequence[int] | None = None) -> Figure:
    """Fusion attention weights [n_layers, n_sources]: which source each layer draws on. ``layers`` names the
    encoder layer of each row (0 = embeddings); by default rows are numbered from 1."""
    values = as_checked_array(weights, "weights", ndim=2)
    layers = list(layers) if layers is not None else list(range(1, len(values) + 1))
    return _heatmap(values, [f"layer {index}" for index in layers], source_names,
                    "Attention weight per source", vmin=0.0)


def transferability_vs_gain(table: pd.DataFrame, score_col: str, gain_col: str, label_col: str | None = None) -> Figure:
    """Observed gain against a transferability score, Kendall's tau in the title (from 3 points on: fewer cannot
    give one); points named by label_col."""
    check_columns(table, [score_col, gain_col, *([label_col] if label_col else [])], "table")
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(table[score_col], table[gain_col])
    if label_col:
        for label, x, y in zip(table[label_col], table[score_col], table[gain_col]):
            axes.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes.axhline(0, color="grey", linewidth=0.8)
    if len(table) >= 3:
        correlation = rank_correlation(table[score_col], table[gain_col])
        title = f"Kendall τ = {correlation['kendall_tau']:.2f} (p = {correlation['kendall_p']:.2g})"
    else:
        title = f"{len(table)} sources: too few for a rank correlation"
    axes.set(xlabel=score_col, ylabel=gain_col, title=title)
    return figure


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
    """Share of each label per task and split (a tables.label_counts table), one panel per task."""
    check_columns(counts, ["task", "split", "label", "share"], "counts")
    tasks = list(dict.fromkeys(counts["task"]))
    figure = Figure(figsize=(3.2 * len(tasks), 3.2), layout="constrained")
    for index, task in enumerate(tasks, start=1):
        axes = figure.add_subplot(1, len(tasks), index)
        table = counts[counts["task"] == task].pivot(index="split", columns="label", values="share")
        table = table.reindex([s for s in ("train", "validation", "test") if s in table.index])
        bottom = np.zeros(len(table))
        for label in table.columns:
            axes.bar(table.index, table[label], bottom=bottom, label=str(label))
            bottom += table[label].to_numpy()
        axes.set(title=str(task), ylabel="share of examples", ylim=(0, 1))
        axes.legend(fontsize="x-small", loc="lower right")
    return figure


def text_lengths(lengths: pd.DataFrame, clip: int = 80) -> Figure:
    """Distribution of text length in words per task (a tables.text_length_table), clipped at `clip`."""
    check_columns(lengths, ["task", "words"], "lengths")
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    bins = np.arange(0, clip + 2, 2)
    for task, rows in lengths.groupby("task", sort=False):
        axes.hist(np.minimum(rows["words"], clip), bins=bins, histtype="step", density=True, linewidth=1.5,
                  label=f"{task} (median {rows['words'].median():.0f})")
    axes.set(xlabel=f"words per text (clipped at {clip})", ylabel="density", title="Text lengths")
    axes.legend(fontsize="small")
    return figure


def transferability_bars(table: pd.DataFrame, scores: Sequence[str] = ("logme", "hscore", "leep", "nce")) -> Figure:
    """One panel per transferability score, one bar per source (NaN bars, e.g. LEEP of the base, left out)."""
    check_columns(table, ["source", *scores], "table")
    figure = Figure(figsize=(3 * len(scores), 3.2), layout="constrained")
    for index, score in enumerate(scores, start=1):
        axes = figure.add_subplot(1, len(scores), index)
        rows = table[table[score].notna()]
        axes.bar(rows["source"].astype(str), rows[score], color="tab:blue")
        axes.set(title=score)
        axes.tick_params(axis="x", rotation=45)
    return figure


def cka_profile(table: pd.DataFrame) -> Figure:
    """CKA between each layer of the base and the same layer after adaptation, one line per system."""
    check_columns(table, ["system", "layer", "cka"], "table")
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for system, rows in table.groupby("system"):
        axes.plot(rows["layer"], rows["cka"], marker="o", label=str(system))
    axes.set(xlabel="layer (0 = embeddings)", ylabel="linear CKA with the base encoder", ylim=(0, 1.05),
             title="How much each layer changed")
    axes.legend(fontsize="small")
    return figure


def transfer_matrix_heatmap(gains: pd.DataFrame, marks: pd.DataFrame | None = None) -> Figure:
    """Gain of transfer from each source (rows) to each target (columns), in accuracy points, on a diverging
    colour scale centred on 0 (blue: helps, red: hurts; readable with red-green colour blindness). ``marks``
    (same shape, strings) is written after each number; a cell without a value (a task and itself) is grey."""
    values = gains.to_numpy(dtype=np.float64)
    limit = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
    figure = Figure(figsize=(2.0 + 0.9 * values.shape[1], 1.6 + 0.6 * values.shape[0]), layout="constrained")
    axes = figure.add_subplot()
    axes.set_facecolor("lightgrey")
    image = axes.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(values.shape[1]), [str(c) for c in gains.columns])
    axes.set_yticks(range(values.shape[0]), [str(r) for r in gains.index])
    axes.set(xlabel="target", ylabel="source")
    for (row, column), value in np.ndenumerate(values):
        mark = "" if marks is None else str(marks.iloc[row, column])
        text = "—" if np.isnan(value) else f"{value:+.1f}{mark}"
        axes.text(column, row, text, ha="center", va="center", fontsize="small",
                  color="white" if abs(value) > 0.6 * limit else "black")
    figure.colorbar(image, ax=axes, label="gain (accuracy points)")
    return figure


def asymmetry_scatter(pairs: pd.DataFrame) -> Figure:
    """gain(A->B) against gain(B->A) for every pair of tasks, the diagonal (symmetric transfer) and Spearman's rho
    in the title (from 3 pairs on)."""
    check_columns(pairs, ["task_a", "task_b", "gain_a_to_b", "gain_b_to_a"], "pairs")
    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(pairs["gain_a_to_b"], pairs["gain_b_to_a"])
    for _, row in pairs.iterrows():
        axes.annotate(f"{row['task_a']}/{row['task_b']}", (row["gain_a_to_b"], row["gain_b_to_a"]),
                      textcoords="offset points", xytext=(4, 4), fontsize="small")
    values = pairs[["gain_a_to_b", "gain_b_to_a"]].to_numpy(dtype=np.float64)
    low, high = float(values.min()) - 0.5, float(values.max()) + 0.5
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8, label="symmetric")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.axvline(0, color="grey", linewidth=0.5)
    if len(pairs) >= 3:
        correlation = rank_correlation(pairs["gain_a_to_b"], pairs["gain_b_to_a"])
        title = (f"Spearman ρ = {correlation['spearman_rho']:.2f} (p = {correlation['spearman_p']:.2g}, "
                 f"{len(pairs)} pairs)")
    else:
        title = f"{len(pairs)} pairs: too few for a rank correlation"
    axes.set(xlabel="gain of A -> B (accuracy points)", ylabel="gain of B -> A (accuracy points)", title=title)
    axes.legend(loc="upper left")
    return figure
