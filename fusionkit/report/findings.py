"""What the evaluation notebook states: every system judged against fine-tuning, and the verdicts page text.

The notebook shows these tables and figures; the logic lives here so that tests reach it and nothing in a
notebook is tied to one study (its sources, its systems, its sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fusionkit.evaluation.gains import EQUIVALENT, HELPS, INCONCLUSIVE, negative_transfer
from fusionkit.evaluation.transferability import rank_correlation
from fusionkit.evaluation.verdicts import (BASELINE_VERDICTS, compare_pairs, methods_header, system_name,
                                          verdict_sentences)
from fusionkit.report import plots, tables
from fusionkit.report.build import write_verdicts
from fusionkit.report.notebook import NotebookRun
from fusionkit.strategies.experts import EXPERT_TRAINERS
from fusionkit.evaluation.sequential import SeedDesign
from fusionkit.study.design import primary_comparisons, role_pairs
from fusionkit.study.source_scores import source_skill_references, study_transferability

BASELINE = "finetune"
METRIC = "accuracy"
TRANSFERABILITY_SCORES = ("logme", "hscore", "leep", "nce", "textemb")
MAX_RELIABILITY_SYSTEMS = 6
FUSION, BASELINE_ROLE = "fusion", "baseline"
EXPERT_STRATEGIES = tuple(trainer.name for trainer in EXPERT_TRAINERS.values())


def study_results(run: NotebookRun) -> pd.DataFrame:
    """Every run of the report's two parts (baselines and fusion), read from the store (run if missing), each
    flagged failed or not (``tables.flag_failed_runs``, the rule and count printed); written to results.csv, and
    every configuration tried to tuning.csv."""
    parts = [run.run_study(part, progress=False) for part in ("baselines", "fusion")]
    tuning = pd.concat([part.attrs.pop("tuning") for part in parts], ignore_index=True)
    results = pd.concat(parts, ignore_index=True)  # (pandas compares the parts' attrs: tables there would fail)
    rates = majority_rates([run.study("fusion")])
    results = tables.flag_failed_runs(results, rates)
    print(tables.failed_runs_sentence(results, rates))
    results.attrs = {"tuning": tuning}
    run.write_table(results.drop(columns=["details"]), "results")
    run.write_table(results.attrs["tuning"], "tuning")
    return results


def majority_rates(configs) -> dict[str, float]:
    """Each study's target -> the share of its most frequent label in the validation split the study uses (what
    a run that learned nothing scores there: ``tables.flag_failed_runs``)."""
    rates = {}
    for config in configs:
        validation = config.task(config.target).capped("validation", config.validation_cap).validation
        labels = np.asarray(validation["label"][:])
        rates[config.target] = float(np.bincount(labels).max() / len(labels))
    return rates


def at_fusion_size(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``results`` at the study's fusion size (what the headline, cost and CKA figures compare)."""
    return results[results["train_size"] == run.parameters["fusion_size"]]


def main_systems(results: pd.DataFrame) -> pd.DataFrame:
    """The runs of the baselines and fusion systems, without their controls and ablations (for figures); says
    how many runs and systems of each kind the study has."""
    main = results[results["role"].isin([FUSION, BASELINE_ROLE])].reset_index(drop=True)
    print(f"{len(results)} runs of {results.system.nunique()} systems: {main.system.nunique()} tuned baselines and "
          f"fusion systems, {results.system.nunique() - main.system.nunique()} controls and ablations; seeds "
          f"{sorted(results.seed.unique().tolist())}")
    return main


