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
from fusionkit.evaluation.sequential import SeedDesign

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
_OUTPUT_COLUMNS = ("baseline", "metric", "gain", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "sentence",
                   "system", "test", "n_fused", "n_baseline", "confidence", "alpha", "min_effect", "comparisons",
                   "look", "looks")
FIXED = SeedDesign((1,))  # one look: every comparison judged once, on the seeds it has


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


def _gain_text(row: pd.Series) -> str:
    """The gain as the sentence shows it: one decimal, or two where one would round it onto the minimum effect
    (0.95 is not shown as +1.0 next to "below the minimum effect of 1")."""
    metric, gain, threshold = row["metric"], row["gain"], row["min_effect"]
    text = _number(gain, metric, signed=True)
    if metric in POINT_METRICS and threshold > 0 and (abs(float(text)) >= threshold) != (abs(gain) >= threshold):
        text = f"{gain:+.2f}"
    return f"{text} {metric_unit(metric)}"


def _sentence(row: pd.Series, match_on: Sequence[str]) -> str:
    metric = row["metric"]
    head = f"{row['system']} vs {row['baseline']} {_where(row, match_on)}: {_gain_text(row)}"
    if row["test"] == EXAMPLE_TEST:
        seeds = f"each example averaged over {row['n_fused']} shared seeds"
    elif row["test"] == PAIRED_T_TEST:
        seeds = f"{row['n_fused']} paired seeds"
    else:
        seeds = f"{row['n_fused']} vs {row['n_baseline']} seeds"
    if np.isnan(row["p_adjusted"]):
        return f"{head}, {row['test']} ({seeds}): {row['verdict']}"
    p_value = "p<0.001" if row["p_adjusted"] < 0.001 else f"p={row['p_adjusted']:.2g}"
    interval = (f"[simultaneous {1 - row['alpha']:.0%} interval {_number(row['ci_low'], metric)}, "
                f"{_number(row['ci_high'], metric)}]")
    look = f", look {row['look']} of {row['looks']}" if row["looks"] > 1 else ""
    return (f"{head} {interval}, {p_value} adjusted over {row['comparisons']} comparisons{look} ({row['test']}, "
            f"{seeds}): {row['verdict']}{_power_note(row)}")


def _power_note(row: pd.Series) -> str:
    """Why an inconclusive verdict is inconclusive, and what the design could detect (never from the observed
    effect: the detectable effect and the seeds needed come from the seed spread and the declared minimum effect)."""
    if row["verdict"] != INCONCLUSIVE:
        return ""
    unit = metric_unit(row["metric"])
    if row["p_adjusted"] < row["alpha"]:
        return f" (the interval excludes 0, but the gain is below the declared minimum effect of {row['min_effect']:g} {unit})"
    if "detectable_effect" not in row or not np.isfinite(row["detectable_effect"]):
        return ""
    needed = row["seeds_needed"]
    needed = (f"about {needed:.0f} seeds" if np.isfinite(needed) else "more seeds than is practical")
    minimum = (f"; a true effect of the minimum {row['min_effect']:g} would need {needed}" if row["min_effect"] > 0
               else "")
    return (f" (before the fact: with {row['n_fused']} seeds and a seed spread of {row['pooled_sd']:.1f} {unit}, "
            f"pooled over this table, the test at its adjusted alpha={row['alpha'] / row['comparisons']:.2g} "
            f"detects a true effect of {row['detectable_effect']:.1f} with {row['power']:.0%} power{minimum})")


def _tested_seeds(fused: pd.Series, baseline: pd.Series) -> int | None:
    """The seeds a seed-level test of the pair rests on (shared seeds when paired, the smaller side for Welch), or
    None when ``_seed_gain`` leaves it untested."""
    shared = fused.index.intersection(baseline.index)
    if len(shared) >= 2:
        spread = np.ptp(fused[shared].to_numpy() - baseline[shared].to_numpy())
        return len(shared) if spread > NO_SPREAD_TOLERANCE else None
    return min(len(fused), len(baseline)) if len(fused) >= 2 and len(baseline) >= 2 else None


