"""What the evaluation notebook states: every system judged against fine-tuning, and the verdicts page text.

The notebook shows these tables and figures; the logic lives here so that tests reach it and nothing in a
notebook is tied to one study (its sources, its systems, its sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fusionkit.evaluation.gains import negative_transfer
from fusionkit.evaluation.transferability import rank_correlation
from fusionkit.evaluation.verdicts import compare_to_baseline, methods_header, verdict_sentences
from fusionkit.report import plots, tables
from fusionkit.report.build import write_verdicts
from fusionkit.report.notebook import NotebookRun
from fusionkit.study.source_scores import study_transferability

BASELINE = "finetune"
TEST_SETTINGS = dict(metric="accuracy", alpha=0.05, min_effect=0.0, distinguish_by=["system"], name_column="system")
TRANSFERABILITY_SCORES = ("logme", "hscore", "leep", "nce")
MAX_RELIABILITY_SYSTEMS = 6


def study_results(run: NotebookRun) -> pd.DataFrame:
    """Every run of the report's two parts (baselines and fusion), read from the store (run if missing);
    written to results.csv."""
    results = pd.concat([run.run_study(part, progress=False) for part in ("baselines", "fusion")],
                        ignore_index=True)
    run.write_table(results.drop(columns=["details"]), "results")
    return results


def summary_table(run: NotebookRun, results: pd.DataFrame) -> pd.DataFrame:
    """``tables.results_table`` of every system and size, written to summary.csv."""
    summary = tables.results_table(results)
    run.write_table(summary, "summary")
    return summary


@dataclass
class Comparisons:
    """Each system against the baseline at the same train size, judged across seeds and across test examples."""

    across_seeds: pd.DataFrame
    across_examples: pd.DataFrame

    def show(self, which: str) -> pd.DataFrame:
        """Print the methods paragraph of one table ("across_seeds" or "across_examples") and return its
        main columns, for a notebook to display."""
        table = getattr(self, which)
        print(methods_header(table))
        return table[["system", "train_size", "gain", "ci_low", "ci_high", "p_value", "p_holm", "verdict"]]

    def sections(self) -> list[tuple[str, str, list[str]]]:
        return [("Across test examples (test-set noise)", methods_header(self.across_examples),
                 verdict_sentences(self.across_examples)),
                ("Across seeds (retraining noise)", methods_header(self.across_seeds),
                 verdict_sentences(self.across_seeds))]

    def negative_transfer(self) -> pd.DataFrame:
        """The systems judged significantly worse than the baseline, by either test."""
        negative = pd.concat([negative_transfer(self.across_seeds).assign(judged="across seeds"),
                              negative_transfer(self.across_examples).assign(judged="across examples")],
                             ignore_index=True)
        return negative[["system", "train_size", "judged", "gain", "ci_low", "ci_high", "p_holm"]]


def compare_systems(run: NotebookRun, results: pd.DataFrame) -> Comparisons:
    """Both comparison tables, written to comparisons.csv and comparisons_per_example.csv."""
    comparable = tables.comparable_runs(results, BASELINE)
    comparisons = Comparisons(compare_to_baseline(comparable, BASELINE, **TEST_SETTINGS),
                              compare_to_baseline(comparable, BASELINE, predictions=run.store.predictions,
                                                  **TEST_SETTINGS))
    run.write_table(comparisons.across_seeds, "comparisons")
    run.write_table(comparisons.across_examples, "comparisons_per_example")
    return comparisons


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
    return run.save(plots.learning_curves(tables.by_system(curves), "accuracy"), name, caption)


def save_reliability_diagram(run: NotebookRun, results: pd.DataFrame):
    """The reliability diagram of the ``reliability_systems`` on the first seed's test predictions."""
    chosen = results[results["system"].isin(reliability_systems(results))]
    seed = int(results["seed"].min())
    y_test, probs = tables.predictions_by_system(run.store, chosen, seed=seed)
    return run.save(plots.reliability_diagram(y_test, probs), "05_reliability",
                    f"reliability diagram on the target test set (seed {seed})")


