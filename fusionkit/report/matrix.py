"""What the matrix notebook states: which source helps which target, whether transfer is symmetric, which
strategy wins across targets, and whether a cheap estimator picks the right source before anything is trained.

Every comparison follows the single-target protocol (equal tuning budgets, matched controls, seed-level verdicts
with a declared minimum effect); the matrix only adds targets. The notebook shows these tables and figures; the
logic lives here where tests reach it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fusionkit.data.tasks import Task

from fusionkit.errors import InputError
from fusionkit.evaluation.gains import HELPS, HURTS
from fusionkit.evaluation.selection import RANDOM, seed_uncertainty, selection_table
from fusionkit.evaluation.stats import asymmetry_test, friedman_nemenyi, pooled_source_effects
from fusionkit.evaluation.transferability import rank_correlation
from fusionkit.evaluation.verdicts import compare_pairs, methods_header, verdict_sentences
from fusionkit.report import plots, tables
from fusionkit.report.build import write_verdicts
from fusionkit.report.findings import majority_rates
from fusionkit.evaluation.sequential import SeedDesign
from fusionkit.study.design import primary_comparisons, role_pairs
from fusionkit.report.notebook import MatrixRun
from fusionkit.study.runner import load_study_tasks
from fusionkit.study.source_scores import study_transferability

METRIC = "accuracy"
SEQUENTIAL = "sequential"
ESTIMATORS = ("logme", "hscore", "leep", "nce", "textemb")
SOURCE_SIZE = "source train size"  # the heuristic estimator: a bigger source is expected to help more
SEED_MARK, TEST_SET_MARK = "*", "†"
# Demšar (2006) tabulates Friedman's test from N = 10 datasets on; fewer make its chi-square approximation rough.
FEW_TARGETS = 10


def matrix_results(run: MatrixRun) -> pd.DataFrame:
    """Every run of every target's study (run if missing, all targets on the executor together); written to
    results.csv, and every configuration tried to tuning.csv."""
    results = run.run_studies(progress=False)
    attrs = dict(results.attrs)  # the tuning table and how many runs were trained now
    results = tables.flag_failed_runs(results, majority_rates(run.configs()))
    results.attrs = attrs
    run.write_table(results.drop(columns=["details"]), "results")
    run.write_table(results.attrs["tuning"], "tuning")
    print(f"{len(results)} runs over {results.target.nunique()} targets ({results.attrs['runs_trained']} trained "
          f"now, the rest found stored), {results.system.nunique()} systems, seeds "
          f"{sorted(results.seed.unique().tolist())}")
    return results


def overlap(run: MatrixRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool's data overlap card (``data.overlap_card``: texts each pair of tasks and splits share, exactly, as
    tokenisation variants and as near-duplicates), written to overlap_card.csv; and what each source keeps after a
    study drops every evaluation text of the pool from it: per (source, held-out task), the validation and test texts
    of that task still in the source's training data at any level (every matrix study holds out the whole pool, so a
    source is decontaminated alike whichever target it serves), written to overlap_after.csv."""
    from fusionkit.data import overlap_card
    from fusionkit.data.overlap import EvaluationIndex

    configs = run.configs()
    whole = [configs[0].task(name) for name in run.target_names]
    card = overlap_card(whole)
    run.write_table(card, "overlap_card")
    sources = {}
    for config in configs[:2]:  # the sources of the first two studies are every task of the pool
        sources.update({s.name: s for s in load_study_tasks(config)[1] if isinstance(s, Task)})
    rows = []
    for task in whole:
        index = EvaluationIndex([text for split in (task.validation, task.test) for text in split["text"][:]])
        for name, source in sources.items():
            if name != task.name:
                rows.append({"source": name, "held_out_task": task.name, "source_train_texts": len(source.train),
                             "evaluation_texts_left": int((index.match(source.train["text"][:]) != "").sum())})
    after = pd.DataFrame(rows)
    run.write_table(after, "overlap_after")
    return card, after


