"""Plain-language findings from a results table: each strategy against a baseline, with its numbers and test."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import LOWER_IS_BETTER, check_columns
from fusionkit.evaluation.stats import PAIRED_T_TEST, detectable_effect, seeds_needed
from fusionkit.evaluation.gains import (EXAMPLE_TEST, HELPS, HURTS, INCONCLUSIVE, Gain, example_gain, judge_gains,
                                        transfer_gain)

# Reported in points (x100), as papers do: "+2.1 accuracy points".
POINT_METRICS = ("accuracy", "macro_f1", "mcc")
SYSTEM_COLUMNS = ("strategy", "sources")
UNTESTED = "not tested (fewer than 2 seeds)"
# Differences this close on every seed are the same difference (in points, float rounding apart).
NO_SPREAD_TOLERANCE = 1e-9
NO_SPREAD = "not tested (the same difference on every seed: a t-test is undefined)"
# A target-only baseline that beats or trails finetune is not transfer, nor is a fusion system that trails a
# baseline of another kind (negative transfer is against its matched control): their verdicts say better or worse.
BASELINE_VERDICTS = {HELPS: "better", HURTS: "worse"}
_OUTPUT_COLUMNS = ("baseline", "metric", "gain", "ci_low", "ci_high", "p_value", "p_holm", "verdict", "sentence",
                   "system", "test", "n_fused", "n_baseline", "confidence", "alpha", "min_effect")


def _describe(columns: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{column}={value}" for column, value in zip(columns, values))


def _by_seed(runs: pd.DataFrame, metric: str, what: str) -> pd.Series:
    repeated = runs["seed"][runs["seed"].duplicated()]
    if len(repeated):
        raise InputError(f"the runs of {what} include several with seed {repeated.iloc[0]}; filter results, or name "
                         f"the column that tells them apart in match_on (e.g. encoder) or distinguish_by (e.g. system)")
    return runs.set_index("seed")[metric]


def _for_seeds(runs: pd.DataFrame, seeds) -> pd.DataFrame:
    """A seed-free run (one run marked ``seed_free``: its result is the same for every seed) as the run of each of
    ``seeds``, which is what running it for each would give; paired with them, the t-test is then the one-sample
    test of the other side's seeds against its value. Other runs as they are."""
    if "seed_free" not in runs or len(runs) != 1 or not bool(runs["seed_free"].iloc[0]):
        return runs
    seeds = list(seeds)
    return runs.loc[runs.index.repeat(len(seeds))].assign(seed=seeds).reset_index(drop=True)


def _seed_gain(fused: pd.Series, baseline: pd.Series, confidence: float) -> Gain:
    """Paired over shared seeds when there are 2 or more, else Welch over all seeds, else untested."""
    shared = fused.index.intersection(baseline.index)
    if len(shared) >= 2 and np.ptp(fused[shared].to_numpy() - baseline[shared].to_numpy()) <= NO_SPREAD_TOLERANCE:
        # Zero spread makes t infinite and p zero: that is no evidence, e.g. two systems that differ on the
        # same two test examples whatever the seed.
        return Gain(float(fused.mean() - baseline.mean()), np.nan, np.nan, np.nan, np.nan, np.nan, np.nan,
                    NO_SPREAD, "none", confidence, len(shared), len(shared))
    if len(shared) >= 2:
        return transfer_gain(fused[shared].to_numpy(), baseline[shared].to_numpy(), paired=True, confidence=confidence)
    if len(fused) >= 2 and len(baseline) >= 2:
        return transfer_gain(fused.to_numpy(), baseline.to_numpy(), paired=False, confidence=confidence)
    return Gain(float(fused.mean() - baseline.mean()), np.nan, np.nan, np.nan, np.nan, np.nan, np.nan,
                UNTESTED, "none", confidence, len(fused), len(baseline))


def _example_gain(runs: pd.DataFrame, baseline_runs: pd.DataFrame, predictions, metric: str, confidence: float,
                  scale: float) -> Gain:
    ids, baseline_ids = runs.set_index("seed")["run_id"], baseline_runs.set_index("seed")["run_id"]
    shared = sorted(set(ids.index) & set(baseline_ids.index))
    if not shared:
        raise InputError(f"no seed is shared by {sorted(ids.index)} and the baseline's {sorted(baseline_ids.index)}")
    labels = [predictions(ids[seed])[0] for seed in shared]
    if any(not np.array_equal(labels[0], other) for other in labels[1:] + [predictions(baseline_ids[s])[0]
                                                                         for s in shared]):
        raise InputError("the runs compared were scored on different test sets")
    gain = example_gain(labels[0], [predictions(ids[s])[1] for s in shared],
                        [predictions(baseline_ids[s])[1] for s in shared], metric, confidence)
    return replace(gain, absolute=gain.absolute * scale, ci_low=gain.ci_low * scale, ci_high=gain.ci_high * scale)


