"""Task selection: how well a cheap estimator's ranking of the sources picks the ones that help a target.

An *estimator* scores every candidate source for a target before any fusion is trained (LogME, H-score, LEEP,
NCE, or a heuristic such as the source's training-set size); the *gain* of a source is what transfer from it
was then observed to give over its matched control, in accuracy points. Following Poth et al. (2021, "What to
Pre-Train on? Efficient Intermediate Task Selection") a ranking is judged by NDCG@k and Regret@k, and following
Vu et al. (2020) by its rank correlation with the gains.

Ties in an estimator's scores are broken at random, and every measure here is its *expectation* over those
random orders (computed exactly, not sampled): an estimator that scores every source the same is exactly a
random ranking, and a tie never helps or hurts by the accident of the input order.
"""
from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import as_checked_array, check_columns, check_lengths, check_positive_int
from fusionkit.evaluation.stats import holm

RANDOM = "random"  # the reference row of ``selection_table``: a uniformly random ranking, in expectation


def _scores_and_gains(scores, gains, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    scores = as_checked_array(scores, "scores", ndim=1).astype(np.float64)
    gains = as_checked_array(gains, "gains", ndim=1).astype(np.float64)
    n = check_lengths("sources", scores=scores, gains=gains)
    if n == 0:
        raise InputError("scores and gains are empty: a ranking needs at least one source")
    check_positive_int(k, "k")
    return scores, gains, min(k, n)


def _tie_groups(scores: np.ndarray) -> list[np.ndarray]:
    """Indices of the sources grouped by equal score, the highest score first."""
    values = np.unique(scores)[::-1]
    return [np.flatnonzero(scores == value) for value in values]


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))