def overlap_sentence(card: pd.DataFrame, after: pd.DataFrame) -> str:
    """What the overlap tables say, in words: how many evaluation texts the pool's tasks share with other tasks'
    training splits before decontamination (normalised, letters-and-digits and near-duplicate), and how many are
    left in sources after it."""
    evaluation = card[card["split"].isin(["validation", "test"]) & (card["other_split"] == "train")]
    before = {column: int(evaluation[column].sum()) for column in ("shared_texts", "shared_letters", "shared_near")}
    left = int(after["evaluation_texts_left"].sum()) if not after.empty else 0
    return (f"Before any study, the pool's validation and test texts appear in other tasks' training splits "
            f"{before['shared_texts']} times as the same normalised text, {before['shared_letters']} times counting "
            f"tokenisation variants and {before['shared_near']} counting near-duplicates (overlap_card.csv); every "
            f"source drops them, and {left} validation or test text(s) of any pool task "
            f"{'is' if left == 1 else 'are'} left in any source's training data (overlap_after.csv).")


def _rule(run: MatrixRun) -> dict:
    return dict(metric=METRIC, alpha=run.parameters["alpha"], min_effect=run.parameters["min_effect"])


def _matched_pairs(results: pd.DataFrame, sequential: bool) -> list[tuple[str, str]]:
    """(fusion system, its matched control) for the sequential systems, or for every other fusion system."""
    strategy = results.drop_duplicates("system").set_index("system")["strategy"]
    return [(system, control) for system, control in role_pairs(results, "control", primary=True)
            if (strategy[system] == SEQUENTIAL) == sequential]


def _design(run: MatrixRun) -> SeedDesign:
    return SeedDesign.from_parameter(run.parameters["seeds"])


def verdicts(run: MatrixRun, results: pd.DataFrame) -> pd.DataFrame:
    """Every fusion system on every target against its matched control, as one family: the sequential cells and
    the systems over all sources share one error rate (``design.primary_comparisons``, what a staged study stops
    on); the transfer matrix and the families' table are its rows."""
    return primary_comparisons(results, run.parameters["alpha"], run.parameters["min_effect"], _design(run), METRIC)