def summary_table(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """``tables.results_table`` of every system and size with its role, written to summary.csv."""
    summary = tables.results_table(results).merge(results[["system", "role"]].drop_duplicates("system"), on="system")
    run.write_table(summary, "summary")
    return summary


@dataclass
class Comparisons:
    """Every comparison the report makes, each a ``verdicts.compare_pairs`` table, a family of its own (intervals
    simultaneous over its rows, and over the looks when seeds came in stages).

    ``knowledge`` is the verdict: each fusion system against its matched control across seeds. The others
    qualify it: ``on_test_set`` (the same pairs over test examples: these models on these sentences, never a
    verdict), ``tuned_control`` (against the matched control's procedure tuned on its own with the same budget: is
    fusion better than the best the study could do without the knowledge?),
    ``other_controls`` (e.g. the shuffled-label source), ``against_best`` (the best target-only
    baseline, chosen on validation: should I use it at all?), ``leave_one_out`` (each source's contribution)
    and ``baselines`` (target-only baselines against finetune).
    """

    knowledge: pd.DataFrame
    on_test_set: pd.DataFrame
    tuned_control: pd.DataFrame
    other_controls: pd.DataFrame
    against_best: pd.DataFrame
    leave_one_out: pd.DataFrame
    baselines: pd.DataFrame

    TITLES = {"knowledge": "Does the knowledge help? Each fusion system against its matched control, across seeds "
                           "(the verdict)",
              "tuned_control": "Better than the best without it? Each fusion system against its tuned control (the "
                               "matched control's procedure tuned on its own, same budget), across seeds",
              "other_controls": "More training or knowledge? Against the other controls, across seeds",
              "against_best": "Should I use it at all? Against the best target-only baseline (chosen on "
                              "validation), across seeds",
              "leave_one_out": "Leave one source out: the system with all its sources against the system without "
                               "one, across seeds (a positive gain is that source's contribution)",
              "on_test_set": "On this test set (secondary): against the matched control, over test examples",
              "baselines": "Target-only baselines against finetune, across seeds"}

    def show(self, which: str) -> pd.DataFrame:
        """Print the methods paragraph of one table and return its main columns, for a notebook to display."""
        table = getattr(self, which)
        if table.empty:
            print(f"{which}: no such comparison in this study")
            return table
        print(methods_header(table))
        columns = ["system", "baseline", "train_size", "gain", "ci_low", "ci_high", "p_adjusted", "verdict"]
        return table[columns + [c for c in ("detectable_effect", "seeds_needed") if c in table]]

    def sections(self) -> list[tuple[str, str, list[str]]]:
        return [(title, methods_header(getattr(self, name)), verdict_sentences(getattr(self, name)))
                for name, title in self.TITLES.items() if not getattr(self, name).empty]

    def negative_transfer(self) -> pd.DataFrame:
        """The fusion systems significantly worse than their matched control (the verdict's test and rule)."""
        return negative_transfer(self.knowledge)[["system", "baseline", "train_size", "gain", "ci_low", "ci_high",
                                                 "p_adjusted"]]


def best_baseline(results: pd.DataFrame, train_size: int) -> str | None:
    """The target-only system with the best mean *validation* accuracy at ``train_size`` (test data never chooses)."""
    at_size = results[(results["role"] == BASELINE_ROLE) & (results["train_size"] == train_size)]
    return None if at_size.empty else str(at_size.groupby("system")["val_accuracy"].mean().idxmax())


def compare_systems(run: NotebookRun, results: pd.DataFrame) -> Comparisons:
    """Every comparison of the report (see ``Comparisons``), each written to comparisons_<name>.csv."""
    parameters = run.parameters
    design = SeedDesign.from_parameter(parameters["seeds"])
    rule = dict(metric=METRIC, alpha=parameters["alpha"], min_effect=parameters["min_effect"])
    fusion_systems = results.loc[results["role"] == FUSION, "system"].unique()
    best = best_baseline(results, parameters["fusion_size"])
    baselines = [(system, BASELINE) for system in results.loc[results["role"] == BASELINE_ROLE, "system"].unique()
                 if system != BASELINE and BASELINE in set(results["system"])]
    matched = role_pairs(results, "control", primary=True)
    example_rule = {**rule}
    rule["design"] = design
    comparisons = Comparisons(
        knowledge=primary_comparisons(results, parameters["alpha"], parameters["min_effect"], design, METRIC),
        on_test_set=compare_pairs(results, matched, predictions=run.store.predictions, **example_rule),
        tuned_control=compare_pairs(results, role_pairs(results, "control", tuned=True), **rule),
        other_controls=compare_pairs(results, role_pairs(results, "control", primary=False, tuned=False), **rule),
        # against a baseline of another kind, a loss is "worse", not negative transfer (that is against the control)
        against_best=compare_pairs(results, [(s, best) for s in fusion_systems] if best else [],
                                   words=BASELINE_VERDICTS, **rule),
        leave_one_out=compare_pairs(results, role_pairs(results, "ablation"), **rule),
        baselines=compare_pairs(results, baselines, words=BASELINE_VERDICTS, **rule))
    for name in Comparisons.TITLES:
        run.write_table(getattr(comparisons, name), f"comparisons_{name}")
    return comparisons


def verdict_table(run: NotebookRun, results: pd.DataFrame, comparisons: Comparisons) -> pd.DataFrame:
    """One row per fusion system: the verdict against its matched control (gain, simultaneous interval, adjusted p, the
    smallest effect the seeds could detect and the seeds the observed gain needs), the same gain on this test
    set, the gain over the best target-only baseline, and the quality of the experts it used; verdict_table.csv."""
    def columns(table: pd.DataFrame, prefix: str, keep=("gain", "ci_low", "ci_high", "p_adjusted", "verdict")):
        return table[["system", "train_size", *keep]].rename(columns={c: f"{prefix}{c}" for c in keep})

    knowledge = comparisons.knowledge
    table = knowledge[["system", "train_size", "baseline", "gain", "ci_low", "ci_high", "p_adjusted", "verdict",
                       "look", "n_fused", "detectable_effect", "seeds_needed"]].rename(
        columns={"baseline": "control", "n_fused": "seeds"})
    for name, prefix in (("on_test_set", "test_set_"), ("tuned_control", "vs_tuned_"), ("against_best", "vs_best_")):
        other = getattr(comparisons, name)
        if not other.empty:
            extra = columns(other, prefix)
            if name == "against_best":
                extra[f"{prefix}baseline"] = other["baseline"].to_numpy()
            table = table.merge(extra, on=["system", "train_size"], how="left")
    if "vs_tuned_verdict" in table:
        table["reading"] = [both_controls_reading(matched, tuned)
                            for matched, tuned in zip(table["verdict"], table["vs_tuned_verdict"])]
    table = table.merge(tables.expert_quality(results), on="system", how="left")
    run.write_table(table, "verdict_table")
    return table


def both_controls_reading(matched: str, tuned) -> str:
    """What the verdicts against the matched and the tuned control say together, in words."""
    if not isinstance(tuned, str):
        return "no tuned control"
    if matched == HELPS and tuned == HELPS:
        return "helps against both controls"
    if matched == HELPS:
        return (f"helps against its matched control only ({tuned} against the tuned control): the gain may come "
                f"from a configuration the control's own tuning would not choose")
    if tuned == HELPS:
        return f"helps against the tuned control, {matched} against the matched control"
    return f"{matched} against the matched control, {tuned} against the tuned control"


def variance_split(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """Where each verdict's spread comes from (``tables.variance_split_table``), written to variance_split.csv with
    one sentence per fusion system printed; says so when the study ran no seed x data-seed grid."""
    table = tables.variance_split_table(results)
    run.write_table(table, "variance_split")
    print("\n".join(variance_sentences(table)) or "no seed x data-seed grid in this study (the variance_split "
                                                   "parameter): the spread is not split")
    return table


def variance_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per row of ``tables.variance_split_table``."""
    sentences = []
    for row in table.itertuples():
        total = row.data + row.seed + row.interaction
        head = f"{row.system} at n={row.train_size}"
        if not total > 0:
            sentences.append(f"{head}: its gain over its matched control is the same on every pair of the "
                             f"{row.data_seeds} x {row.seeds} grid, so there is no spread to split")
            continue
        sentences.append(f"{head}: of the variance of its gain over its matched control ({total:.2f} squared points "
                         f"over a {row.data_seeds} x {row.seeds} grid), {row.share_data:.0%} comes from which "
                         f"training examples are drawn, {row.share_seed:.0%} from the seed (initialisation, order, "
                         f"experts) and {row.share_interaction:.0%} from their interaction")
    return sentences


def expert_geometry(run: NotebookRun) -> pd.DataFrame | None:
    """The study's task experts (first seed) by the cosine similarity of their task vectors, overall (returned)
    and per layer, with TIES's sign-conflict rate (``source_scores.expert_geometry``); task_vector_cosines.csv and
    task_vector_layers.csv. None (said why) with fewer than 2 task experts."""
    from fusionkit.errors import InputError
    from fusionkit.study.source_scores import expert_geometry as geometry

    try:
        cosines, by_layer, conflicts = geometry(run.study("fusion"))
    except InputError as error:
        print(f"no task-vector geometry: {error}")
        return None
    run.write_table(cosines.rename_axis("source").reset_index(), "task_vector_cosines")
    run.write_table(by_layer, "task_vector_layers")
    print(f"TIES sign conflicts: {conflicts:.1%} of the weights that two or more experts keep after trimming each "
          f"to its top 20% disagree in sign")
    return cosines


SHOWN_FLIPS = 10  # per system and direction: the most consistent fixed and broken test examples, with their text


def fixes_and_breaks(run: NotebookRun, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """For each fusion system against its matched control, seed by seed (``evaluation.flips``): the test examples
    it fixes and breaks, McNemar's exact test per seed (secondary), and the examples fixed or broken on most seeds
    with their text, label, length and nearest source training text, the most consistent first (``SHOWN_FLIPS`` per
    direction); then the retrieval view: the share of fixes and breaks on test examples whose nearest source text
    is close (``flips.flips_near_source`` over the system's task sources). Written to flips.csv,
    flipped_examples.csv and fixes_near_source.csv; returns the three tables."""
    from fusionkit.evaluation.flips import flip_counts, flips_near_source
    from fusionkit.study.source_scores import source_text_index

    index = source_text_index(run.study("fusion"))
    target = index.target
    texts = list(target.test["text"][:])
    seed_rows, example_rows, near_rows = [], [], []
    for system, control in role_pairs(results, "control", primary=True):
        for size, runs in results[results["system"] == system].groupby("train_size"):
            controls = results[(results["system"] == control) & (results["train_size"] == size)]
            ids = runs.set_index("seed")["run_id"]
            control_ids = controls.set_index("seed")["run_id"]
            if "seed_free" in controls and controls["seed_free"].any():  # one run stands for every seed
                control_ids = pd.Series(control_ids.iloc[0], index=ids.index)
            seeds = sorted(set(ids.index) & set(control_ids.index))
            if not seeds:
                continue
            y = run.store.predictions(ids[seeds[0]])[0]
            per_seed, per_example = flip_counts(
                y, [run.store.predictions(control_ids[seed])[1].argmax(1) for seed in seeds],
                [run.store.predictions(ids[seed])[1].argmax(1) for seed in seeds])
            seed_rows.append(per_seed.assign(system=system, control=control, train_size=size,
                                             seed=[seeds[i] for i in per_seed["seed_index"]],
                                             consistent_fixes=int((per_example["consistent"] == "fixed").sum()),
                                             consistent_breaks=int((per_example["consistent"] == "broken").sum())))
            nearest = index.nearest(str(runs["sources"].iloc[0]).split(",") if runs["sources"].notna().any() else [])
            if nearest is not None:
                near_rows.append(flips_near_source(per_example, nearest["similarity"], len(seeds)).assign(
                    system=system, train_size=size, seeds=len(seeds)))
            for direction, column in (("fixed", "fixed_on"), ("broken", "broken_on")):
                shown = per_example[per_example[column] * 2 > len(seeds)].sort_values(
                    [column, "example"], ascending=[False, True]).head(SHOWN_FLIPS)
                example_rows += [{"system": system, "train_size": size, "direction": direction,
                                  "seeds": f"{row[column]} of {len(seeds)}",
                                  "label": target.label_names[int(row["label"])],
                                  "words": len(texts[row["example"]].split()), "text": texts[row["example"]],
                                  **({} if nearest is None else {
                                      "nearest_source": nearest["source"].iloc[row["example"]],
                                      "source_similarity": nearest["similarity"].iloc[row["example"]],
                                      "nearest_source_text": nearest["source_text"].iloc[row["example"]]})}
                                 for _, row in shown.iterrows()]
    columns = ["system", "control", "train_size", "seed", "fixes", "breaks", "net_points", "mcnemar_p",
               "consistent_fixes", "consistent_breaks"]
    per_seed = pd.concat(seed_rows, ignore_index=True)[columns] if seed_rows else pd.DataFrame(columns=columns)
    examples = pd.DataFrame(example_rows, columns=["system", "train_size", "direction", "seeds", "label", "words",
                                                   "text", "nearest_source", "source_similarity",
                                                   "nearest_source_text"])
    near_columns = ["system", "train_size", "seeds", "direction", "flips", "share_close", "lift", "examples",
                    "close_examples", "fisher_p", "close_similarity"]
    near = pd.concat(near_rows, ignore_index=True)[near_columns] if near_rows else pd.DataFrame(columns=near_columns)
    run.write_table(per_seed, "flips")
    run.write_table(examples, "flipped_examples")
    run.write_table(near, "fixes_near_source")
    return per_seed, examples, near


def fixes_near_source_sentences(table: pd.DataFrame, fusion_size: int) -> list[str]:
    """One sentence from fixes_near_source.csv at ``fusion_size``: for each fusion system, the share of its fixes
    and of its breaks that fall on the quarter of test examples closest to its sources' texts (a quarter expected
    by construction), and the smallest Fisher p over the systems, uncorrected. No sentence when nothing flipped."""
    def share(row: pd.Series) -> str:
        return f"{row['share_close']:.0%} of {int(row['flips'])}" if row["flips"] else "none of 0"

    at_size = table[table["train_size"] == fusion_size]
    parts, tests = [], []
    for system, rows in at_size.groupby("system", sort=False):
        row = rows.set_index("direction")
        fixed, broken = row.loc["fixed"], row.loc["broken"]
        if fixed["flips"] or broken["flips"]:
            parts.append(f"{system} {share(fixed)} fixes, {share(broken)} breaks")
            if pd.notna(fixed["fisher_p"]):
                tests.append((fixed["fisher_p"], system))
    if not parts:
        return []
    seeds = int(at_size["seeds"].max())
    close = at_size.loc[at_size["direction"] == "all test examples", "share_close"].mean()
    smallest = (f"; the smallest Fisher's exact p (examples fixed on most seeds against the rest, uncorrected) is "
                f"{min(tests)[0]:.2g}, for {min(tests)[1]}" if tests else "")
    return [f"share of each system's fixes and breaks (over {seeds} seeds) on the test examples whose nearest text "
            f"among its sources' training texts is in the closest quarter ({close:.0%} of the "
            f"test examples): " + "; ".join(parts) + smallest]


def save_attention_figures(run: NotebookRun, results: pd.DataFrame) -> list[str]:
    """Notebook 4's figure of mean attention weight per candidate and layer, one per attention system (pooled
    attention, AdapterFusion): ``04_attention_weights``, then ``04_attention_weights_2``...; returns the systems."""
    systems = tables.attention_systems(results)
    for index, system in enumerate(systems):
        weights, candidates, layers, _ = tables.mean_attention_weights(results, system)
        run.save(plots.attention_weights_heatmap(weights, candidates, layers),
                 "04_attention_weights" + (f"_{index + 1}" if index else ""),
                 f"{system}: mean attention weight per candidate and layer")
    if not systems:
        print("no attention fusion system in this study: no attention weights to show")
    return systems


def retention(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """What fusion cost the source skill (``tables.retention_table``), written to retention.csv; one sentence per
    fusion system printed (``retention_sentences``). Empty (and said why) when the study measures no retention."""
    config = run.study("fusion")
    seeds = sorted(int(seed) for seed in results.loc[results["role"] == FUSION, "seed"].unique())
    table = tables.retention_table(results, source_skill_references(config, seeds))
    run.write_table(table, "retention")
    print("\n".join(retention_sentences(table)) or "no retention measured in this study (the study parameter "
          "retention_examples is not set, or no run has an encoder of its own)")
    return table


def retention_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per fusion system of ``tables.retention_table``: its forgetting of each source against that
    source's expert, beside the base encoder's own gap to the expert (what a system that kept nothing of the source
    beyond the pretrained encoder would show)."""
    sentences = []
    for (system, size), rows in table[table["role"] == FUSION].groupby(["system", "train_size"], sort=False):
        parts = [f"{row.source} {row.forgetting:+.1f}" + ("" if np.isnan(row.ci_low) else
                                                          f" [{row.ci_low:+.1f}, {row.ci_high:+.1f}]")
                 + f" (base {100 * (row.expert - row.base):+.1f})" for row in rows.itertuples()]
        sentences.append(f"{system} (n={size}), forgetting in points against each source's expert over "
                         f"{rows['n_seeds'].min()} seeds: {', '.join(parts)}")
    return sentences


def reliability_systems(results: pd.DataFrame) -> list[str]:
    """The systems a reliability diagram shows: the baseline and the most accurate others (a readable few)."""
    ranked = results.groupby("system")["accuracy"].mean().sort_values(ascending=False).index.tolist()
    chosen = ([BASELINE] if BASELINE in ranked else []) + [s for s in ranked if s != BASELINE]
    return chosen[:MAX_RELIABILITY_SYSTEMS]


def save_learning_curves(run: NotebookRun, results: pd.DataFrame, name: str, caption: str):
    """Learning curves of the systems run at two or more train sizes; None (said why) when there are none."""
    curves = tables.curve_runs(results)
    if curves.empty:
        print("no system was run at two or more train sizes: no learning curve to draw")
        return None
    colors = plots.system_colors(results["system"])
    return run.save(plots.learning_curves(tables.by_system(curves), "accuracy", colors=colors), name, caption)


def learning_curves_and_aulc(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """Notebook 5's learning curves (``save_learning_curves``) and the area under each (``tables.aulc_table``)."""
    save_learning_curves(run, results, "05_learning_curves",
                         "accuracy against target train size for every system run at several sizes")
    return tables.aulc_table(results)


def save_gain_forest(run: NotebookRun, results: pd.DataFrame, comparisons: Comparisons):
    """The forest plot of every fusion system's gain over its matched control, with both intervals."""
    return run.save(plots.gain_forest(comparisons.knowledge, "its matched control", comparisons.on_test_set,
                                      plots.system_colors(results["system"])), "05_gains_vs_control",
                    "gain of each fusion system over its matched control in accuracy points: 95% t-interval over "
                    "seeds (filled, the verdict) and 95% interval over test examples (hollow, secondary); shaded: "
                    "within the declared minimum effect")


def save_reliability_diagram(run: NotebookRun, results: pd.DataFrame):
    """The reliability diagram of the ``reliability_systems`` on the first seed's test predictions."""
    chosen = results[results["system"].isin(reliability_systems(results))]
    seed = int(results["seed"].min())
    y_test, probs = tables.predictions_by_system(run.store, chosen, seed=seed)
    return run.save(plots.reliability_diagram(y_test, probs, colors=plots.system_colors(results["system"])),
                    "05_reliability",
                    f"reliability diagram on the target test set (seed {seed})")


def cost_table(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """What each system of ``results`` cost per run, its experts' (and teachers') training included
    (``tables.run_costs``, ``tables.cost_table``); written to cost.csv."""
    table = tables.cost_table(tables.run_costs(results, run.workdir))
    run.write_table(table, "cost")
    return table


def save_cost_figures(run: NotebookRun, results: pd.DataFrame) -> None:
    """Accuracy against trainable parameters and against training seconds (the run's and its experts'), every run
    of ``results``."""
    systems, colors = tables.by_system(tables.run_costs(results, run.workdir)), plots.system_colors(results["system"])
    run.save(plots.cost_scatter(systems, "accuracy", "trainable_params", colors), "05_accuracy_vs_params",
             "accuracy against trainable parameters (log scale), every run at the fusion size")
    run.save(plots.cost_scatter(systems, "accuracy", "train_seconds_with_experts", colors), "05_accuracy_vs_train_time",
             "accuracy against training seconds, every run at the fusion size, each with its experts' (and teachers') "
             "training seconds included")


def save_cka_figures(run: NotebookRun, results: pd.DataFrame):
    """The CKA of each base layer with the same layer after adaptation, per system, and the full matrix of the
    most accurate system that adapted an encoder (``save_cka_matrix``)."""
    run.save(plots.cka_profile(tables.cka_by_layer(results), plots.system_colors(results["system"])), "05_cka_by_layer",
             "CKA between each base layer and the same layer after adaptation")
    return save_cka_matrix(run, results)


def save_cka_matrix(run: NotebookRun, results: pd.DataFrame):
    """The base-vs-adapted CKA matrix of ``cka_heatmap_system``; None (said why) when no system adapted one."""
    system = cka_heatmap_system(results)
    if system is None:
        print("no system in these results adapted an encoder of its own: no CKA matrix to draw")
        return None
    matrix = tables.cka_matrix(results, system)
    layers = [f"L{i}" for i in range(len(matrix))]
    return run.save(plots.cka_heatmap(matrix, layers, layers, "the base encoder", "the adapted encoder",
                                      f"Linear CKA: base encoder against {system}"), "05_cka_matrix",
                    f"CKA of every base layer (rows) with every layer of {system} (columns)")


def save_critical_difference(run: NotebookRun):
    """The critical-difference diagram over every target in the results store; None (said why) with one target.
    The store knows runs by what they trained, not by a study's names: a system here is a strategy and its sources."""
    stored = run.store.to_frame()
    if "strategy" in stored:
        stored["system"] = [system_name(strategy, sources)
                            for strategy, sources in zip(stored["strategy"], stored["sources"])]
    ranking = tables.ranking_across_targets(stored) if "system" in stored else None
    if ranking is None:
        print("fewer than 2 targets (or 3 systems run on each) in the results store: no critical-difference "
              f"diagram (it ranks systems over targets)")
        return None
    significant = ranking.p_value < ranking.alpha
    return run.save(plots.critical_difference_diagram(ranking.avg_ranks, ranking.cd,
                                                      title=plots.ranking_title(ranking)), "05_critical_difference",
                    "average rank of each system over targets; " + (
                        "systems joined by a bar are not significantly different" if significant else
                        f"exploratory: the Friedman test is not significant (p={ranking.p_value:.2g}), so no "
                        f"difference is shown"))


def cka_heatmap_system(results: pd.DataFrame) -> str | None:
    """The most accurate system that adapted an encoder of its own (so has a CKA matrix), or None."""
    with_cka = tables.cka_by_layer(results)["system"].unique()
    ranked = results[results["system"].isin(with_cka)].groupby("system")["accuracy"].mean()
    return None if ranked.empty else str(ranked.idxmax())


def transferability_against_gain(run: NotebookRun, results: pd.DataFrame,
                                 comparisons: Comparisons) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Each source's transferability beside the observed gain of single-source transfer from it over its
    matched control, and the rank correlation of each score with that gain (None when the study has too few
    sources for one). With two or more sources, the figure of each estimator's ranking of the sources beside their
    ranking by observed gain is saved too."""
    fusion_size = run.parameters["fusion_size"]
    transferability = study_transferability(run.study("fusion"), fusion_size)
    systems = results[["system", "strategy", "sources"]].drop_duplicates("system")
    knowledge = comparisons.knowledge.merge(systems, on="system")
    gains = tables.source_gains(knowledge[knowledge["train_size"] == fusion_size], transferability)
    if len(gains) >= 2:
        run.save(plots.transferability_ranks(gains, TRANSFERABILITY_SCORES, gain="gain"), "05_transferability_vs_gain",
                 "rank each transferability estimator gave each source before fusion (1 = predicted most helpful, "
                 "raw score under it, Kendall's tau with the gain under its name) beside the source's rank by the "
                 "observed gain of sequential transfer from it over its matched control (accuracy points)")
    if len(gains) < 3:
        print(f"{len(gains)} single-source gain(s): a rank correlation needs at least 3, so none is computed")
        return gains, None
    correlations = pd.DataFrame({score: rank_correlation(gains[score], gains["gain"])
                                 for score in TRANSFERABILITY_SCORES}).T
    print("rank correlation of each score with the observed gain:", correlations.round(3), sep="\n")
    return gains, correlations


def geometry_beside_gains(run: NotebookRun, results: pd.DataFrame, comparisons: Comparisons) -> pd.DataFrame | None:
    """The task-vector cosines of notebook 3 (task_vector_cosines.csv) beside each source's sequential gain and its
    leave-one-out contribution to each merge (``tables.geometry_beside_gains``): geometry_and_gains.csv and the
    figure 05_geometry_and_gains. None (said why) when notebook 3 computed no geometry or no gain matches a source."""
    path = run.out_dir / "task_vector_cosines.csv"
    if not path.is_file():
        print("no task-vector geometry (notebook 3 needs two or more task experts)")
        return None
    cosines = pd.read_csv(path).set_index("source")
    fusion_size = run.parameters["fusion_size"]
    table = tables.geometry_beside_gains(cosines, comparisons.knowledge, comparisons.leave_one_out, results,
                                         fusion_size)
    if table.empty:
        print("no sequential gain or merge leave-one-out contribution per source in this study")
        return None
    run.write_table(table, "geometry_and_gains")
    drawn = table.assign(min_effect=run.parameters["min_effect"])
    run.save(plots.geometry_beside_gains(cosines, drawn), "05_geometry_and_gains",
             f"left: cosine similarity of the sources' task vectors (first seed's experts minus the base encoder); "
             f"right, on the same rows: the gain of sequential transfer from each source over its matched control "
             f"and each source's leave-one-out contribution to each merge, at n={fusion_size}, with the "
             f"simultaneous intervals their verdicts read (grey band: within the declared minimum effect)")
    return table


def protocol_notes(run: NotebookRun, results: pd.DataFrame) -> list[str]:
    """How the numbers were made, in words: the tuning, the seeds, the verdict rule, the validation split."""
    parameters = run.parameters
    design, validation_cap = SeedDesign.from_parameter(parameters["seeds"]), parameters.get("validation_cap")
    seeds = run.study("fusion").seeds
    tuned = results[results["role"].isin([FUSION, BASELINE_ROLE])]
    budget = parameters.get("tuning_budget", 1)
    staged = (f"Seeds in stages: every system ran seeds {seeds[:design.looks[0]]}; at the looks after "
              f"{', '.join(map(str, design.looks[:-1]))} seeds, the fusion systems whose verdict was decided (helps, "
              f"hurts or equivalent) stopped and the others, with their controls, went on, up to {design.max_seeds} "
              f"seeds (O'Brien-Fleming alpha spending over the looks, so stopping early costs no error rate). "
              if design.staged_design else "")
    notes = [f"Tuning: every baseline and fusion system ({tuned['system'].nunique()}) was given the same budget of "
             f"{budget} configuration(s), compared on seed {seeds[0]}'s target validation accuracy; the chosen one "
             f"ran for the study's seeds (tuning.csv lists every configuration). Controls and leave-one-out runs use "
             f"their fusion system's chosen configuration. Experts are retrained for every seed.",
             f"{staged}Verdict rule: the paired t-interval over seeds against the matched control, simultaneous at "
             f"{1 - parameters['alpha']:.0%} over the fusion systems (Bonferroni), read as 'helps' or 'hurts' when it "
             f"excludes 0 and the gain is at least {parameters['min_effect']:g} accuracy points, 'equivalent' when it "
             f"lies inside +/-{parameters['min_effect']:g} (declared before the study). The test over test examples "
             f"is shown as secondary and never changes a verdict."]
    if validation_cap:
        notes.append(f"Validation split capped to {validation_cap} examples (a speed knob): every choice and early "
                     f"stop above was made on that subset.")
    experts = tables.artefact_quality(results)
    experts = experts[(experts["strategy"].isin(EXPERT_STRATEGIES)) & (experts["task"] != run.target_name)]
    if len(experts):
        quality = experts.drop_duplicates(["task", "seed"]).groupby("task")["val_accuracy"].agg(["mean", "min", "max",
                                                                                                "count"])
        notes.append("Experts, by accuracy on their own source's validation split over the seeds (mean [range] x "
                     "experts): " + "; ".join(f"{task} {row['mean']:.3f} [{row['min']:.3f}-{row['max']:.3f}] "
                                              f"x{int(row['count'])}" for task, row in quality.iterrows()) + ".")
    return notes


def advice(verdicts: pd.DataFrame, costs: pd.DataFrame, results: pd.DataFrame, fusion_size: int,
           min_effect: float) -> list[str]:
    """What to use and what to try next, from the report's own tables only (verdict_table.csv, cost.csv and
    results.csv, as written): the fusion system that helps against its matched control (the most accurate on
    *validation* among those that do, preferring one that also helps against its tuned control), with its gain, its
    interval and its cost beside finetune's; when none helps, the target-only baseline chosen on validation; then,
    for the systems the study could not decide, the seeds the declared minimum effect needs (planned from the seed
    spread, ``verdicts.compare_pairs``)."""
    cost = costs[costs["train_size"] == fusion_size].set_index("system") if len(costs) else pd.DataFrame()
    validation = results[results["train_size"] == fusion_size].groupby("system")["val_accuracy"].mean()

    def price(system: str) -> str:
        if system not in cost.index:
            return ""
        row = cost.loc[system]
        text = (f"{_seconds(row['train_seconds_with_experts'])} s of training per run with its experts, "
                f"{row['infer_ms_per_example']:.1f} ms per test example with {int(row['encoders_at_inference'])} "
                f"encoder(s) at inference")
        if BASELINE in cost.index and system != BASELINE:
            reference = cost.loc[BASELINE]
            text += (f" (finetune: {_seconds(reference['train_seconds_with_experts'])} s, "
                     f"{reference['infer_ms_per_example']:.1f} ms)")
        return text

    at_size = verdicts[verdicts["train_size"] == fusion_size]
    helping = at_size[at_size["verdict"] == HELPS].copy()
    sentences = []
    if len(helping):
        helping["validation"] = helping["system"].map(validation)
        if "vs_tuned_verdict" in helping:
            helping["both"] = helping["vs_tuned_verdict"] == HELPS
            helping = helping.sort_values(["both", "validation"], ascending=False)
        else:
            helping = helping.sort_values("validation", ascending=False)
        best = helping.iloc[0]
        tuned = (f"; against its tuned control: {best['vs_tuned_verdict']}" if "vs_tuned_verdict" in best
                 and isinstance(best["vs_tuned_verdict"], str) else "")
        sentences.append(f"Use {best['system']}: it helps against its matched control by {best['gain']:+.1f} points "
                         f"[{best['ci_low']:+.1f}, {best['ci_high']:+.1f}], the interval the verdict read{tuned}. It "
                         f"costs {price(best['system'])}.")
    else:
        baseline = best_baseline(results, fusion_size)
        if baseline is not None:
            sentences.append(f"Nothing fused helps at this study's error rate: use {baseline}, the target-only "
                             f"baseline most accurate on validation (mean validation accuracy "
                             f"{validation.get(baseline, np.nan):.3f}); it costs {price(baseline)}.")
    equivalent = at_size[at_size["verdict"] == EQUIVALENT]["system"].tolist()
    if equivalent:
        sentences.append(f"Equivalent to their matched controls (within +/-{min_effect:g} points): "
                         f"{', '.join(equivalent)}; their knowledge is not worth its cost here.")
    undecided = at_size[at_size["verdict"] == INCONCLUSIVE]
    planned = undecided[undecided["seeds_needed"].notna()]
    if len(undecided):
        sentence = f"Undecided: {', '.join(undecided['system'])}."
        if len(planned):
            cheapest = planned.sort_values("seeds_needed").iloc[0]
            sentence += (f" To decide a true effect of the minimum {min_effect:g} points, the design needs about "
                         f"{cheapest['seeds_needed']:.0f} seeds (for {cheapest['system']}; "
                         f"{int(cheapest['seeds'])} ran); seeds in stages (`seeds: {{first, max, looks}}`) spend "
                         f"them only where needed.")
        sentences.append(sentence)
    return sentences


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def write_findings(run: NotebookRun, results: pd.DataFrame, summary: pd.DataFrame, comparisons: Comparisons,
                   correlations: pd.DataFrame | None, n_sources_scored: int) -> list[str]:
    """Write verdicts.json (the question, every comparison's verdicts, the notes), print them, return the notes."""
    parameters, fusion_size = run.parameters, run.parameters["fusion_size"]
    negative = comparisons.negative_transfer()
    at_size = summary[(summary.train_size == fusion_size) & summary.role.isin([FUSION, BASELINE_ROLE])]
    best = at_size.iloc[0]
    helps = comparisons.knowledge[comparisons.knowledge["verdict"] == HELPS]
    same = comparisons.knowledge[comparisons.knowledge["verdict"] == EQUIVALENT]
    notes = [f"Knowledge that helps (against the matched control, across seeds): "
             f"{', '.join(helps.system) if len(helps) else 'none shown'}.",
             f"Equivalent to the matched control (the whole interval within +/-{parameters['min_effect']:g} points): "
             f"{', '.join(same.system) if len(same) else 'none shown'}.",
             f"Negative transfer (worse than the matched control, same test and rule): "
             f"{', '.join(sorted(set(negative.system))) if len(negative) else 'none detected'}.",
             f"Most accurate system at n={fusion_size} on the test set: {best.system}, accuracy {best.accuracy:.3f} "
             + ("(one deterministic run)." if best.get("seed_free", False) else
                f"[{best.ci_low:.3f}, {best.ci_high:.3f}] over {best.n_seeds} seeds."),
             *protocol_notes(run, results),
             *(f"Where the spread comes from (Bouthillier et al. 2021): {sentence}."
               for sentence in variance_sentences(tables.variance_split_table(results))),
             *(f"Where fusion's fixes fall (retrieval view): {sentence}."
               for sentence in (fixes_near_source_sentences(pd.read_csv(run.out_dir / "fixes_near_source.csv"),
                                                            fusion_size)
                                if (run.out_dir / "fixes_near_source.csv").is_file() else [])),
             *(f"What fusion kept of the source skill (retention probe): {sentence}."
               for sentence in (retention_sentences(pd.read_csv(run.out_dir / "retention.csv"))
                                if (run.out_dir / "retention.csv").is_file() else []))]
    if correlations is None:
        notes.append(f"Transferability vs observed gain: not computed ({n_sources_scored} single-source gains; a "
                     f"rank correlation needs at least 3).")
    else:
        notes.append(f"Transferability vs observed gain (Kendall tau over {n_sources_scored} sources): " + ", ".join(
            f"{s} {correlations.loc[s, 'kendall_tau']:+.2f} (p={correlations.loc[s, 'kendall_p']:.2g})"
            for s in correlations.index) + ".")
    question = (f"does fusing knowledge from {', '.join(run.source_names)} into {parameters['encoder']} help on "
                f"{run.target_name}, and which way? (profile {run.profile}, seeds {parameters['seeds']})")
    written = {name: pd.read_csv(run.out_dir / f"{name}.csv") for name in ("verdict_table", "cost")
               if (run.out_dir / f"{name}.csv").is_file()}
    sections = comparisons.sections()
    if "verdict_table" in written:
        words = advice(written["verdict_table"], written.get("cost", pd.DataFrame()), results, fusion_size,
                       parameters["min_effect"])
        sections = [("Advice", "What to use, at what cost, and what to try next: read from verdict_table.csv, "
                               "cost.csv and results.csv.", words), *sections]
    write_verdicts(run.out_dir, question, sections, notes)
    for title, _, sentences in sections:
        print(title, *sentences, sep="\n", end="\n\n")
    print(*notes, sep="\n")
    return notes
