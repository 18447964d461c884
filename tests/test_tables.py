"""Evaluation-notebook tables: learning-curve summaries, AULC, CKA, attention weights, source gains, task tables."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.report import findings
from fusionkit.report import tables as summaries
from fusionkit.errors import InputError
from fusionkit.study.store import ResultsStore
from fusionkit.evaluation.gains import aulc
from fusionkit.evaluation.metrics import score_all

# system -> (strategy, sources, {train_size: accuracies over seeds 0, 1, 2})
SYSTEMS = {
    "finetune": ("finetune", "", {32: [0.70, 0.72, 0.71], 128: [0.80, 0.83, 0.81]}),
    "linear_probe": ("linear_probe", "", {32: [0.60, 0.64, 0.62], 128: [0.66, 0.65, 0.70], 512: [0.75, 0.74, 0.76]}),
    "sequential (mr)": ("sequential", "mr", {128: [0.84, 0.85, 0.83]}),
    "representation attention": ("representation", "mr,subj", {128: [0.82, 0.80, 0.81]}),
}


def details(label, seed):
    if label in ("finetune", "sequential (mr)"):
        cka = [[1.0 - 0.1 * seed, 0.5], [0.4, 0.9 - 0.1 * seed]]
    else:
        cka = None
    arch = {"kind": label}
    if label == "representation attention":
        arch.update(attention_weights=[[0.2 + 0.1 * seed, 0.8 - 0.1 * seed]], attention_sources=["mr", "subj"],
                    layers=[6])
    return json.dumps({"cka_base_vs_adapted": cka, "arch": arch})


@pytest.fixture
def results():
    rows = []
    for label, (strategy, sources, curve) in SYSTEMS.items():
        for size, accuracies in curve.items():
            for seed, accuracy in enumerate(accuracies):
                rows.append({"target": "cr", "system": label, "strategy": strategy, "sources": sources, "seed": seed,
                             "train_size": size, "accuracy": accuracy, "ece": 0.01 * (seed + 1),
                             "nll": 0.5 + 0.1 * seed, "trainable_params": 1000 if strategy == "linear_probe" else 10**6,
                             "train_seconds": 2.0 + seed, "infer_ms_per_example": 0.1 * (seed + 1),
                             "details": details(label, seed)})
    return pd.DataFrame(rows)


def test_results_table_gives_seed_mean_t_interval_and_mean_costs(results):
    table = summaries.results_table(results)
    assert len(table) == sum(len(curve) for _, _, curve in SYSTEMS.values())
    row = table[(table.system == "finetune") & (table.train_size == 128)].iloc[0]
    scores = np.array([0.80, 0.83, 0.81])
    half = scipy.stats.t.ppf(0.975, 2) * scores.std(ddof=1) / np.sqrt(3)
    assert row["accuracy"] == pytest.approx(scores.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((scores.mean() - half, scores.mean() + half))
    assert row["n_seeds"] == 3
    assert row["ece"] == pytest.approx(0.02) and row["train_seconds"] == pytest.approx(3.0)


def test_results_table_sorts_by_size_then_best_first(results):
    at_128 = summaries.results_table(results).query("train_size == 128")
    assert list(at_128.system) == ["sequential (mr)", "finetune", "representation attention", "linear_probe"]


def test_results_table_names_a_missing_column(results):
    with pytest.raises(InputError, match="ece"):
        summaries.results_table(results.drop(columns=["ece"]))


def test_aulc_table_compares_systems_over_the_sizes_they_share_and_matches_transfer_aulc(results):
    table = summaries.aulc_table(results).set_index("system")
    assert set(table.index) == {"finetune", "linear_probe"}
    # finetune ran at 32 and 128 only: the probe's 512 would make its area incomparable
    assert table["sizes"].tolist() == ["32,128", "32,128"] and (table["note"] == "").all()
    means = [np.mean(SYSTEMS["linear_probe"][2][size]) for size in (32, 128)]
    assert table.loc["linear_probe", "aulc"] == pytest.approx(aulc([32, 128], means))
    assert table["aulc"].is_monotonic_decreasing


def test_aulc_table_leaves_out_a_system_sharing_fewer_than_two_sizes_and_says_so(results):
    extra = results[results.system == "finetune"].assign(system="lora", train_size=lambda f: f["train_size"] * 16)
    table = summaries.aulc_table(pd.concat([results, extra], ignore_index=True)).set_index("system")
    assert table.loc["lora", "sizes"] == "" and np.isnan(table.loc["lora", "aulc"])  # 512, 2048: shares only 512
    assert table.loc["lora", "note"] == ("left out: run at 512,2048, fewer than 2 of them among the sizes 32,128 "
                                         "shared by finetune, linear_probe")
    assert table.loc[["finetune", "linear_probe"], "sizes"].tolist() == ["32,128", "32,128"]
    assert table.index[-1] == "lora"


def test_by_system_makes_each_arm_a_system(results):
    relabelled = summaries.by_system(results)
    assert (relabelled["strategy"] == results["system"]).all() and (relabelled["sources"] == "").all()


def test_cka_by_layer_averages_the_diagonal_over_runs(results):
    table = summaries.cka_by_layer(results)
    assert set(table.system) == {"finetune", "sequential (mr)"}  # systems without a matrix have no rows
    finetune = table[table.system == "finetune"].set_index("layer")["cka"]
    assert finetune.to_dict() == pytest.approx({0: 0.9, 1: 0.8})


def test_cka_matrix_averages_runs_and_refuses_a_system_without_one(results):
    matrix = summaries.cka_matrix(results, "sequential (mr)")
    assert matrix == pytest.approx(np.array([[0.9, 0.5], [0.4, 0.8]]))
    with pytest.raises(InputError, match="linear_probe"):
        summaries.cka_matrix(results, "linear_probe")


def test_attention_weights_are_the_mean_over_attention_runs(results):
    weights, names, layers, label = summaries.mean_attention_weights(results)
    assert label == "representation attention" and names == ["mr", "subj"] and layers == [6]
    assert weights == pytest.approx(np.array([[0.3, 0.7]]))


def test_every_attention_system_has_its_own_mean_weights(results):
    adapter_fusion = results[results.system == "representation attention"].assign(system="adapter_fusion")
    adapter_fusion["details"] = [json.dumps({"arch": {"attention_weights": [[0.5, 0.5], [0.1 * seed, 1 - 0.1 * seed]],
                                                      "attention_sources": ["mr", "subj"], "layers": [1, 2]}})
                                 for seed in adapter_fusion["seed"]]
    both = pd.concat([results, adapter_fusion], ignore_index=True)
    assert summaries.attention_systems(both) == ["representation attention", "adapter_fusion"]
    weights, names, layers, label = summaries.mean_attention_weights(both, "adapter_fusion")
    assert label == "adapter_fusion" and layers == [1, 2]
    assert weights == pytest.approx(np.array([[0.5, 0.5], [0.1, 0.9]]))  # seeds 0, 1, 2
    assert summaries.mean_attention_weights(both)[3] == "representation attention"
    with pytest.raises(InputError, match="no run of finetune with attention weights"):
        summaries.mean_attention_weights(both, "finetune")


def test_notebook_4_saves_one_attention_figure_per_attention_system(results):
    from fusionkit.report.findings import save_attention_figures

    class Saved:
        def __init__(self):
            self.names = []

        def save(self, figure, name, caption):
            self.names.append((name, caption, len(figure.axes[0].images)))

    second = results[results.system == "representation attention"].assign(system="adapter_fusion")
    run = Saved()
    assert save_attention_figures(run, pd.concat([results, second], ignore_index=True)) == [
        "representation attention", "adapter_fusion"]
    assert [(name, caption.split(":")[0]) for name, caption, _ in run.names] == [
        ("04_attention_weights", "representation attention"), ("04_attention_weights_2", "adapter_fusion")]
    assert all(images == 1 for *_, images in run.names)  # each a heatmap
    assert save_attention_figures(Saved(), results[results.system == "finetune"]) == []


def test_attention_weights_without_attention_runs_is_an_error(results):
    with pytest.raises(InputError, match="attention"):
        summaries.mean_attention_weights(results[results.system != "representation attention"])


def test_source_gains_joins_single_source_gains_to_transferability():
    comparisons = pd.DataFrame({
        "strategy": ["sequential", "sequential", "sequential", "multitask"],
        "sources": ["mr", "subj", "mr,subj", "mr"],
        "gain": [1.5, -2.0, 9.0, 9.0], "ci_low": [0.5, -3.0, 0, 0], "ci_high": [2.5, -1.0, 0, 0],
        "verdict": ["helps", "hurts (negative transfer)", "x", "x"]})
    transferability = pd.DataFrame({"source": ["mr", "subj", "trec"], "logme": [0.3, 0.1, 0.2]})
    table = summaries.source_gains(comparisons, transferability).set_index("source")
    assert list(table.index) == ["mr", "subj"]
    assert table.loc["mr", "gain"] == 1.5 and table.loc["subj", "logme"] == 0.1
    assert table.loc["subj", "verdict"] == "hurts (negative transfer)"


# ---------------------------------------------------------------- task tables

def test_label_counts_add_up_to_each_split(toy_task):
    counts = summaries.label_counts([toy_task])
    assert set(counts.label) == {"neg", "pos"}
    for split, data in toy_task.splits.items():
        part = counts[counts.split == split]
        assert part["count"].sum() == len(data) and part["share"].sum() == pytest.approx(1.0)


def test_text_length_table_has_one_row_per_text(toy_task):
    lengths = summaries.text_length_table([toy_task])
    assert len(lengths) == len(toy_task.train) and (lengths.words == 5).all()  # toy texts have 5 words
    assert len(summaries.text_length_table([toy_task], split="test")) == len(toy_task.test)


def test_task_overview_and_dropped_rows(tmp_path, toy_task, toy_csv):
    from fusionkit import load_task_from_files

    path = toy_csv(tmp_path / "messy.csv", 40, seed=2)
    path.write_text(path.read_text() + ",pos\nno label here,\n")  # file lines 42 and 43
    messy = load_task_from_files(path, name="messy")
    overview = summaries.task_overview([toy_task, messy]).set_index("task")
    assert overview.loc["toy", ["train", "validation", "test"]].sum() == 120
    assert overview.loc["messy", "labels"] == "neg, pos" and overview.loc["messy", "dropped_rows"] == 2
    assert overview.loc["toy", "dropped_rows"] == 0
    dropped = summaries.dropped_rows_table([toy_task, messy])
    assert set(zip(dropped.task, dropped.file, dropped.reason)) == {
        ("messy", "messy.csv", "missing text"), ("messy", "messy.csv", "missing label")}
    lines = path.read_text().splitlines()
    for line, reason in zip(dropped.line, dropped.reason):
        assert lines[line - 1] == (",pos" if reason == "missing text" else "no label here,")


def test_dropped_rows_table_is_empty_but_well_formed_without_drops(toy_task):
    assert list(summaries.dropped_rows_table([toy_task]).columns) == ["task", "file", "line", "reason"]
    assert summaries.dropped_rows_table([toy_task]).empty


# ---------------------------------------------------------------- predictions from a results store

def stored(tmp_path, runs):
    store = ResultsStore(tmp_path / "results")
    for i, (label, seed, y) in enumerate(runs):
        probs = np.full((len(y), 2), 0.5)
        probs[:, 0] += 0.01 * i
        probs[:, 1] -= 0.01 * i
        store.put(f"run{i}", {"system": label, "seed": seed}, score_all(y, probs), {}, y, probs)
    return store, store.to_frame()


def test_predictions_by_system_returns_each_system_of_one_seed(tmp_path):
    y = np.array([0, 1, 1, 0])
    store, frame = stored(tmp_path, [("a", 0, y), ("b", 0, y), ("a", 1, y)])
    labels, probs = summaries.predictions_by_system(store, frame, seed=0)
    assert np.array_equal(labels, y) and set(probs) == {"a", "b"}
    assert probs["b"][0] == pytest.approx([0.51, 0.49])
    with pytest.raises(InputError, match="seed 7"):
        summaries.predictions_by_system(store, frame, seed=7)


def test_predictions_by_system_refuses_runs_on_different_test_sets(tmp_path):
    store, frame = stored(tmp_path, [("a", 0, np.array([0, 1, 1])), ("b", 0, np.array([1, 1, 0]))])
    with pytest.raises(InputError, match="different test set"):
        summaries.predictions_by_system(store, frame, seed=0)


def test_curve_runs_keeps_only_systems_run_at_several_sizes(results):
    kept = summaries.curve_runs(results)
    assert set(kept["system"]) == {label for label, sizes in results.groupby("system")["train_size"].nunique().items()
                                  if sizes >= 2}
    assert kept["train_size"].nunique() >= 2


# ---------------------------------------------------------------- choices the evaluation notebook makes

def test_reliability_diagram_shows_the_baseline_and_the_most_accurate_systems(results, monkeypatch):
    at_128 = results[results.train_size == 128]
    assert findings.reliability_systems(at_128) == ["finetune", "sequential (mr)", "representation attention",
                                                   "linear_probe"]
    monkeypatch.setattr(findings, "MAX_RELIABILITY_SYSTEMS", 2)
    assert findings.reliability_systems(at_128) == ["finetune", "sequential (mr)"]


def test_cka_matrix_is_drawn_for_the_best_system_with_an_encoder_of_its_own(results):
    assert findings.cka_heatmap_system(results[results.train_size == 128]) == "sequential (mr)"
    assert findings.cka_heatmap_system(results[results.system == "linear_probe"]) is None


def test_ranking_across_targets_needs_two_targets_and_three_systems(results):
    assert summaries.ranking_across_targets(results) is None
    other = results.assign(target="mr", accuracy=results.accuracy[::-1].to_numpy())
    ranking = summaries.ranking_across_targets(pd.concat([results, other]))
    assert set(ranking.avg_ranks.index) == set(SYSTEMS) and ranking.n_datasets == 2