def _family_gains(items: list, alpha: float, design: SeedDesign, metric: str, scale: float, predictions) -> tuple:
    """The gain of every (runs, reference runs, fused scores, reference scores) of one family, each interval at its
    share of ``alpha``: Bonferroni over the family's comparisons, and at the look its seeds reached under a
    staged ``design`` (``SeedDesign.nominal_level``); the example-level test is one look. Returns the gains,
    the family size, and each comparison's look (1-based)."""
    if predictions is not None:
        design = FIXED
        seeds = [len(set(runs["seed"]) & set(reference_runs["seed"])) for runs, reference_runs, *_ in items]
    else:
        seeds = [_tested_seeds(fused, reference) for *_, fused, reference in items]
    # every comparison of the family counts, tested or not: a staged study's family must not change between looks
    # (a comparison whose differences are all equal at one look may spread at the next)
    family = len(items)
    gains, looks = [], []
    for (runs, reference_runs, fused, reference), n in zip(items, seeds):
        confidence = 1 - design.nominal_level(n or 0, alpha, family)
        looks.append(design.look_of(n if n is not None else min(len(fused), len(reference))) + 1)
        gains.append(_seed_gain(fused, reference, confidence) if predictions is None else
                     _example_gain(runs, reference_runs, predictions, metric, confidence, scale))
    return gains, family, looks


def _with_power(table: pd.DataFrame, power: float) -> pd.DataFrame:
    """The seed spread of each seed-level comparison (``sd_difference``), the spread pooled over the table's
    comparisons (``pooled_sd``: few seeds make one comparison's spread too noisy to plan with), and from the pooled
    spread, at the family's adjusted alpha (``alpha / comparisons``, Bonferroni): the smallest true effect the seeds
    it ran detect with ``power`` (``detectable_effect``) and the seeds the declared minimum effect needs
    (``seeds_needed``). Power is planned from spreads and the declared effect, never from the observed gain."""
    tested = table["sd_difference"].notna() & (table["n_fused"] >= 2)
    freedom = (table.loc[tested, "n_fused"] - 1).astype(float)
    pooled = (float(np.sqrt((freedom * table.loc[tested, "sd_difference"] ** 2).sum() / freedom.sum()))
              if freedom.sum() > 0 else np.nan)
    table["pooled_sd"], table["power"] = np.where(tested, pooled, np.nan), power
    level = table["alpha"] / table["comparisons"].clip(lower=1)
    table["detectable_effect"] = [detectable_effect(pooled, int(n), a, power) if ok else np.nan
                                  for ok, n, a in zip(tested, table["n_fused"], level)]
    table["seeds_needed"] = [seeds_needed(effect, pooled, a, power) if ok and effect > 0 else np.nan
                             for ok, effect, a in zip(tested, table["min_effect"], level)]
    return table


def _seed_spread(fused: pd.Series, reference: pd.Series) -> float:
    shared = fused.index.intersection(reference.index)
    differences = fused[shared].to_numpy() - reference[shared].to_numpy()
    if len(differences) < 2 or np.ptp(differences) <= NO_SPREAD_TOLERANCE:
        return np.nan
    return float(differences.std(ddof=1))


def _judged(gains: list[Gain], family: int, looks: list[int], design: SeedDesign, alpha: float, min_effect: float,
            metric: str) -> pd.DataFrame:
    table = judge_gains(gains, alpha, min_effect, higher_is_better=metric not in LOWER_IS_BETTER)
    table["comparisons"], table["look"], table["looks"] = family, looks, len(design.looks)
    return table