def _where(row: pd.Series, match_on: Sequence[str]) -> str:
    words = {"target": "on {}", "train_size": "at n={}"}
    return " ".join(words.get(column, column + "={}").format(row[column]) for column in match_on)


def _number(value: float, metric: str, signed: bool = False) -> str:
    return f"{value:{'+' if signed else ''}.{1 if metric in POINT_METRICS else 3}f}"


def metric_unit(metric: str) -> str:
    """How a gain in `metric` is expressed, e.g. "accuracy points" or "nll (lower is better)"."""
    unit = f"{metric} points" if metric in POINT_METRICS else metric
    return f"{unit} (lower is better)" if metric in LOWER_IS_BETTER else unit


def system_name(strategy: str, sources) -> str:
    """A strategy and its sources as one name, e.g. "attention (sources mr,subj)"; no sources, no brackets."""
    return f"{strategy} (sources {sources})" if isinstance(sources, str) and sources else str(strategy)


def _sentence(row: pd.Series, match_on: Sequence[str]) -> str:
    metric = row["metric"]
    change = f"{_number(row['gain'], metric, signed=True)} {metric_unit(metric)}"
    head = f"{row['system']} vs {row['baseline']} {_where(row, match_on)}: {change}"
    if row["test"] == EXAMPLE_TEST:
        seeds = f"each example averaged over {row['n_fused']} shared seeds"
    elif row["test"] == PAIRED_T_TEST:
        seeds = f"{row['n_fused']} paired seeds"
    else:
        seeds = f"{row['n_fused']} vs {row['n_baseline']} seeds"
    if np.isnan(row["p_holm"]):
        return f"{head}, {row['test']} ({seeds}): {row['verdict']}"
    p_value = "p<0.001" if row["p_holm"] < 0.001 else f"p={row['p_holm']:.2g}"
    interval = f"[{row['confidence']:.0%} CI {_number(row['ci_low'], metric)}, {_number(row['ci_high'], metric)}]"
    return f"{head} {interval}, {p_value} after Holm ({row['test']}, {seeds}): {row['verdict']}{_power_note(row)}"


def _power_note(row: pd.Series) -> str:
    """Why an inconclusive verdict is inconclusive, and what would settle it."""
    if row["verdict"] != INCONCLUSIVE:
        return ""
    unit = metric_unit(row["metric"])
    if row["p_holm"] < row["alpha"]:
        return (f" (significant, but smaller than the declared minimum effect of {row['min_effect']:g} {unit})")
    if "detectable_effect" not in row or not np.isfinite(row["detectable_effect"]):
        return ""
    needed = row["seeds_needed"]
    needed = f"about {needed:.0f} seeds" if np.isfinite(needed) else "more seeds than is practical"
    return (f" (with {row['n_fused']} seeds and a seed-to-seed spread of {row['sd_difference']:.1f} {unit}, this test "
            f"detects a true effect of {row['detectable_effect']:.1f} with {row['power']:.0%} power at alpha="
            f"{row['alpha']:g} before correction; the observed {_number(row['gain'], row['metric'], signed=True)} "
            f"would need {needed})")


def _seed_power(fused: pd.Series, reference: pd.Series, alpha: float, power: float) -> dict:
    """The seed spread of the paired differences, the smallest effect detectable with it, and the seeds the
    observed mean difference would need."""
    shared = fused.index.intersection(reference.index)
    differences = fused[shared].to_numpy() - reference[shared].to_numpy()
    if len(differences) < 2 or np.ptp(differences) <= NO_SPREAD_TOLERANCE:  # no spread: no power analysis
        return {"sd_difference": np.nan, "detectable_effect": np.nan, "seeds_needed": np.nan, "power": power}
    spread = float(differences.std(ddof=1))
    return {"sd_difference": spread, "detectable_effect": detectable_effect(spread, len(differences), alpha, power),
            "seeds_needed": seeds_needed(float(differences.mean()), spread, alpha, power), "power": power}


