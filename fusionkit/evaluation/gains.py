"""Did fusion help? Gains over a baseline across seeds, negative transfer, forgetting, learning curves, cost."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import (as_checked_array, brier_per_example, check_columns, check_in_range, check_lengths,
                               check_positive_int, correct, nll_per_example)
from fusionkit.evaluation.stats import paired_t, seed_scores, welch_t

HELPS = "helps"
HURTS = "hurts (negative transfer)"
INCONCLUSIVE = "inconclusive"
EQUIVALENT = "equivalent"  # the interval inside +/- min_effect: the difference is too small to matter
GAIN_METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class Gain:
    """Mean gain of fused over baseline scores (fused - baseline), in the scores' own units."""
    absolute: float
    relative: float          # absolute / |mean baseline|
    ci_low: float
    ci_high: float
    relative_ci_low: float   # the absolute interval over |mean baseline|, which is treated as fixed
    relative_ci_high: float
    p_value: float           # always from the t-test named in `test`, whichever interval `method` gave
    test: str
    method: str
    confidence: float
    n_fused: int
    n_baseline: int


@dataclass(frozen=True)
class Cost:
    """What a run cost, stored beside its scores (ResultsStore.put(..., cost=Cost(...).as_dict()))."""
    trainable_params: int
    train_seconds: float
    infer_ms_per_example: float
    model_flops: float = 0.0  # training and test-set inference of the run, 6N / 2N per token (see modeling.heads)
    inference_params: int = 0  # every parameter the fitted model runs at inference, frozen encoders included
    encoders_at_inference: int = 0  # transformer encoders it runs per text (representation: the base and experts)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
                raise InputError(f"{field.name} must be a finite number >= 0, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _bootstrap_interval(fused: np.ndarray, baseline: np.ndarray, paired: bool, confidence: float,
                        n_resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    if paired:
        differences = fused - baseline
        means = differences[rng.integers(0, len(differences), (n_resamples, len(differences)))].mean(axis=1)
    else:
        means = (fused[rng.integers(0, len(fused), (n_resamples, len(fused)))].mean(axis=1)
                 - baseline[rng.integers(0, len(baseline), (n_resamples, len(baseline)))].mean(axis=1))
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def transfer_gain(fused_scores, baseline_scores, paired: bool = True, confidence: float = 0.95,
                  method: str = "t", n_resamples: int = 10_000, seed: int = 0) -> Gain:
    """Gain of fused over baseline per-seed scores, with a confidence interval and a p-value.

    paired=True pairs fused_scores[i] with baseline_scores[i] (same seed) and uses the paired t-test;
    paired=False uses Welch's t-test. method="t" gives the t-interval matching that test (the default:
    honest with the 3-10 seeds typical here); method="bootstrap" gives a percentile bootstrap over seeds.
    """
    fused, baseline = seed_scores(fused_scores, "fused_scores"), seed_scores(baseline_scores, "baseline_scores")
    if method not in GAIN_METHODS:
        raise InputError(f"method must be one of {GAIN_METHODS}, got {method!r}")
    if paired:
        check_lengths("seeds", fused_scores=fused, baseline_scores=baseline)
    result = (paired_t if paired else welch_t)(fused, baseline, confidence)
    low, high = result.ci_low, result.ci_high
    if method == "bootstrap":
        check_positive_int(n_resamples, "n_resamples")
        low, high = _bootstrap_interval(fused, baseline, paired, confidence, n_resamples, seed)
    scale = abs(baseline.mean())
    relative = np.divide([result.mean_difference, low, high], scale) if scale > 0 else np.full(3, np.nan)
    return Gain(result.mean_difference, float(relative[0]), low, high, float(relative[1]), float(relative[2]),
                result.p_value, result.test, method, confidence, len(fused), len(baseline))


EXAMPLE_TEST = "paired permutation test over test examples"
# Metrics that are a mean over examples, so a per-example difference exists to resample and permute.
PER_EXAMPLE = {"accuracy": lambda y, probs: correct(y, probs.argmax(axis=1)), "nll": nll_per_example,
               "brier": brier_per_example}


def example_gain(y, fused_probs: Sequence, baseline_probs: Sequence, metric: str = "accuracy",
                 confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> Gain:
    """Gain of fused over baseline on one test set, judged over its examples, from one or more seeds.

    fused_probs[s] and baseline_probs[s] are the two systems' test probabilities for seed s. Each example's
    difference in `metric` is averaged over the seeds; the interval is a percentile bootstrap over examples
    and the p-value a two-sided sign-flip permutation test (swap the two systems per example). This asks
    "is the difference larger than this test set's sampling noise?"; the seed-level t-test asks whether
    it survives retraining. Report both: with few seeds only this one has power.
    """
    if metric not in PER_EXAMPLE:
        raise InputError(f"an example-level gain needs a per-example metric ({', '.join(PER_EXAMPLE)}), "
                         f"got {metric!r}")
    if len(fused_probs) != len(baseline_probs) or not len(fused_probs):
        raise InputError(f"need the same number (>= 1) of fused and baseline seeds, got {len(fused_probs)} "
                         f"and {len(baseline_probs)}")
    check_in_range(confidence, "confidence", 0.0, 1.0)
    check_positive_int(n_resamples, "n_resamples")
    score = PER_EXAMPLE[metric]
    differences = np.mean([score(y, f) - score(y, b) for f, b in zip(fused_probs, baseline_probs)], axis=0)
    observed = float(differences.mean())
    rng = np.random.default_rng(seed)
    resampled = differences[rng.integers(0, len(differences), (n_resamples, len(differences)))].mean(axis=1)
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    flipped = (differences * rng.choice([-1.0, 1.0], size=(n_resamples, len(differences)))).mean(axis=1)
    p_value = float((1 + np.sum(np.abs(flipped) >= abs(observed) - 1e-12)) / (1 + n_resamples))
    baseline_mean = float(np.mean([score(y, b).mean() for b in baseline_probs]))
    relative = np.divide([observed, low, high], abs(baseline_mean)) if baseline_mean else np.full(3, np.nan)
    return Gain(observed, float(relative[0]), float(low), float(high), float(relative[1]), float(relative[2]),
                p_value, EXAMPLE_TEST, "bootstrap", confidence, len(fused_probs), len(baseline_probs))


def outcome(gain: float, low: float, high: float, min_effect: float = 0.0, higher_is_better: bool = True) -> str:
    """Four outcomes read from one interval (the one a report draws): HELPS / HURTS when the whole interval lies
    beyond 0 and the gain is at least ``min_effect`` (the better side per ``higher_is_better``); EQUIVALENT when the
    interval lies inside +/- ``min_effect`` (two one-sided tests, Schuirmann 1987, each at half the interval's
    level); INCONCLUSIVE otherwise, or without an interval."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if (low > 0 or high < 0) and abs(gain) >= min_effect:
        return HELPS if (gain > 0) == higher_is_better else HURTS
    if min_effect > 0 and -min_effect < low and high < min_effect:
        return EQUIVALENT
    return INCONCLUSIVE


def judge_gains(gains: Sequence[Gain], alpha: float = 0.05, min_effect: float = 0.0,
                higher_is_better: bool = True) -> pd.DataFrame:
    """One row per gain with its verdict (``outcome``) read from its own interval, and its p-value adjusted to
    that interval's level: ``p_adjusted = min(1, p * alpha / level)`` with ``level = 1 - confidence``, so that
    p_adjusted < alpha exactly when the interval excludes 0. Give gains whose intervals are already the
    simultaneous ones (``verdicts.compare_pairs`` computes each at its share of alpha: Bonferroni over the
    family, and the look's spending in a staged design); a gain at 95% judged at alpha 0.05 is judged as it is.
    The thresholds alpha and min_effect (in the gains' units) are columns of every row.
    """
    check_in_range(alpha, "alpha", 0.0, 1.0)
    if not np.isfinite(min_effect) or min_effect < 0:
        raise InputError(f"min_effect must be a finite number >= 0, got {min_effect!r}")
    table = pd.DataFrame([asdict(gain) for gain in gains], columns=[f.name for f in fields(Gain)])
    table = table.rename(columns={"absolute": "gain"})
    level = 1 - table["confidence"].astype(float)
    table["p_adjusted"] = np.minimum(1.0, table["p_value"] * alpha / level)
    table["alpha"], table["min_effect"] = alpha, min_effect
    table["verdict"] = [outcome(gain, low, high, min_effect, higher_is_better) if np.isfinite(p) else INCONCLUSIVE
                        for gain, low, high, p in zip(table["gain"], table["ci_low"], table["ci_high"],
                                                      table["p_value"])]
    return table


def negative_transfer(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The rows of a comparisons table (``verdicts.compare_to_baseline`` or ``judge_gains``) that show negative
    transfer: the system is significantly worse than its baseline (verdict HURTS: the simultaneous interval below 0
    and the loss at least min_effect). The test and the thresholds are the table's own columns."""
    check_columns(comparisons, ["verdict"], "comparisons")
    return comparisons[comparisons["verdict"] == HURTS].reset_index(drop=True)


FAILED_FAR_BELOW = 0.10  # validation accuracy this far below the linear probe's at the same size: a failed run


def failed_runs(val_accuracy, majority_rate: float, probe_val_accuracy: float | None = None,
                far_below: float = FAILED_FAR_BELOW) -> np.ndarray:
    """Which training runs failed, from their validation accuracy: at or below the majority-class rate of the
    validation split (the degenerate runs Dodge et al. 2020, "Fine-Tuning Pretrained Language Models: Weight
    Initializations, Data Orders, and Early Stopping", and Mosbach et al. 2021 count), or more than ``far_below``
    below ``probe_val_accuracy``, a linear probe of the base encoder at the same training size (a fine-tuned
    encoder that falls that far below its frozen features has not learned the task). A boolean per run. A report
    counts them per system beside the means, which keep them: they are outcomes of the recipe."""
    accuracy = as_checked_array(val_accuracy, "val_accuracy", ndim=1)
    if not 0 <= majority_rate <= 1:
        raise InputError(f"majority_rate must be in [0, 1], got {majority_rate!r}")
    if not 0 <= far_below <= 1:
        raise InputError(f"far_below must be in [0, 1], got {far_below!r}")
    failed = accuracy <= majority_rate + 1e-12
    if probe_val_accuracy is not None and np.isfinite(probe_val_accuracy):
        failed |= accuracy < probe_val_accuracy - far_below
    return failed


def forgetting(source_score_before: float, source_score_after: float) -> float:
    """Drop in a source task's (higher-is-better) score after fusion; positive means it was forgotten."""
    before = as_checked_array(source_score_before, "source_score_before", ndim=0)
    after = as_checked_array(source_score_after, "source_score_after", ndim=0)
    return float(before - after)


def learning_curve(results: pd.DataFrame, metric: str, by: Sequence[str] = ("target", "strategy", "sources"),
                   confidence: float = 0.95) -> pd.DataFrame:
    """Mean of `metric` over seeds per group and train size, with a t-interval (NaN for a single seed).

    Returns columns *by, train_size, mean, ci_low, ci_high, n_seeds, sorted by group and train size.
    """
    check_columns(results, [*by, "train_size", metric])
    check_in_range(confidence, "confidence", 0.0, 1.0)
    table = (results.groupby([*by, "train_size"], dropna=False)[metric]
             .agg(mean="mean", std="std", n_seeds="count").reset_index())
    with np.errstate(invalid="ignore", divide="ignore"):
        half_width = (scipy.stats.t.ppf((1 + confidence) / 2, table["n_seeds"] - 1)
                      * table["std"] / np.sqrt(table["n_seeds"]))
    table["ci_low"], table["ci_high"] = table["mean"] - half_width, table["mean"] + half_width
    return table[[*by, "train_size", "mean", "ci_low", "ci_high", "n_seeds"]]


def aulc(sizes, scores, log_x: bool = True) -> float:
    """Area under the learning curve, by the trapezoid rule, divided by the x-range (so in [0, 1] for scores in [0, 1]).

    x is log2(train size) by default, so each doubling of data weighs the same. Sizes must be distinct:
    average the seeds first.
    """
    sizes = as_checked_array(sizes, "sizes", ndim=1).astype(np.float64)
    scores = as_checked_array(scores, "scores", ndim=1).astype(np.float64)
    check_lengths("train sizes", sizes=sizes, scores=scores)
    if sizes.min() <= 0:
        raise InputError(f"sizes must be positive train sizes, got {sizes.min():g}")
    distinct, counts = np.unique(sizes, return_counts=True)
    if len(distinct) < 2 or counts.max() > 1:
        raise InputError(f"sizes must hold at least 2 distinct train sizes, each once (average seeds first); "
                         f"got {sizes.tolist()}")
    order = np.argsort(sizes)
    x = np.log2(sizes[order]) if log_x else sizes[order]
    return float(np.trapezoid(scores[order], x) / (x[-1] - x[0]))
