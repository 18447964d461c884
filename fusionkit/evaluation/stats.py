"""Uncertainty and significance: example-level bootstrap and permutation, seed-level tests, ASO, Holm, Friedman."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats

from fusionkit.evaluation import metrics
from fusionkit.errors import ConfigError, InputError
from fusionkit.evaluation.metrics import (as_checked_array, check_columns, check_in_range, check_lengths,
                                          check_positive_int)

# One block of resampling indices holds at most this many entries (16 MB), whatever n and n_resamples.
_CHUNK_ELEMENTS = 2_000_000
# Permuted statistics that equal the observed one up to float noise must count as ties, not as smaller.
_TIE_TOLERANCE = 1e-12
PAIRED_T_TEST = "paired t-test"

Metric = str | Callable[..., float]
RowStatistic = Callable[[np.ndarray], np.ndarray]  # index rows [b, m] -> the metric on each row's examples


class Interval(NamedTuple):
    point: float
    low: float
    high: float


@dataclass(frozen=True)
class SignificanceResult:
    test: str
    statistic: float
    p_value: float


@dataclass(frozen=True)
class TTestResult(SignificanceResult):
    """A t-test plus the t-interval of the mean difference (a - b) it implies."""
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    df: float


@dataclass(frozen=True)
class FriedmanResult:
    statistic: float
    p_value: float
    avg_ranks: pd.Series  # method -> average rank, 1 = best, sorted best first
    cd: float             # Nemenyi critical difference of average ranks
    q_alpha: float
    alpha: float
    n_datasets: int
    n_methods: int


# ---------------------------------------------------------------- example-level resampling

def _predictions(y, array) -> np.ndarray:
    # A probability matrix stands for its argmax, so label metrics accept predictions or probabilities.
    if np.ndim(array) == 2:
        return metrics.labels_and_probs(y, array)[1].argmax(axis=1)
    return np.asarray(array)


_MEAN_OF_PER_EXAMPLE = {
    "accuracy": lambda y, array: metrics.correct(y, _predictions(y, array)),
    "nll": metrics.nll_per_example,
    "brier": metrics.brier_per_example,
}
_FROM_CONFUSION = {"macro_f1": metrics.macro_f1_from_confusion, "mcc": metrics.mcc_from_confusion}
_LOOPED = {"ece": metrics.ece}
METRIC_NAMES = (*_MEAN_OF_PER_EXAMPLE, *_FROM_CONFUSION, *_LOOPED)


def _looped(metric: Callable[..., float], y, arrays) -> RowStatistic:
    y = as_checked_array(y, "y")
    arrays = [as_checked_array(array, f"arrays[{i}]") for i, array in enumerate(arrays)]
    check_lengths(y=y, **{f"arrays[{i}]": array for i, array in enumerate(arrays)})
    return lambda rows: np.array([metric(y[row], *(array[row] for array in arrays)) for row in rows], dtype=float)


def _confusion_statistic(from_confusion, y, array) -> RowStatistic:
    labels, pred = metrics.labels_and_pred(y, _predictions(y, array))
    k = int(max(labels.max(), pred.max())) + 1
    cells = labels * k + pred

    def statistic(rows: np.ndarray) -> np.ndarray:
        # One bincount fills every row's confusion matrix: row r's cells are shifted by r * k * k.
        shifted = cells[rows] + (np.arange(len(rows)) * k * k)[:, None]
        return from_confusion(np.bincount(shifted.ravel(), minlength=len(rows) * k * k).reshape(-1, k, k))
    return statistic


def _row_statistic(metric: Metric, y, arrays: tuple) -> RowStatistic:
    """The metric as a function of index rows: vectorised for named metrics, a loop for other callables."""
    if callable(metric):
        return _looped(metric, y, arrays)
    if metric not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)} or pass a callable")
    if len(arrays) != 1:
        raise InputError(f"metric {metric!r} takes y and one array (pred or probs), got {len(arrays)} arrays")
    if metric in _MEAN_OF_PER_EXAMPLE:
        values = _MEAN_OF_PER_EXAMPLE[metric](y, arrays[0])
        return lambda rows: values[rows].mean(axis=1)
    if metric in _FROM_CONFUSION:
        return _confusion_statistic(_FROM_CONFUSION[metric], y, arrays[0])
    return _looped(_LOOPED[metric], y, arrays)


def _resampled(n_resamples: int, row_length: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // row_length)
    starts = range(0, n_resamples, rows_per_chunk)
    return np.concatenate([draw(min(rows_per_chunk, n_resamples - start)) for start in starts])


def bootstrap_ci(metric: Metric, y, *arrays, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap over examples of metric(y, *arrays): (point, low, high), by ``scipy.stats.bootstrap``.

    `metric` is a name from METRIC_NAMES (label metrics accept predictions or a probability matrix,
    whose argmax is used) or any callable. scipy resamples example indices; named metrics are vectorised
    over a whole batch of resamples, a callable is called once per resample.
    """
    check_positive_int(n_resamples, "n_resamples")
    check_in_range(confidence, "confidence", 0.0, 1.0)
    statistic = _row_statistic(metric, y, arrays)
    n = len(np.asarray(y))
    point = float(statistic(np.arange(n)[None, :])[0])
    result = scipy.stats.bootstrap((np.arange(n),), lambda rows, axis=-1: statistic(np.atleast_2d(rows)),
                                   vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                                   method="percentile", rng=np.random.default_rng(seed),
                                   batch=max(1, _CHUNK_ELEMENTS // n))
    return Interval(point, float(result.confidence_interval.low), float(result.confidence_interval.high))


def paired_permutation_test(metric: Metric, y, a, b, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that systems a and b (predictions or probs on the same examples) score equally.

    Each resample swaps a's and b's outputs on a random half of the examples; the observed split
    counts as one resample, so p = (count + 1) / (n_resamples + 1) is never 0. This is the test
    ``scipy.stats.permutation_test(permutation_type="samples")`` runs, kept here because scipy defines the
    two-sided p-value as twice the smaller one-sided one rather than by |difference|, and draws its swaps
    from another stream: its p-values differ by Monte Carlo noise (e.g. 0.107 against 0.099 at 2000 resamples).
    """
    check_positive_int(n_resamples, "n_resamples")
    a, b = as_checked_array(a, "a"), as_checked_array(b, "b")
    if a.shape != b.shape:
        raise InputError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    y = as_checked_array(y, "y")
    n = check_lengths(y=y, a=a)
    # a's examples are rows 0..n-1 and b's are n..2n-1 of one stacked set, so a swap is just an index.
    statistic = _row_statistic(metric, np.concatenate([y, y]), (np.concatenate([a, b]),))
    own = np.arange(n)
    observed = (statistic(own[None, :]) - statistic(own[None, :] + n))[0]
    rng = np.random.default_rng(seed)

    def permuted(size: int) -> np.ndarray:
        swap = rng.integers(0, 2, size=(size, n)).astype(bool)
        return statistic(own + n * swap) - statistic(own + n * ~swap)
    differences = _resampled(n_resamples, n, permuted)
    count = np.count_nonzero(np.abs(differences) >= abs(observed) - _TIE_TOLERANCE)
    return float((count + 1) / (n_resamples + 1))


# ---------------------------------------------------------------- seed-level tests

def seed_scores(value, name: str) -> np.ndarray:
    """Return one score per seed as a float array, or raise if there are fewer than 2 seeds."""
    scores = as_checked_array(value, name, ndim=1).astype(np.float64)
    if len(scores) < 2:
        raise InputError(f"{name} has {len(scores)} seed score(s); a seed-level test needs at least 2")
    return scores


def _t_result(test: str, difference: float, standard_error: float, df: float, confidence: float) -> TTestResult:
    check_in_range(confidence, "confidence", 0.0, 1.0)
    if standard_error == 0:
        # No spread across seeds: t is 0/0 or ±inf; take the limit rather than return NaN.
        statistic = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
        return TTestResult(test, statistic, float(difference == 0), difference, difference, difference, confidence, df)
    statistic = difference / standard_error
    p_value = 2 * scipy.stats.t.sf(abs(statistic), df)
    half_width = scipy.stats.t.ppf((1 + confidence) / 2, df) * standard_error
    return TTestResult(test, float(statistic), float(p_value), float(difference),
                       float(difference - half_width), float(difference + half_width), confidence, float(df))


def paired_t(a, b, confidence: float = 0.95) -> TTestResult:
    """Paired t-test over seeds (a[i] and b[i] share seed i), with the t-interval of mean(a - b)."""
    a, b = seed_scores(a, "a"), seed_scores(b, "b")
    check_lengths("seeds", a=a, b=b)
    difference = a - b
    standard_error = difference.std(ddof=1) / np.sqrt(len(difference))
    return _t_result(PAIRED_T_TEST, float(difference.mean()), standard_error, len(difference) - 1, confidence)


MAX_SEEDS_REPORTED = 10_000  # beyond it "seeds needed" says "more than"


def paired_t_power(effect_size: float, n_seeds: int, alpha: float = 0.05) -> float:
    """Probability that a two-sided paired t-test over ``n_seeds`` seeds rejects at level ``alpha`` when the true
    mean difference is ``effect_size`` standard deviations of the per-seed differences (noncentral t)."""
    df = n_seeds - 1
    critical = scipy.stats.t.ppf(1 - alpha / 2, df)
    noncentrality = abs(effect_size) * np.sqrt(n_seeds)
    upper = scipy.stats.nct.sf(critical, df, noncentrality)
    lower = scipy.stats.nct.cdf(-critical, df, noncentrality)
    # scipy's noncentral t gives NaN deep in a tail: there the upper tail is 1 and the lower one 0.
    return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0))


def detectable_effect(spread: float, n_seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired t-test over ``n_seeds`` seeds detects with
    probability ``power`` at level ``alpha``, when the per-seed differences have standard deviation ``spread``
    (in the same units); NaN with fewer than 2 seeds."""
    check_in_range(alpha, "alpha", 0.0, 1.0)
    check_in_range(power, "power", 0.0, 1.0)
    if n_seeds < 2 or not np.isfinite(spread) or spread < 0:
        return np.nan
    size = scipy.optimize.brentq(lambda d: paired_t_power(d, n_seeds, alpha) - power, 1e-9, 1e3)
    return float(size * spread)


def seeds_needed(effect: float, spread: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """How many seeds a two-sided paired t-test needs to detect a true mean difference ``effect`` with
    probability ``power`` at level ``alpha``, when per-seed differences have standard deviation ``spread``;
    at least 2; ``inf`` for a zero effect or beyond ``MAX_SEEDS_REPORTED``."""
    check_in_range(alpha, "alpha", 0.0, 1.0)
    check_in_range(power, "power", 0.0, 1.0)
    if not np.isfinite(spread) or not np.isfinite(effect) or spread < 0:
        return np.nan
    if effect == 0:
        return np.inf
    if spread == 0:
        return 2.0
    size = abs(effect) / spread
    if paired_t_power(size, MAX_SEEDS_REPORTED, alpha) < power:
        return np.inf
    low, high = 1, MAX_SEEDS_REPORTED  # power grows with the seeds: the smallest count that reaches it
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if paired_t_power(size, middle, alpha) >= power else (middle, high)
    return float(max(2, high))


def welch_t(a, b, confidence: float = 0.95) -> TTestResult:
    """Welch's unequal-variance t-test, with the Welch-Satterthwaite t-interval of mean(a) - mean(b)."""
    a, b = seed_scores(a, "a"), seed_scores(b, "b")
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    spread = var_a + var_b
    df = spread ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1)) if spread > 0 else np.nan
    return _t_result("Welch's t-test", float(a.mean() - b.mean()), np.sqrt(spread), df, confidence)


def mann_whitney(a, b) -> SignificanceResult:
    """Two-sided Mann-Whitney U test of two independent sets of seed scores."""
    a, b = seed_scores(a, "a"), seed_scores(b, "b")
    result = scipy.stats.mannwhitneyu(a, b, alternative="two-sided")
    return SignificanceResult("Mann-Whitney U test", float(result.statistic), float(result.pvalue))


def wilcoxon_signed_rank(a, b) -> SignificanceResult:
    """Two-sided Wilcoxon signed-rank test of paired seed scores (a[i] and b[i] share seed i)."""
    a, b = seed_scores(a, "a"), seed_scores(b, "b")
    check_lengths("seeds", a=a, b=b)
    if np.all(a == b):
        # scipy returns NaN when every difference is zero; there is simply no evidence of a difference.
        return SignificanceResult("Wilcoxon signed-rank test", 0.0, 1.0)
    result = scipy.stats.wilcoxon(a, b)
    return SignificanceResult("Wilcoxon signed-rank test", float(result.statistic), float(result.pvalue))


# ---------------------------------------------------------------- almost stochastic order

def _violation_ratios(sorted_a: np.ndarray, sorted_b: np.ndarray, dt: float) -> np.ndarray:
    """Violation ratio of each row pair of sorted samples [r, n_a], [r, n_b], as deepsig computes it."""
    grid = np.arange(dt, 1, dt)
    quantile_a = sorted_a[:, np.clip(np.ceil(sorted_a.shape[1] * grid).astype(int) - 1, 0, None)]
    quantile_b = sorted_b[:, np.clip(np.ceil(sorted_b.shape[1] * grid).astype(int) - 1, 0, None)]
    gap = quantile_b - quantile_a
    squared_distance = (gap ** 2).sum(axis=1) * dt
    # Only quantiles where a falls below b violate "a is better"; deepsig leaves out the first grid point.
    violation = (np.where(quantile_a < quantile_b, gap, 0.0)[:, 1:] ** 2).sum(axis=1) * dt
    return np.divide(violation, squared_distance, out=np.full(len(gap), 0.5), where=squared_distance > 0)


def violation_ratio(scores_a, scores_b, dt: float = 0.005) -> float:
    """Share of the squared Wasserstein distance where a's quantiles fall below b's (ASO's epsilon_W2)."""
    a, b = seed_scores(scores_a, "scores_a"), seed_scores(scores_b, "scores_b")
    return float(_violation_ratios(np.sort(a)[None, :], np.sort(b)[None, :], dt)[0])


def aso(scores_a, scores_b, confidence: float = 0.95, n_bootstrap: int = 1000, seed: int = 0,
        dt: float = 0.005) -> float:
    """Almost Stochastic Order eps_min (Dror et al. 2019, del Barrio et al. 2018), as deepsig 1.2.x computes it.

    eps_min < 0.5 means a is almost stochastically better than b (higher scores are better); near 0
    a dominates, near 1 b dominates. No Bonferroni adjustment is applied here: correct `confidence` yourself.
    """
    a, b = seed_scores(scores_a, "scores_a"), seed_scores(scores_b, "scores_b")
    check_in_range(confidence, "confidence", 0.0, 1.0)
    check_positive_int(n_bootstrap, "n_bootstrap")
    observed = _violation_ratios(np.sort(a)[None, :], np.sort(b)[None, :], dt)[0]
    rng = np.random.default_rng(seed)
    # Sampling an empirical quantile function at uniform points is resampling the scores with replacement.
    boot_a = np.sort(rng.choice(a, size=(n_bootstrap, len(a))), axis=1)
    boot_b = np.sort(rng.choice(b, size=(n_bootstrap, len(b))), axis=1)
    scale = np.sqrt(len(a) * len(b) / (len(a) + len(b)))
    sigma = np.std(scale * (_violation_ratios(boot_a, boot_b, dt) - observed))
    return float(np.clip(observed - sigma / scale * scipy.stats.norm.ppf(1 - confidence), 0.0, 1.0))


# ---------------------------------------------------------------- where the variance comes from

def crossed_variance_components(grid) -> dict[str, float]:
    """Variance components of a crossed design without replication (Bouthillier et al. 2021, "Accounting for
    Variance in Machine Learning Benchmarks", separate the data sample from initialisation and order): ``grid[i, j]``
    is the outcome (e.g. a system's gain over its control) with the training examples drawn by data seed i and
    everything else by seed j. The two-way random-effects ANOVA (method of moments, Searle et al. 1992, ch. 4):
    with a data seeds and b seeds, ``data = (MS_data - MS_res) / b``, ``seed = (MS_seed - MS_res) / a``,
    ``interaction = MS_res`` (their interaction and any other noise), each floored at 0, and each one's share of
    their sum; also the mean squares. Needs a complete grid of at least 2 x 2."""
    values = as_checked_array(grid, "grid", ndim=2).astype(np.float64)
    a, b = values.shape
    if a < 2 or b < 2:
        raise InputError(f"grid must be at least 2 data seeds x 2 seeds, got {a} x {b}")
    mean = values.mean()
    rows, columns = values.mean(axis=1), values.mean(axis=0)
    ms_data = b * ((rows - mean) ** 2).sum() / (a - 1)
    ms_seed = a * ((columns - mean) ** 2).sum() / (b - 1)
    residual = values - rows[:, None] - columns[None, :] + mean
    ms_residual = (residual ** 2).sum() / ((a - 1) * (b - 1))
    components = {"data": max(0.0, (ms_data - ms_residual) / b), "seed": max(0.0, (ms_seed - ms_residual) / a),
                  "interaction": float(ms_residual)}
    total = sum(components.values())
    shares = {f"share_{name}": (value / total if total > 0 else np.nan) for name, value in components.items()}
    return {**{name: float(value) for name, value in components.items()}, **shares, "ms_data": float(ms_data),
            "ms_seed": float(ms_seed), "ms_residual": float(ms_residual), "data_seeds": a, "seeds": b}


# ---------------------------------------------------------------- pooled over a transfer matrix

def pooled_source_effects(seed_gains: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Does a source help in general? A linear mixed model of the seed-level gains of a transfer matrix (columns
    target, source, seed, gain): gain = the source's effect + a random intercept per target + a random intercept
    per (target, source) cell + noise (statsmodels ``MixedLM``, REML), fitted without an overall intercept so each
    source's coefficient is its mean gain over targets. It pools the cells a source enters, the power single cells
    lack. Assumptions, stated where it is reported: gains normal around the cell mean, targets a random sample of
    tasks (their effect shared by every source on them), seeds independent within a cell. Returns per source its
    effect with a Wald interval at ``confidence`` (unadjusted: one per source, Bonferroni left to the reader), its
    p-value, the targets it was measured on, and the model's target and cell variances."""
    import statsmodels.formula.api as smf

    check_columns(seed_gains, ["target", "source", "seed", "gain"], "seed_gains")
    check_in_range(confidence, "confidence", 0.0, 1.0)
    data = seed_gains.assign(cell=seed_gains["target"].astype(str) + "|" + seed_gains["source"].astype(str))
    if data["target"].nunique() < 3 or data["source"].nunique() < 2:
        raise InputError(f"a pooled model needs at least 3 targets and 2 sources, got {data['target'].nunique()} "
                         f"and {data['source'].nunique()}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the fit is checked below
        fit = smf.mixedlm("gain ~ 0 + C(source)", data, groups=data["target"], re_formula="1",
                          vc_formula={"cell": "0 + C(cell)"}).fit(reml=True, method=["lbfgs", "bfgs", "powell"])
    if not fit.converged:
        raise InputError("the pooled mixed model did not converge on these gains")
    interval = fit.conf_int(alpha=1 - confidence)
    rows = []
    for name in fit.fe_params.index:
        source = name[len("C(source)["):-1]
        rows.append({"source": source, "effect": float(fit.fe_params[name]), "ci_low": float(interval.loc[name, 0]),
                     "ci_high": float(interval.loc[name, 1]), "p_value": float(fit.pvalues[name]),
                     "targets": int(data.loc[data["source"] == source, "target"].nunique())})
    table = pd.DataFrame(rows)
    table.attrs.update(target_variance=float(fit.cov_re.iloc[0, 0]), cell_variance=float(fit.vcomp[0]),
                       residual_variance=float(fit.scale), confidence=confidence)
    return table


# ---------------------------------------------------------------- transfer asymmetry

MANTEL_EXACT_UP_TO = 7  # tasks: up to 7! = 5,040 relabellings are enumerated; beyond, sampled


def asymmetry_test(gains, n_permutations: int = 10_000, seed: int = 0) -> dict:
    """Does transfer A->B go with transfer B->A? Spearman's rho between gain[i, j] and gain[j, i] over the pairs
    i < j of a square tasks x tasks matrix (sources in rows, targets in columns; the diagonal unused), with a
    two-sided p-value from a Mantel permutation test (Mantel 1967): the task labels of the transposed matrix are
    permuted (rows and columns together), since every task enters n - 1 pairs and the pairs are not independent,
    which Spearman's own p-value assumes. All relabellings up to ``MANTEL_EXACT_UP_TO`` tasks (exact; the identity
    counts), else ``n_permutations`` random ones and p = (1 + count) / (1 + n_permutations)."""
    import itertools

    matrix = np.array(gains, dtype=np.float64)
    n = matrix.shape[0] if matrix.ndim == 2 else 0
    if matrix.shape != (n, n) or n < 3:
        raise InputError(f"gains must be a square tasks x tasks matrix of at least 3 tasks, got shape {matrix.shape}")
    np.fill_diagonal(matrix, 0.0)  # a task and itself: no transfer, unused
    if not np.isfinite(matrix).all():
        row, column = np.argwhere(~np.isfinite(matrix))[0]
        raise InputError(f"gains must hold both directions of every pair of tasks; cell ({row}, {column}) is "
                         f"{matrix[row, column]}")
    upper = np.triu_indices(n, 1)
    forward = matrix[upper]

    def rho(order) -> float:
        return float(scipy.stats.spearmanr(forward, matrix.T[np.ix_(order, order)][upper]).statistic)

    observed = rho(np.arange(n))
    if n <= MANTEL_EXACT_UP_TO:
        values = np.array([rho(np.array(order)) for order in itertools.permutations(range(n))])
        p_value, method = float(np.mean(np.abs(values) >= abs(observed) - 1e-12)), "exact"
    else:
        rng = np.random.default_rng(seed)
        values = np.array([rho(rng.permutation(n)) for _ in range(n_permutations)])
        p_value = float((1 + np.sum(np.abs(values) >= abs(observed) - 1e-12)) / (1 + n_permutations))
        method = f"{n_permutations} random relabellings"
    return {"spearman_rho": observed, "p_value": p_value, "n_pairs": len(forward), "method": method}


# ---------------------------------------------------------------- multiple comparisons and rankings

def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order (statsmodels' ``multipletests``, method "holm")."""
    from statsmodels.stats.multitest import multipletests

    p = as_checked_array(pvalues, "pvalues", ndim=1).astype(np.float64)
    if p.min() < 0 or p.max() > 1:
        raise InputError(f"pvalues must lie in [0, 1], got values from {p.min():g} to {p.max():g}")
    return multipletests(p, method="holm")[1]


def nemenyi_q(alpha: float, n_methods: int) -> float:
    """Critical value q_alpha of the Nemenyi test: the studentized range quantile over sqrt(2) (Demšar 2006,
    whose Table 5a lists it rounded to 3 decimals), from scipy's studentized range distribution."""
    return float(scipy.stats.studentized_range.ppf(1 - alpha, n_methods, np.inf) / np.sqrt(2))


def friedman_nemenyi(scores, alpha: float = 0.05, higher_is_better: bool = True) -> FriedmanResult:
    """Friedman test over datasets (rows) and methods (columns), average ranks and the Nemenyi CD (Demšar 2006).

    Two methods differ significantly when their average ranks differ by at least
    cd = q_alpha * sqrt(k (k + 1) / (6 N)), with q_alpha from ``nemenyi_q``. Needs k >= 3 methods, N >= 2 datasets.
    """
    table = scores if isinstance(scores, pd.DataFrame) else pd.DataFrame(np.asarray(scores))
    values = as_checked_array(table.to_numpy(dtype=np.float64), "scores", ndim=2)
    n_datasets, n_methods = values.shape
    if n_methods < 3:
        raise InputError(f"scores must have at least 3 methods (columns) for Friedman-Nemenyi, got {n_methods}")
    if n_datasets < 2:
        raise InputError(f"scores must have at least 2 datasets (rows) for Friedman-Nemenyi, got {n_datasets}")
    check_in_range(alpha, "alpha", 0.0, 1.0)
    statistic, p_value = scipy.stats.friedmanchisquare(*values.T)
    ranks = scipy.stats.rankdata(-values if higher_is_better else values, axis=1)
    avg_ranks = pd.Series(ranks.mean(axis=0), index=[str(c) for c in table.columns]).sort_values()
    q_alpha = nemenyi_q(alpha, n_methods)
    cd = q_alpha * np.sqrt(n_methods * (n_methods + 1) / (6 * n_datasets))
    return FriedmanResult(float(statistic), float(p_value), avg_ranks, float(cd), q_alpha, alpha, n_datasets, n_methods)


def cd_groups(avg_ranks: Mapping[str, float], cd: float) -> list[tuple[str, ...]]:
    """Maximal groups of methods whose average ranks all lie within cd (not significantly different)."""
    ordered = sorted(avg_ranks.items(), key=lambda item: item[1])
    groups: list[tuple[str, ...]] = []
    for start, (_, rank) in enumerate(ordered):
        members = tuple(name for name, other in ordered[start:] if other - rank < cd)
        if len(members) > 1 and not (groups and set(members) <= set(groups[-1])):
            groups.append(members)
    return groups