def compare_pairs(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str = "accuracy",
                  alpha: float = 0.05, min_effect: float = 0.0, confidence: float = 0.95,
                  match_on: Sequence[str] = ("target", "train_size"),
                  predictions: Callable[[str], tuple] | None = None, power: float = 0.8,
                  words: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Each ``(system, control)`` of ``pairs`` at the same ``match_on`` values: the gain of the system over its
    own control (a matched control, the best baseline, the system without one of its sources...).

    ``results`` has one row per run and system, with columns system, seed, match_on and ``metric`` (and run_id
    with ``predictions``). The tests are those of ``compare_to_baseline`` (paired t-test over shared seeds; with
    ``predictions``, the paired permutation test over test examples), Holm-adjusted over every tested row; the
    verdict is "helps" / "hurts (negative transfer)" when p_holm < alpha and |gain| >= min_effect. Seed-level
    rows also carry the spread of the per-seed differences (``sd_difference``), the smallest effect the test
    detects with ``power`` at ``alpha`` (``detectable_effect``) and the seeds the observed gain would need
    (``seeds_needed``): an inconclusive verdict's sentence says them. A pair whose sides share no match_on
    values is left out. A seed-free run (``seed_free`` column, run once) stands for every seed of the other side.
    """
    match_on = list(match_on)
    check_columns(results, [*match_on, "system", "seed", metric])
    scale = 100.0 if metric in POINT_METRICS else 1.0
    by_system = {system: runs for system, runs in results.groupby("system")}
    for system in {name for pair in pairs for name in pair} - set(by_system):
        raise InputError(f"system {system!r} has no runs; systems present: {sorted(by_system)}")
    rows, gains = [], []
    for system, control in pairs:
        references = dict(list(by_system[control].groupby(match_on, dropna=False)))
        for key, runs in by_system[system].groupby(match_on, dropna=False):
            if key not in references:
                continue
            where = _describe(match_on, key)
            runs, reference_runs = _for_seeds(runs, references[key]["seed"]), _for_seeds(references[key], runs["seed"])
            fused = _by_seed(runs, metric, f"{system!r} at {where}") * scale
            reference = _by_seed(reference_runs, metric, f"{control!r} at {where}") * scale
            if predictions is None:
                gains.append(_seed_gain(fused, reference, confidence))
                power_columns = _seed_power(fused, reference, alpha, power)
            else:
                gains.append(_example_gain(runs, reference_runs, predictions, metric, confidence, scale))
                power_columns = {}
            rows.append({**dict(zip(match_on, key)), "system": system, "baseline": control, **power_columns})
    table = judge_gains(gains, alpha, min_effect, higher_is_better=metric not in LOWER_IS_BETTER)
    columns = [*match_on, "system", "baseline", "sd_difference", "detectable_effect", "seeds_needed", "power"]
    table = pd.concat([pd.DataFrame(rows, columns=columns), table], axis=1)
    table["verdict"] = table["verdict"].replace(dict(words or {}))
    table["metric"] = metric
    table["sentence"] = [_sentence(row, match_on) for _, row in table.iterrows()]
    return table[[*match_on, "system", "baseline", "metric", "gain", "ci_low", "ci_high", "p_value", "p_holm",
                  "verdict", "test", "n_fused", "n_baseline", "confidence", "alpha", "min_effect", "sd_difference",
                  "detectable_effect", "seeds_needed", "power", "sentence"]]


def compare_to_baseline(results: pd.DataFrame, baseline: str, metric: str = "accuracy", alpha: float = 0.05,
                        min_effect: float = 0.0, confidence: float = 0.95,
                        match_on: Sequence[str] = ("target", "train_size"),
                        distinguish_by: Sequence[str] = (), name_column: str | None = None,
                        predictions: Callable[[str], tuple] | None = None) -> pd.DataFrame:
    """Each system (strategy, sources, *distinguish_by) against the `baseline` strategy at the same match_on values.

    results has one row per run with columns match_on, strategy, sources, distinguish_by, seed and
    `metric`; distinguish_by names columns (e.g. "system" or "knobs") that split one strategy into
    several systems. The gain is mean(system) - mean(baseline), in points (x100) for POINT_METRICS.
    Seeds run by both sides are paired: with 2 or more shared seeds the paired t-test and its t-interval
    over those seeds; otherwise Welch's t-test over all seeds; with fewer than 2 seeds on a side, no
    test ("inconclusive"). P-values are Holm-adjusted across every tested row of the returned table.
    Verdict: "helps" or "hurts (negative transfer)" when p_holm < alpha and |gain| >= min_effect (in
    the gain's units). One row per system and match_on values, with a display name in `system`: the value
    of `name_column` (one of distinguish_by, e.g. a study's system name) when given, else built from the columns.

    With `predictions` (run_id -> (y_true, probs), e.g. ResultsStore.predictions) the test is per example
    instead (transfer.example_gain over the seeds both sides ran: bootstrap interval and paired permutation
    test over the test examples); results then needs a run_id column and `metric` must be per-example.
    """
    match_on, system = list(match_on), [*SYSTEM_COLUMNS, *distinguish_by]
    if name_column is not None and name_column not in distinguish_by:
        raise InputError(f"name_column {name_column!r} must be one of distinguish_by {list(distinguish_by)}")
    check_columns(results, [*match_on, *system, "seed", metric])
    is_baseline = results["strategy"] == baseline
    if not is_baseline.any():
        present = sorted(results["strategy"].unique())
        raise InputError(f"baseline {baseline!r} has no runs; strategies present: {present}")
    scale = 100.0 if metric in POINT_METRICS else 1.0
    baselines = dict(list(results[is_baseline].groupby(match_on, dropna=False)))
    keys, gains = [], []
    for key, runs in results[~is_baseline].groupby([*match_on, *system], dropna=False):
        where = _describe(match_on, key)
        if key[:len(match_on)] not in baselines:
            raise InputError(f"no {baseline!r} runs at {where} to compare "
                             f"{_describe(system, key[len(match_on):])} with")
        fused = _by_seed(runs, metric, _describe([*match_on, *system], key)) * scale
        reference = _by_seed(baselines[key[:len(match_on)]], metric, f"baseline {baseline!r} at {where}") * scale
        keys.append(key)
        if predictions is None:
            gains.append(_seed_gain(fused, reference, confidence))
        else:
            gains.append(_example_gain(runs, baselines[key[:len(match_on)]], predictions, metric, confidence, scale))
    table = judge_gains(gains, alpha, min_effect, higher_is_better=metric not in LOWER_IS_BETTER)
    table = pd.concat([pd.DataFrame(keys, columns=[*match_on, *system]), table], axis=1)
    no_sources = table["sources"].fillna("").astype(str) == ""
    table.loc[no_sources, "verdict"] = table.loc[no_sources, "verdict"].replace(BASELINE_VERDICTS)
    if name_column:
        table["system"] = table[name_column].astype(str)
    else:
        table["system"] = [system_name(row["strategy"], row["sources"]) + "".join(
            f", {column}={row[column]}" for column in distinguish_by) for _, row in table.iterrows()]
    table["baseline"], table["metric"] = baseline, metric
    table["sentence"] = [_sentence(row, match_on) for _, row in table.iterrows()]
    return table[[*match_on, *system, *(column for column in _OUTPUT_COLUMNS if column not in system)]]


def verdict_sentences(comparisons: pd.DataFrame) -> list[str]:
    """The plain-language finding of every comparison, in table order."""
    check_columns(comparisons, ["sentence"], "comparisons")
    return comparisons["sentence"].tolist()


def methods_header(comparisons: pd.DataFrame) -> str:
    """One paragraph stating the test, the correction and the thresholds behind a compare_to_baseline table."""
    check_columns(comparisons, ["baseline", "metric", "alpha", "min_effect", "confidence", "p_holm", "test"],
                  "comparisons")
    if comparisons.empty:
        raise InputError("comparisons is empty; there is nothing to describe")
    first = comparisons.iloc[0]
    unit = metric_unit(first["metric"])
    if (comparisons["test"] == EXAMPLE_TEST).all():
        how = (f"Gain = the system minus its reference, in {unit}, per test example averaged over the seeds both "
               f"ran, with its {first['confidence']:.0%} percentile bootstrap interval over test examples; test: "
               f"paired permutation test over test examples (the two systems swapped per example). This measures "
               f"the test set's sampling noise, not the spread between training seeds (see the seed-level table)")
    else:
        how = (f"Gain = mean over seeds of the system minus its reference, in {unit}, with its "
               f"{first['confidence']:.0%} t-interval; test: paired t-test over shared seeds (Welch's t-test when "
               f"fewer than 2 seeds are shared)")
    references = comparisons["baseline"].unique()
    against = (f"Each system is compared with {references[0]!r}" if len(references) == 1 else
               "Each system is compared with its own reference (the 'baseline' column)")
    return (f"{against} on {first['metric']} at the same target and train size. {how}. P-values are "
            f"Holm-Bonferroni adjusted across all {int(comparisons['p_holm'].notna().sum())} tested comparisons of "
            f"this table. Verdict: 'helps' or 'hurts (negative transfer)' ('better' or 'worse' for a target-only "
            f"baseline) when adjusted p < {first['alpha']:g} and |gain| >= {first['min_effect']:g} {unit}; "
            f"otherwise 'inconclusive'.")