def save_cka_matrix(run: NotebookRun, results: pd.DataFrame):
    """The base-vs-adapted CKA matrix of ``cka_heatmap_system``; None (said why) when no system adapted one."""
    system = cka_heatmap_system(results)
    if system is None:
        print("no system in these results adapted an encoder of its own: no CKA matrix to draw")
        return None
    matrix = tables.cka_matrix(results, system)
    layers = [f"L{i}" for i in range(len(matrix))]
    return run.save(plots.cka_heatmap(matrix, layers, layers), "05_cka_matrix",
                    f"CKA of every base layer (rows) with every layer of {system} (columns)")


def save_critical_difference(run: NotebookRun):
    """The critical-difference diagram over every target in the results store; None (said why) with one target."""
    ranking = tables.ranking_across_targets(run.store.to_frame())
    if ranking is None:
        print(f"fewer than 2 targets (or 3 systems run on each) in the results store: no critical-difference "
              f"diagram (it ranks systems over targets)")
        return None
    return run.save(plots.critical_difference_diagram(ranking.avg_ranks, ranking.cd), "05_critical_difference",
                    "average rank of each system over targets; systems joined by a bar are not significantly "
                    "different")


def cka_heatmap_system(results: pd.DataFrame) -> str | None:
    """The most accurate system that adapted an encoder of its own (so has a CKA matrix), or None."""
    with_cka = tables.cka_by_layer(results)["system"].unique()
    ranked = results[results["system"].isin(with_cka)].groupby("system")["accuracy"].mean()
    return None if ranked.empty else str(ranked.idxmax())


def transferability_against_gain(run: NotebookRun, comparisons: Comparisons) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Each source's transferability beside the observed gain of single-source transfer from it, and the rank
    correlation of each score with that gain (None when the study has too few sources for one). With two or
    more sources, the LogME-against-gain figure is saved too."""
    fusion_size = run.parameters["fusion_size"]
    transferability = study_transferability(run.study("fusion"), fusion_size)
    seeds = comparisons.across_seeds
    gains = tables.source_gains(seeds[seeds["train_size"] == fusion_size], transferability)
    if len(gains) >= 2:
        run.save(plots.transferability_vs_gain(gains, "logme", "gain", "source"), "05_logme_vs_gain",
                 "observed gain of single-source transfer from each source against its LogME score")
    if len(gains) < 3:
        print(f"{len(gains)} single-source gain(s): a rank correlation needs at least 3, so none is computed")
        return gains, None
    correlations = pd.DataFrame({score: rank_correlation(gains[score], gains["gain"])
                                 for score in TRANSFERABILITY_SCORES}).T
    print("rank correlation of each score with the observed gain:", correlations.round(3), sep="\n")
    return gains, correlations


def write_findings(run: NotebookRun, summary: pd.DataFrame, comparisons: Comparisons,
                   correlations: pd.DataFrame | None, n_sources_scored: int) -> list[str]:
    """Write verdicts.json (the question, the verdicts of both tests, the notes), print them, return the notes."""
    parameters, fusion_size = run.parameters, run.parameters["fusion_size"]
    negative = comparisons.negative_transfer()
    best = summary[summary.train_size == fusion_size].iloc[0]
    notes = [f"Negative transfer (significantly worse than {BASELINE} after Holm, by either test): "
             f"{', '.join(sorted(set(negative.system))) if len(negative) else 'none detected'}.",
             f"Best system at n={fusion_size}: {best.system}, accuracy {best.accuracy:.3f} "
             f"[{best.ci_low:.3f}, {best.ci_high:.3f}] over {best.n_seeds} seeds."]
    if correlations is None:
        notes.append(f"Transferability vs observed gain: not computed ({n_sources_scored} single-source gains; a "
                     f"rank correlation needs at least 3).")
    else:
        notes.append(f"Transferability vs observed gain (Kendall tau over {n_sources_scored} sources): " + ", ".join(
            f"{s} {correlations.loc[s, 'kendall_tau']:+.2f} (p={correlations.loc[s, 'kendall_p']:.2g})"
            for s in correlations.index) + ".")
    question = (f"which way of fusing {', '.join(run.sources)} into {parameters['encoder']} helps on {run.target}? "
                f"(profile {run.profile}, seeds {parameters['seeds']})")
    write_verdicts(run.out_dir, question, comparisons.sections(), notes)
    for title, _, sentences in comparisons.sections():
        print(title, *sentences, sep="\n", end="\n\n")
    print(*notes, sep="\n")
    return notes