def compare_pairs(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str = "accuracy",
                  alpha: float = 0.05, min_effect: float = 0.0,
                  match_on: Sequence[str] = ("target", "train_size"),
                  predictions: Callable[[str], tuple] | None = None, power: float = 0.8,
                  words: Mapping[str, str] | None = None, design: SeedDesign | None = None) -> pd.DataFrame:
    """Each ``(system, control)`` of ``pairs`` at the same ``match_on`` values: the gain of the system over its
    own control (a matched control, the best baseline, the system without one of its sources...), judged as one
    family at a declared error rate.

    ``results`` has one row per run and system, with columns system, seed, match_on and ``metric`` (and run_id
    with ``predictions``). Each gain has one interval, the one a report draws and a verdict reads: the paired
    t-interval over shared seeds (Welch's with fewer than 2 shared; with ``predictions``, the percentile bootstrap
    over test examples, a secondary view) at the comparison's share of ``alpha``: Bonferroni over the family's
    comparisons (tested or not, so that the family is the same at every look), and with a staged ``design`` (``evaluation.sequential.SeedDesign``) the nominal level of
    the look its seeds reached, so the intervals are simultaneous over comparisons and looks. The verdict is one of
    four (``gains.outcome``): helps / hurts (negative transfer) when the interval excludes 0 and |gain| >=
    min_effect, equivalent when it lies inside +/- min_effect, else inconclusive; ``p_adjusted`` < alpha exactly
    when the interval excludes 0. Seed-level rows also carry the power planned before the fact (``_with_power``:
    the seed spread pooled over the table, the effect detectable with ``power`` at the adjusted alpha and the
    seeds ``min_effect`` needs). A pair whose sides share no match_on values is left out. A seed-free run
    (``seed_free`` column, run once) stands for every seed of the other side.
    """
    match_on = list(match_on)
    check_columns(results, [*match_on, "system", "seed", metric])
    scale = 100.0 if metric in POINT_METRICS else 1.0
    design = design or FIXED
    by_system = {system: runs for system, runs in results.groupby("system")}
    for system in {name for pair in pairs for name in pair} - set(by_system):
        raise InputError(f"system {system!r} has no runs; systems present: {sorted(by_system)}")
    rows, items = [], []
    for system, control in pairs:
        references = dict(list(by_system[control].groupby(match_on, dropna=False)))
        for key, runs in by_system[system].groupby(match_on, dropna=False):
            if key not in references:
                continue
            where = _describe(match_on, key)
            runs, reference_runs = _for_seeds(runs, references[key]["seed"]), _for_seeds(references[key], runs["seed"])
            fused = _by_seed(runs, metric, f"{system!r} at {where}") * scale
            reference = _by_seed(reference_runs, metric, f"{control!r} at {where}") * scale
            items.append((runs, reference_runs, fused, reference))
            rows.append({**dict(zip(match_on, key)), "system": system, "baseline": control,
                         "sd_difference": _seed_spread(fused, reference) if predictions is None else np.nan})
    gains, family, looks = _family_gains(items, alpha, design, metric, scale, predictions)
    table = _judged(gains, family, looks, design, alpha, min_effect, metric)
    table = pd.concat([pd.DataFrame(rows, columns=[*match_on, "system", "baseline", "sd_difference"]), table], axis=1)
    table = _with_power(table, power)
    table["verdict"] = table["verdict"].replace(dict(words or {}))
    table["metric"] = metric
    table["sentence"] = [_sentence(row, match_on) for _, row in table.iterrows()]
    return table[[*match_on, "system", "baseline", "metric", "gain", "ci_low", "ci_high", "p_value", "p_adjusted",
                  "verdict", "test", "n_fused", "n_baseline", "confidence", "alpha", "min_effect", "comparisons",
                  "look", "looks", "sd_difference", "pooled_sd", "detectable_effect", "seeds_needed", "power",
                  "sentence"]]