def _expected_dcg(scores: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """DCG@k of the ranking by ``scores``, averaged over every order of tied sources: a tie group occupying ranks
    p..q gives each of its members the mean of those ranks' discounts (counting only ranks <= k)."""
    discount = np.zeros(len(scores))
    discount[:k] = _discounts(k)
    total, start = 0.0, 0
    for group in _tie_groups(scores):
        stop = start + len(group)
        total += relevance[group].mean() * discount[start:stop].sum()
        start = stop
    return float(total)


def ndcg_at_k(scores, gains, k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k`` sources ranked by ``scores`` (higher first).

    DCG@k = sum over ranks i = 1..k of rel_i / log2(i + 1) (Järvelin and Kekäläinen 2002, linear gain), and
    NDCG@k = DCG@k / IDCG@k, IDCG@k being the DCG@k of the sources sorted by relevance. The relevance of a
    source is its observed gain (Poth et al. 2021 grade a source by the transfer result it gave), with a
    negative gain counted as 0: a source that hurts is irrelevant, not less than irrelevant, so NDCG stays in
    [0, 1] and a ranking is not rewarded for ordering the harmful sources among themselves. When no source has
    a positive gain there is nothing to find and NDCG@k is undefined: NaN (Regret@k still applies).
    Tied scores: the expectation over random tie-breaking (see the module docstring).
    """
    scores, gains, k = _scores_and_gains(scores, gains, k)
    relevance = np.clip(gains, 0.0, None)
    ideal = float(np.sort(relevance)[::-1][:k] @ _discounts(k))
    if ideal == 0.0:
        return float("nan")
    return _expected_dcg(scores, relevance, k) / ideal


def _expected_best_of_top_k(scores: np.ndarray, gains: np.ndarray, k: int) -> float:
    """The expected largest gain among the top ``k`` sources by ``scores``, over random orders of tied sources."""
    best_above, start = -np.inf, 0
    for group in _tie_groups(scores):
        room = k - start
        if room >= len(group):  # the whole group is in the top k
            best_above = max(best_above, gains[group].max())
            start += len(group)
            if start == k:
                return float(best_above)
            continue
        # ``room`` of the group's n members enter, uniformly at random. With their gains sorted descending
        # g_1 >= ... >= g_n, g_j is the best of those chosen when j is chosen and 1..j-1 are not:
        # probability C(n - j, room - 1) / C(n, room).
        tied = np.sort(gains[group])[::-1]
        n = len(tied)
        chances = np.array([comb(n - j, room - 1) for j in range(1, n + 1)], dtype=np.float64) / comb(n, room)
        return float(chances @ np.maximum(tied, best_above))
    return float(best_above)


def regret_at_k(scores, gains, k: int) -> float:
    """How much is lost by choosing among the estimator's top ``k`` sources instead of knowing the best one:
    max(gains) - max(gains of the top k by ``scores``), in the gains' unit (accuracy points here).

    0 when the truly best source is among the top k; never negative. Poth et al. (2021) divide this by the best
    source's target score to get a percentage; fusionkit keeps accuracy points, the unit every verdict uses.
    Negative gains count as they are (choosing a harmful source over a helpful one is a larger loss).
    Tied scores: the expectation over random tie-breaking.
    """
    scores, gains, k = _scores_and_gains(scores, gains, k)
    return float(gains.max() - _expected_best_of_top_k(scores, gains, k))


def _rank_correlations(scores: np.ndarray, gains: np.ndarray) -> tuple[float, float]:
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(gains) == 0:
        return float("nan"), float("nan")  # undefined: too few sources, or nothing to rank on one side
    return (float(scipy.stats.kendalltau(scores, gains).statistic),
            float(scipy.stats.spearmanr(scores, gains).statistic))


def _random_expectations(gains: np.ndarray, ks) -> dict[str, float]:
    """Every measure of a uniformly random ranking, exactly: a ranking in which all sources tie."""
    tied = np.zeros_like(gains)
    row = {"kendall_tau": 0.0, "spearman_rho": 0.0}
    for k in ks:
        row[f"ndcg@{k}"] = ndcg_at_k(tied, gains, k)
        row[f"regret@{k}"] = regret_at_k(tied, gains, k)
    return row


def _grouped(estimates: pd.DataFrame, gains: pd.DataFrame) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """estimator -> [(target, scores, gains)] with each target's sources in one order on both sides."""
    check_columns(estimates, ["target", "source", "estimator", "score"], "estimates")
    check_columns(gains, ["target", "source", "gain"], "gains")
    duplicated = gains.duplicated(["target", "source"])
    if duplicated.any():
        raise InputError(f"gains has {int(duplicated.sum())} repeated (target, source) rows, e.g. "
                         f"{tuple(gains.loc[duplicated, ['target', 'source']].iloc[0])}")
    merged = estimates.merge(gains[["target", "source", "gain"]], on=["target", "source"], how="inner")
    missing = estimates.merge(gains[["target", "source"]], on=["target", "source"], how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    if len(missing):
        raise InputError(f"no observed gain for {len(missing)} scored (target, source) pair(s), e.g. "
                         f"{tuple(missing[['target', 'source']].iloc[0])}")
    if merged["score"].isna().any() or merged["gain"].isna().any():
        row = merged[merged["score"].isna() | merged["gain"].isna()].iloc[0]
        raise InputError(f"estimator {row['estimator']!r}: missing score or gain for target {row['target']!r}, "
                         f"source {row['source']!r}")
    grouped: dict[str, list] = {}
    for (estimator, target), rows in merged.groupby(["estimator", "target"], sort=True):
        rows = rows.sort_values("source")
        grouped.setdefault(estimator, []).append((target, rows["score"].to_numpy(float), rows["gain"].to_numpy(float)))
    return grouped


def selection_by_target(estimates: pd.DataFrame, gains: pd.DataFrame, ks=(1, 3)) -> pd.DataFrame:
    """One row per (estimator, target): the number of sources, Kendall tau and Spearman rho of the scores with the
    gains, and NDCG@k and Regret@k for each k; plus the rows of the ``random`` reference (exact expectations of a
    uniformly random ranking).

    ``estimates``: columns target, source, estimator, score (higher = predicted to help more); ``gains``:
    columns target, source, gain (observed, one row per pair). Every scored pair needs a gain.
    """
    return _by_target(_grouped(estimates, gains), ks)


def _by_target(grouped: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], ks) -> pd.DataFrame:
    rows = []
    for estimator, targets in grouped.items():
        for target, scores, observed in targets:
            tau, rho = _rank_correlations(scores, observed)
            row = {"estimator": estimator, "target": target, "n_sources": len(scores), "kendall_tau": tau,
                   "spearman_rho": rho}
            for k in ks:
                row[f"ndcg@{k}"] = ndcg_at_k(scores, observed, k)
                row[f"regret@{k}"] = regret_at_k(scores, observed, k)
            rows.append(row)
    for target, _, observed in next(iter(grouped.values()), []):
        rows.append({"estimator": RANDOM, "target": target, "n_sources": len(observed),
                     **_random_expectations(observed, ks)})
    return pd.DataFrame(rows)


def _mean_measure(targets: list[tuple[str, np.ndarray, np.ndarray]], k: int, measure: str) -> float:
    """The mean over targets of Regret@k or NDCG@k (targets where it is undefined left out)."""
    function = regret_at_k if measure == "regret" else ndcg_at_k
    values = [function(scores, observed, k) for _, scores, observed in targets]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


MEASURES = ("regret", "ndcg")


def permutation_test_vs_random(targets: list[tuple[str, np.ndarray, np.ndarray]], k: int, measure: str = "regret",
                               n_permutations: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that an estimator's rankings pick better sources than random rankings, pooled over targets,
    on the measure a report quotes: the mean Regret@k (lower is better) or NDCG@k (higher is better) over the
    targets. Null: the estimator knows nothing, so its scores are exchangeable among each target's sources; the null
    distribution shuffles the scores within every target independently, ``n_permutations`` times.
    p = (1 + #{shuffled at least as good}) / (1 + n_permutations), valid for any number of targets and sources.
    A measure that is the same for every ranking (Regret@k with k the number of sources) gives p = 1.
    """
    check_positive_int(n_permutations, "n_permutations")
    if measure not in MEASURES:
        raise InputError(f"measure must be one of {MEASURES}, got {measure!r}")
    sign = -1.0 if measure == "regret" else 1.0  # larger is better after the sign
    observed = _mean_measure(targets, k, measure)
    if np.isnan(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(n_permutations):
        shuffled = [(target, rng.permutation(scores), gains) for target, scores, gains in targets]
        exceed += sign * _mean_measure(shuffled, k, measure) >= sign * observed - 1e-12
    return (1 + exceed) / (1 + n_permutations)


def seed_uncertainty(estimates: pd.DataFrame, seed_gains: pd.DataFrame, k_regret: int = 1, k_ndcg: int = 3,
                     n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """How sure the selection measures are, given that the ground truth (the observed gains) is itself a mean over
    a few noisy seeds. ``seed_gains``: target, source, seed, gain (one row per seed of each cell).

    Returns (1) per estimator, percentile bootstrap intervals of the mean Regret@``k_regret`` and NDCG@``k_ndcg``
    over targets, each cell's seeds resampled with replacement (``n_resamples`` times), and (2) the *noise
    ceiling*: how well one seed's gains rank the sources against the mean of the other seeds' (leave one seed out,
    averaged over seeds and targets), i.e. the best an estimator can be expected to do against this ground truth.
    An estimator is judged against that, not against a perfect ranking."""
    check_columns(seed_gains, ["target", "source", "seed", "gain"], "seed_gains")
    check_positive_int(n_resamples, "n_resamples")
    rng = np.random.default_rng(seed)
    cells = {key: group["gain"].to_numpy(float) for key, group in seed_gains.groupby(["target", "source"])}
    means = seed_gains.groupby(["target", "source"], as_index=False)["gain"].mean()
    _grouped(estimates, means)  # every scored pair has seed gains: checked once, named if not
    # estimator -> [(target, scores, its sources)], sources in _grouped's order; only the gains change per resample
    scored = {estimator: [(target, rows["score"].to_numpy(float), rows["source"].tolist())
                          for target, rows in by_estimator.sort_values("source").groupby("target", sort=True)]
              for estimator, by_estimator in estimates.groupby("estimator", sort=False)}
    draws = {estimator: {"regret": [], "ndcg": []} for estimator in scored}
    for _ in range(n_resamples):
        resampled = {key: rng.choice(gains, len(gains)).mean() for key, gains in cells.items()}
        for estimator, targets in scored.items():
            drawn = [(target, scores, np.array([resampled[(target, source)] for source in sources]))
                     for target, scores, sources in targets]
            draws[estimator]["regret"].append(_mean_measure(drawn, k_regret, "regret"))
            draws[estimator]["ndcg"].append(_mean_measure(drawn, k_ndcg, "ndcg"))
    tail = (1 - confidence) / 2
    rows = []
    for estimator, values in draws.items():
        row = {"estimator": estimator}
        for measure, k in (("regret", k_regret), ("ndcg", k_ndcg)):
            sample = np.array(values[measure], dtype=float)
            sample = sample[~np.isnan(sample)]
            low, high = np.quantile(sample, [tail, 1 - tail]) if len(sample) else (np.nan, np.nan)
            row[f"{measure}@{k}_low"], row[f"{measure}@{k}_high"] = float(low), float(high)
        rows.append(row)
    ceiling = {"regret": [], "ndcg": []}
    for target, group in seed_gains.groupby("target"):
        table = group.pivot_table(index="seed", columns="source", values="gain").dropna()
        if len(table) < 2:
            continue
        for held in table.index:
            scores, truth = table.loc[held].to_numpy(float), table.drop(index=held).mean().to_numpy(float)
            ceiling["regret"].append(regret_at_k(scores, truth, k_regret))
            ndcg = ndcg_at_k(scores, truth, k_ndcg)
            if not np.isnan(ndcg):
                ceiling["ndcg"].append(ndcg)
    noise_ceiling = {f"regret@{k_regret}": float(np.mean(ceiling["regret"])) if ceiling["regret"] else np.nan,
                     f"ndcg@{k_ndcg}": float(np.mean(ceiling["ndcg"])) if ceiling["ndcg"] else np.nan,
                     "seed_rankings": len(ceiling["regret"])}
    return pd.DataFrame(rows), noise_ceiling


def selection_table(estimates: pd.DataFrame, gains: pd.DataFrame, ks=(1, 3), alpha: float = 0.05,
                    n_permutations: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per estimator (and the ``random`` reference): the means over targets of Kendall tau, Spearman rho,
    NDCG@k and Regret@k (``selection_by_target``), the pooled permutation test against random rankings on the mean
    Regret@min(ks), the measure the table is sorted by (``permutation_test_vs_random``), its p-value Holm-adjusted over the estimators (``p_holm``), and a
    verdict in words from ``p_holm`` and ``alpha``. Sorted by mean Regret@min(ks), best first.
    ``attrs["by_target"]`` holds the per-target table, ``attrs["alpha"]`` the level the verdicts used."""
    grouped = _grouped(estimates, gains)
    by_target = _by_target(grouped, ks)
    measures = ["kendall_tau", "spearman_rho", *[f"{m}@{k}" for k in ks for m in ("ndcg", "regret")]]
    table = by_target.groupby("estimator", sort=False)[measures].mean().reset_index()
    table.insert(1, "n_targets", by_target.groupby("estimator", sort=False).size().to_numpy())
    test_k = min(ks)  # the measure the table is sorted by and a report quotes: Regret@min(ks)
    p_values = np.array([float("nan") if estimator == RANDOM else
                         permutation_test_vs_random(grouped[estimator], test_k, "regret", n_permutations, seed)
                         for estimator in table["estimator"]])
    # One test per estimator: "the best of several estimators beats random" needs the correction across them.
    adjusted = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    if tested.any():
        adjusted[tested] = holm(p_values[tested])
    verdicts = []
    for estimator, p in zip(table["estimator"], adjusted):
        if estimator == RANDOM:
            verdicts.append("the reference: a uniformly random ranking (exact expectations)")
        elif np.isnan(p):
            verdicts.append("untestable: no target has a source with a positive gain")
        else:
            verdicts.append(f"picks better than random (p_holm={p:.3g})" if p < alpha else
                            f"no better than random (p_holm={p:.2g})")
    table[f"p_vs_random_regret@{test_k}"] = p_values
    table["p_holm"] = adjusted
    table["verdict"] = verdicts
    table = table.sort_values(f"regret@{min(ks)}", kind="stable").reset_index(drop=True)
    table.attrs.update(by_target=by_target, alpha=alpha)
    return table