def _rows_of(table: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    systems = {system for system, _ in pairs}
    return table[table["system"].isin(systems)].reset_index(drop=True)


@dataclass
class TransferMatrix:
    """``cells``: one row per (source, target) with the seed-level gain of sequential transfer over its matched
    control (interval simultaneous over every fusion comparison of the matrix, adjusted p, verdict) beside the same gain over test examples (secondary);
    ``seed_level`` and ``on_test_set`` are the two ``compare_pairs`` tables it comes from; ``seed_gains`` the gain
    of every cell on each seed (target, source, seed, gain), the ground truth's noise."""

    cells: pd.DataFrame
    seed_level: pd.DataFrame
    on_test_set: pd.DataFrame
    seed_gains: pd.DataFrame | None = None

    def pivot(self, column: str) -> pd.DataFrame:
        """``column`` as a sources x targets table (a task and itself: empty)."""
        tasks = sorted(set(self.cells["source"]) | set(self.cells["target"]))
        return self.cells.pivot(index="source", columns="target", values=column).reindex(index=tasks, columns=tasks)

    def negative_transfer(self) -> pd.DataFrame:
        return self.cells[self.cells["verdict"] == HURTS]


def transfer_matrix(run: MatrixRun, results: pd.DataFrame) -> TransferMatrix:
    """Sequential transfer from every source to every target against its matched control (fine-tuning with the
    same knobs), judged in one family with the systems over all sources (``verdicts``); written to transfer_matrix.csv (long) and transfer_matrix_gains.csv."""
    pairs = _matched_pairs(results, sequential=True)
    seed_level = _rows_of(verdicts(run, results), pairs)
    on_test_set = compare_pairs(results, pairs, predictions=run.store.predictions, **_rule(run))
    sources = results[results["role"] == "fusion"].drop_duplicates("system").set_index("system")["sources"]
    alpha = run.parameters["alpha"]
    test = on_test_set.set_index(["system", "target"])
    cells = seed_level[["target", "system", "baseline", "gain", "ci_low", "ci_high", "p_adjusted", "verdict",
                        "detectable_effect"]].copy()
    cells.insert(0, "source", cells["system"].map(sources))
    keys = list(zip(cells["system"], cells["target"]))
    cells["test_set_gain"] = [test.loc[key, "gain"] for key in keys]
    cells["test_set_p_adjusted"] = [test.loc[key, "p_adjusted"] for key in keys]
    cells["mark"] = np.where(cells["verdict"].isin([HELPS, HURTS]), SEED_MARK,
                             np.where(cells["test_set_p_adjusted"] < alpha, TEST_SET_MARK, ""))
    validation = results[results["role"] == "fusion"].groupby(["system", "target"])["val_accuracy"].mean()
    cells["val_accuracy"] = [validation.get(key, np.nan) for key in keys]
    sizes = {config.target: len(config.task(config.target).capped("validation", config.validation_cap).validation)
             for config in run.configs()}
    cells = best_source_on_validation(cells, sizes)
    matrix = TransferMatrix(cells.drop(columns="system").rename(columns={"baseline": "control"}), seed_level,
                            on_test_set, _seed_gains(results, pairs, sources))
    run.write_table(matrix.cells, "transfer_matrix")
    run.write_table(matrix.pivot("gain").reset_index(), "transfer_matrix_gains")
    return matrix


def _seed_gains(results: pd.DataFrame, pairs: list[tuple[str, str]], sources: pd.Series) -> pd.DataFrame:
    """Each sequential cell's gain over its matched control on each seed they share, in accuracy points."""
    rows = []
    for system, control in pairs:
        fused = results[results["system"] == system].set_index(["target", "seed"])[METRIC]
        reference = results[results["system"] == control].set_index(["target", "seed"])[METRIC]
        for target, seed in fused.index.intersection(reference.index):
            rows.append({"target": target, "source": sources[system], "seed": seed,
                         "gain": 100 * float(fused[(target, seed)] - reference[(target, seed)])})
    return pd.DataFrame(rows, columns=["target", "source", "seed", "gain"])


def save_transfer_matrix(run: MatrixRun, matrix: TransferMatrix):
    return run.save(plots.transfer_matrix_heatmap(matrix.pivot("gain"), matrix.pivot("mark").fillna("")),
                    "06_transfer_matrix",
                    f"gain of sequential transfer (source, row) over its matched control on each target (column), "
                    f"accuracy points, mean over seeds; {SEED_MARK} the seed-level verdict (paired t-interval, "
                    f"simultaneous over every fusion comparison, minimum effect {run.parameters['min_effect']:g}); {TEST_SET_MARK} significant only "
                    f"over test examples (secondary); red: transfer hurt")


def asymmetry(run: MatrixRun, matrix: TransferMatrix) -> tuple[pd.DataFrame, dict | None]:
    """Every pair of tasks with both directions measured: gain(A->B) and gain(B->A) with their intervals (the
    verdicts'), and Spearman's rho between the two directions with a Mantel permutation test over task labels
    (``stats.asymmetry_test``; None without a complete matrix of at least 3 tasks); the scatter is saved with both
    intervals of every pair, asymmetry.csv written."""
    cells = matrix.cells.set_index(["source", "target"])
    tasks = sorted(set(matrix.cells["source"]) | set(matrix.cells["target"]))
    rows = [{"task_a": a, "task_b": b, "gain_a_to_b": cells.loc[(a, b), "gain"],
             "gain_b_to_a": cells.loc[(b, a), "gain"], "a_to_b_low": cells.loc[(a, b), "ci_low"],
             "a_to_b_high": cells.loc[(a, b), "ci_high"], "b_to_a_low": cells.loc[(b, a), "ci_low"],
             "b_to_a_high": cells.loc[(b, a), "ci_high"]}
            for i, a in enumerate(tasks) for b in tasks[i + 1:] if (a, b) in cells.index and (b, a) in cells.index]
    pairs = pd.DataFrame(rows, columns=["task_a", "task_b", "gain_a_to_b", "gain_b_to_a", "a_to_b_low",
                                        "a_to_b_high", "b_to_a_low", "b_to_a_high"])
    grid = matrix.pivot("gain").to_numpy(dtype=float)
    complete = len(tasks) >= 3 and len(pairs) == len(tasks) * (len(tasks) - 1) // 2
    test = asymmetry_test(grid) if complete else None
    run.write_table(pairs, "asymmetry")
    run.save(plots.asymmetry_scatter(pairs, test), "06_asymmetry",
             "gain of transfer A->B against B->A for every pair of tasks with both intervals (the verdicts', "
             "simultaneous); points on the diagonal: symmetric transfer; rho tested by permuting task labels")
    return pairs, test


def source_effects(run: MatrixRun, matrix: TransferMatrix) -> pd.DataFrame | None:
    """Does a source help in general, whatever the target? Each source's mean gain of sequential transfer over the
    targets from a mixed model of the seed-level gains (``stats.pooled_source_effects``: target and cell random
    intercepts), with its interval; source_effects.csv. None (said why) with fewer than 3 targets."""
    gains = matrix.seed_gains
    if gains is None or gains["target"].nunique() < 3:
        print("fewer than 3 targets with seed-level gains: no pooled model")
        return None
    try:
        table = pooled_source_effects(gains)
    except InputError as error:  # e.g. no spread to fit (every gain the same): say so rather than stop the report
        print(f"no pooled model: {error}")
        return None
    run.write_table(table, "source_effects")
    return table


def source_effects_sentence(table: pd.DataFrame | None) -> str:
    if table is None or table.empty:
        return "Pooled over targets: too few targets for a mixed model."
    effects = "; ".join(f"{row.source} {row.effect:+.1f} [{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
                        for row in table.sort_values("effect", ascending=False).itertuples())
    return (f"Pooled over targets (a mixed model of the seed-level gains with a random intercept per target and per "
            f"cell; it assumes normal gains, targets that stand for tasks at large and independent seeds): each "
            f"source's mean gain in points with its {table.attrs.get('confidence', 0.95):.0%} interval, unadjusted: "
            f"{effects}.")


def families_against_controls(run: MatrixRun, results: pd.DataFrame) -> pd.DataFrame:
    """The fusion systems over all sources (representation, merging) on every target against their matched
    controls, seed-level, in one family with the sequential cells (``verdicts``); comparisons_families.csv."""
    table = _rows_of(verdicts(run, results), _matched_pairs(results, sequential=False))
    run.write_table(table, "comparisons_families")
    return table


def across_targets(run: MatrixRun, results: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy of every main system on every target (rows); sequential enters once per target, through
    the source with the best mean *validation* accuracy (test data never chooses), named in
    ``attrs["sequential_source"]``. Written to across_targets.csv."""
    main = results[results["role"].isin(["baseline", "fusion"])]
    grid = main[main["strategy"] != SEQUENTIAL].groupby(["target", "system"])[METRIC].mean().unstack()
    sequential = main[main["strategy"] == SEQUENTIAL]
    chosen = sequential.groupby(["target", "sources"])["val_accuracy"].mean().groupby(level="target").idxmax()
    name = f"{SEQUENTIAL} (source chosen on validation)"
    grid[name] = [sequential[(sequential["target"] == t) & (sequential["sources"] == chosen[t][1])][METRIC].mean()
                  for t in grid.index]
    grid = grid * 100
    grid.attrs["sequential_source"] = {target: key[1] for target, key in chosen.items()}
    run.write_table(grid.round(2).reset_index().assign(sequential_source=lambda f: f["target"].map(
        grid.attrs["sequential_source"])), "across_targets")
    return grid


def ranking_across_targets(run: MatrixRun, grid: pd.DataFrame):
    """Friedman test and Nemenyi critical difference of the systems over the targets, with the CD diagram saved;
    None (said why) with fewer than 2 targets or 3 systems."""
    complete = grid.dropna(axis=1)
    if len(complete) < 2 or complete.shape[1] < 3:
        print(f"{len(complete)} target(s) and {complete.shape[1]} system(s) run on all: no Friedman test")
        return None
    ranking = friedman_nemenyi(complete, alpha=run.parameters["alpha"])
    significant = ranking.p_value < ranking.alpha
    run.save(plots.critical_difference_diagram(ranking.avg_ranks, ranking.cd, title=plots.ranking_title(ranking)),
             "06_critical_difference",
             f"average rank of each system over the {ranking.n_datasets} targets (1 = best); " + (
                 f"systems joined by a bar are within the Nemenyi critical difference (alpha={ranking.alpha:g})"
                 if significant else f"exploratory: the Friedman test is not significant (p={ranking.p_value:.2g}), "
                                     f"so no difference between these ranks is shown"))
    return ranking


def ranking_caveat(ranking) -> str:
    """The Friedman result in words, with the caveat a small number of targets calls for."""
    if ranking is None:
        return "Across targets: too few targets or systems for a Friedman test."
    best = ranking.avg_ranks.index[0]
    verdict = (f"the systems differ (Friedman p={ranking.p_value:.2g}); {best} ranks best on average "
               f"({ranking.avg_ranks.iloc[0]:.2f})" if ranking.p_value < ranking.alpha else
               f"no system wins across targets (Friedman p={ranking.p_value:.2g}; {best} has the best average rank, "
               f"{ranking.avg_ranks.iloc[0]:.2f}, by chance as far as this test can tell)")
    caveat = (f" With {ranking.n_datasets} targets the test has little power and the critical difference is "
              f"{ranking.cd:.2f} ranks of {ranking.n_methods}: Demšar (2006) tabulates it from 10 datasets on, so "
              f"read a missing difference as not shown, not as absent." if ranking.n_datasets < FEW_TARGETS else "")
    return f"Across {ranking.n_datasets} targets, {verdict}.{caveat}"


def source_estimates(run: MatrixRun) -> pd.DataFrame:
    """Every estimator's score of every source for every target, computed before any fusion: LogME, H-score,
    LEEP and NCE of the first seed's expert on the target's fusion-size training sample, the text-embedding
    similarity of the two tasks' texts (notebook 3's table, kept in the work folder), and the source's
    training-set size. Long: target, source, estimator, score."""
    rows = []
    for config in run.configs():
        scores = study_transferability(config, run.parameters["fusion_size"])
        scores = scores[scores["source"].isin(config.source_names)]
        for estimator in ESTIMATORS:
            rows += [{"target": config.target, "source": source, "estimator": estimator, "score": score}
                     for source, score in zip(scores["source"], scores[estimator])]
        _, sources = load_study_tasks(config)
        rows += [{"target": config.target, "source": source.name, "estimator": SOURCE_SIZE,
                  "score": float(len(source.train))} for source in sources if isinstance(source, Task)]
    estimates = pd.DataFrame(rows)
    run.write_table(estimates, "source_estimates")
    return estimates


def task_selection(run: MatrixRun, estimates: pd.DataFrame, matrix: TransferMatrix) -> pd.DataFrame:
    """``selection_table`` of every estimator against the observed gains of sequential transfer (random ranking
    as the reference), with bootstrap intervals over seeds for mean Regret@1 and NDCG@3 and the noise ceiling of
    the ground truth (``selection.seed_uncertainty``, in ``attrs["noise_ceiling"]``); selection.csv,
    selection_by_target.csv and selection_noise_ceiling.csv."""
    gains = matrix.cells[["target", "source", "gain"]]
    table = selection_table(estimates, gains, ks=(1, 3), alpha=run.parameters["alpha"])
    if matrix.seed_gains is not None and len(matrix.seed_gains):
        intervals, ceiling = seed_uncertainty(estimates, matrix.seed_gains, k_regret=1, k_ndcg=3)
        attrs = dict(table.attrs)
        table = table.merge(intervals, on="estimator", how="left")
        table.attrs = {**attrs, "noise_ceiling": ceiling}
        run.write_table(pd.DataFrame([ceiling]), "selection_noise_ceiling")
    run.write_table(table, "selection")
    run.write_table(table.attrs["by_target"], "selection_by_target")
    return table


def attention_by_source(results: pd.DataFrame) -> pd.DataFrame:
    """Per target and source, the mean weight representation attention gave the source's expert (over layers and
    seeds, the base encoder's share left out): which sources the fusion layer drew on. Long: target, source,
    attention."""
    rows = []
    for target, runs in results[results["strategy"] == "representation"].groupby("target"):
        try:
            weights, names, _, _ = tables.mean_attention_weights(runs)
        except InputError:  # a target whose representation runs did not use attention has no row
            continue
        per_source = np.asarray(weights).mean(axis=0)
        rows += [{"target": target, "source": name, "attention": float(weight)}
                 for name, weight in zip(names, per_source) if name != "base"]
    return pd.DataFrame(rows, columns=["target", "source", "attention"])


def beyond_sequential(run: MatrixRun, results: pd.DataFrame, estimates: pd.DataFrame,
                      matrix: TransferMatrix) -> pd.DataFrame:
    """Does an estimator also predict what representation fusion draws on? Per estimator (and the observed
    sequential gain), the Kendall tau between its scores and the attention weight of each source, per target and
    its mean over targets; beyond_sequential.csv."""
    attention = attention_by_source(results)
    gains = matrix.cells[["target", "source", "gain"]].rename(columns={"gain": "score"})
    candidates = pd.concat([estimates, gains.assign(estimator="observed sequential gain")], ignore_index=True)
    merged = candidates.merge(attention, on=["target", "source"])
    rows = []
    for (estimator, target), group in merged.groupby(["estimator", "target"]):
        tau = (rank_correlation(group["score"], group["attention"])["kendall_tau"]
               if len(group) >= 3 and group["score"].nunique() > 1 else np.nan)
        rows.append({"estimator": estimator, "target": target, "kendall_tau": tau})
    per_target = pd.DataFrame(rows, columns=["estimator", "target", "kendall_tau"])
    table = per_target.groupby("estimator")["kendall_tau"].agg(["mean", "count"]).rename(
        columns={"mean": "mean_kendall_tau_with_attention", "count": "n_targets"}).reset_index()
    run.write_table(table, "beyond_sequential")
    return table


THIN_CHOICE_EXAMPLES = 1.0  # a best source ahead of the next by at most this many validation examples: a thin choice


def best_source_on_validation(cells: pd.DataFrame, validation_sizes: dict[str, int]) -> pd.DataFrame:
    """Each target's best source, chosen by the mean *validation* accuracy of sequential transfer from it (test
    data never chooses; the largest of several noisy test gains would be biased upward), as columns of the cells:
    ``chosen`` (one per target: on a tie, the first source alphabetically) and ``choice`` in words: a tie is named
    ("tie on validation with mr"), and so is a thin choice, ahead of the next source by at most
    ``THIN_CHOICE_EXAMPLES`` validation example(s) (``validation_sizes``: target -> examples)."""
    cells = cells.copy()
    cells["chosen"], cells["choice"] = False, ""
    for target, group in cells.groupby("target"):
        ranked = group.sort_values(["val_accuracy", "source"], ascending=[False, True])
        best = ranked.index[0]
        cells.loc[best, "chosen"] = True
        if len(ranked) < 2:
            cells.loc[best, "choice"] = "the only source"
            continue
        top = ranked["val_accuracy"].iloc[0]
        tied = ranked.loc[np.isclose(ranked["val_accuracy"], top, rtol=0, atol=1e-12), "source"].tolist()[1:]
        margin = (top - ranked["val_accuracy"].iloc[1]) * validation_sizes.get(target, np.nan)
        if tied:
            cells.loc[best, "choice"] = f"tie on validation with {', '.join(tied)} (the first alphabetically)"
        elif margin <= THIN_CHOICE_EXAMPLES + 1e-9:
            cells.loc[best, "choice"] = (f"thin: ahead of {ranked['source'].iloc[1]} by {margin:.1f} validation "
                                         f"example(s) on average")
        else:
            cells.loc[best, "choice"] = f"ahead by {margin:.1f} validation examples on average"
    return cells


def _best_sources(matrix: TransferMatrix) -> list[str]:
    chosen = matrix.cells[matrix.cells["chosen"]].sort_values("target")
    return [f"{row.target}: {row.source} ({row.gain:+.1f} points on test, {row.verdict}; chosen on validation, "
            f"{row.choice})" for row in chosen.itertuples()]


def trusted_estimator(selection: pd.DataFrame) -> str:
    """Which estimator to trust, in words: the lowest mean Regret@1 among those that pick better than random."""
    alpha = selection.attrs["alpha"]
    tested = selection[(selection["estimator"] != RANDOM) & (selection["p_holm"] < alpha)]
    random_regret = selection.loc[selection["estimator"] == RANDOM, "regret@1"].iloc[0]
    if tested.empty:
        best = selection[selection["estimator"] != RANDOM].iloc[0]
        p_column = next(column for column in selection if column.startswith("p_vs_random"))
        return (f"none; no estimator picks sources better than random here (pooled permutation test, Holm over the "
                f"{len(selection) - 1} estimators, on mean Regret@1). The lowest mean Regret@1 is "
                f"{best['estimator']}'s, {best['regret@1']:.2f} points{_interval_text(best)} against "
                f"{random_regret:.2f} for a random pick (p={best[p_column]:.2g} before correction, "
                f"{best['p_holm']:.2g} after){_ceiling_text(selection)}")
    best = tested.iloc[0]
    return (f"trust {best['estimator']}: it picks better than random (p_holm={best['p_holm']:.2g}) "
            f"with a mean Regret@1 of {best['regret@1']:.2f} points{_interval_text(best)} against "
            f"{random_regret:.2f} for a random pick{_ceiling_text(selection)}")


def _interval_text(row: pd.Series) -> str:
    if "regret@1_low" not in row or not np.isfinite(row["regret@1_low"]):
        return ""
    return f" [{row['regret@1_low']:.2f}, {row['regret@1_high']:.2f} over resampled seeds]"


def _ceiling_text(selection: pd.DataFrame) -> str:
    ceiling = selection.attrs.get("noise_ceiling")
    if not ceiling or not np.isfinite(ceiling.get("regret@1", np.nan)):
        return ""
    return (f"; one seed's own gains, ranking the sources against the other seeds' mean, reach a Regret@1 of "
            f"{ceiling['regret@1']:.2f} (the noise ceiling: what the ground truth allows)")


def write_matrix_findings(run: MatrixRun, matrix: TransferMatrix, families: pd.DataFrame, ranking,
                          asymmetry_correlation: dict | None, selection: pd.DataFrame,
                          overlap_tables: tuple[pd.DataFrame, pd.DataFrame],
                          effects: pd.DataFrame | None = None) -> list[str]:
    """verdicts.json for the matrix report: the answers in words first (returned), then every comparison's sentence,
    then the protocol (its sentence on overlap read from ``overlap_tables``, what ``overlap`` returns); printed."""
    negative = matrix.negative_transfer()
    helps = matrix.cells[matrix.cells["verdict"] == HELPS]
    notes = [f"Best source per target (chosen by validation accuracy of sequential transfer; its test gain over "
             f"the matched control shown): "
             f"{'; '.join(_best_sources(matrix))}.",
             "Sources that help at the seed level: "
             + (", ".join(f"{r.source}->{r.target}" for r in helps.itertuples()) or "none shown") + ".",
             f"Negative transfer (seed-level, simultaneous over every fusion comparison of the matrix): "
             + (", ".join(f"{r.source}->{r.target} ({r.gain:+.1f})" for r in negative.itertuples()) or "none detected")
             + ".",
             source_effects_sentence(effects),
             ranking_caveat(ranking),
             "Asymmetry: " + ("too few task pairs for a rank correlation." if asymmetry_correlation is None else
                              f"Spearman rho between gain(A->B) and gain(B->A) is "
                              f"{asymmetry_correlation['spearman_rho']:+.2f} over "
                              f"{asymmetry_correlation['n_pairs']} pairs (p={asymmetry_correlation['p_value']:.2g}, "
                              f"Mantel test permuting task labels, {asymmetry_correlation['method']}: each task is in "
                              f"several pairs)."),
             f"Which estimator to trust: {trusted_estimator(selection)}."]
    parameters = run.parameters
    protocol = (f"Protocol: every target's study gave each arm a tuning budget of {parameters['tuning_budget']} "
                f"configuration(s) on validation, seeds {parameters['seeds']}, n={parameters['fusion_size']} target "
                f"training examples; verdicts read paired t-intervals over seeds against matched controls, simultaneous at "
                f"{1 - parameters['alpha']:.0%} over every fusion comparison of the matrix (Bonferroni), with a minimum "
                f"effect of {parameters['min_effect']:g} points ('equivalent' inside +/- it). One expert per (task, seed) serves "
                f"every target. " + overlap_sentence(*overlap_tables))
    sections = [("In short", "The answers, each from the tables and figures below.", notes),
                ("Transfer matrix: sequential transfer from each source to each target, against its matched control "
                 "across seeds", methods_header(matrix.seed_level), verdict_sentences(matrix.seed_level))]
    if not families.empty:
        sections.append(("Fusion over all sources (representation, merging) on each target, against the matched "
                         "control across seeds", methods_header(families), verdict_sentences(families)))
    question = (f"which of {', '.join(run.target_names)} helps which, as sources of knowledge fused into "
                f"{parameters['encoder']}, and can a cheap estimator pick the source before training? "
                f"(profile {run.profile}, seeds {parameters['seeds']})")
    write_verdicts(run.out_dir, question, sections, [protocol])
    print(*notes, protocol, sep="\n")
    return notes