def compare_to_baseline(results: pd.DataFrame, baseline: str, metric: str = "accuracy", alpha: float = 0.05,
                        min_effect: float = 0.0, match_on: Sequence[str] = ("target", "train_size"),
                        distinguish_by: Sequence[str] = (), name_column: str | None = None,
                        predictions: Callable[[str], tuple] | None = None) -> pd.DataFrame:
    """Each system (strategy, sources, *distinguish_by) against the `baseline` strategy at the same match_on values.

    results has one row per run with columns match_on, strategy, sources, distinguish_by, seed and
    `metric`; distinguish_by names columns (e.g. "system" or "knobs") that split one strategy into
    several systems. The gain is mean(system) - mean(baseline), in points (x100) for POINT_METRICS.
    Seeds run by both sides are paired: with 2 or more shared seeds the paired t-test and its t-interval
    over those seeds; otherwise Welch's t-test over all seeds; with fewer than 2 seeds on a side, no
    test ("inconclusive"). The intervals are simultaneous over every row (Bonferroni, as
    ``compare_pairs``), and so is the verdict read from them (``gains.outcome``: helps, hurts (negative
    transfer), equivalent or inconclusive; ``p_adjusted`` < alpha exactly when the interval excludes 0).
    One row per system and match_on values, with a display name in `system`: the value
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
    keys, items = [], []
    for key, runs in results[~is_baseline].groupby([*match_on, *system], dropna=False):
        where = _describe(match_on, key)
        if key[:len(match_on)] not in baselines:
            raise InputError(f"no {baseline!r} runs at {where} to compare "
                             f"{_describe(system, key[len(match_on):])} with")
        baseline_runs = baselines[key[:len(match_on)]]
        fused = _by_seed(runs, metric, _describe([*match_on, *system], key)) * scale
        reference = _by_seed(baseline_runs, metric, f"baseline {baseline!r} at {where}") * scale
        keys.append(key)
        items.append((runs, baseline_runs, fused, reference))
    gains, family, looks = _family_gains(items, alpha, FIXED, metric, scale, predictions)
    table = _judged(gains, family, looks, FIXED, alpha, min_effect, metric)
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
    """One paragraph stating the test, the interval, the error rate and the thresholds behind a comparisons table."""
    check_columns(comparisons, ["baseline", "metric", "alpha", "min_effect", "comparisons", "looks", "test"],
                  "comparisons")
    if comparisons.empty:
        raise InputError("comparisons is empty; there is nothing to describe")
    first = comparisons.iloc[0]
    unit = metric_unit(first["metric"])
    if (comparisons["test"] == EXAMPLE_TEST).all():
        how = (f"Gain = the system minus its reference, in {unit}, per test example averaged over the seeds both "
               f"ran, with its percentile bootstrap interval over test examples; test: paired permutation test over "
               f"test examples (the two systems swapped per example). This measures the test set's sampling noise, "
               f"not the spread between training seeds (see the seed-level table)")
    else:
        how = (f"Gain = mean over seeds of the system minus its reference, in {unit}, with its t-interval; test: "
               f"paired t-test over shared seeds (Welch's t-test when fewer than 2 seeds are shared)")
    references = comparisons["baseline"].unique()
    against = (f"Each system is compared with {references[0]!r}" if len(references) == 1 else
               "Each system is compared with its own reference (the 'baseline' column)")
    family, alpha = int(first["comparisons"]), first["alpha"]
    staged = (f"; seeds came in stages, {int(first['looks'])} looks, and each comparison spends its share over the "
              f"looks (Lan-DeMets O'Brien-Fleming alpha spending), so it may stop at any look" if first["looks"] > 1
              else "")
    return (f"{against} on {first['metric']} at the same target and train size. {how}. Every interval is "
            f"simultaneous at {1 - alpha:.0%} over the {family} comparisons of this table (Bonferroni: each at "
            f"alpha {alpha:g}/{family}{staged}), and the verdict reads that interval: 'helps' or 'hurts (negative "
            f"transfer)' ('better' or 'worse' for a target-only baseline) when it excludes 0 and |gain| >= "
            f"{first['min_effect']:g} {unit}; 'equivalent' when it lies inside +/-{first['min_effect']:g} (two "
            f"one-sided tests); otherwise 'inconclusive'. The adjusted p-value is below {alpha:g} exactly when the "
            f"interval excludes 0.")
