"""Task-selection measures on rankings computed by hand, ties included, and the pooled test's calibration."""
import itertools
from math import log2

import numpy as np
import pandas as pd
import pytest

import fusionkit
from fusionkit.errors import InputError
from fusionkit.selection import (RANDOM, ndcg_at_k, permutation_test_vs_random, regret_at_k, selection_by_target,
                                 selection_table)


def test_selection_is_reexported_as_fusionkit_selection():
    assert fusionkit.selection.ndcg_at_k is fusionkit.evaluation.selection.ndcg_at_k


def test_ndcg_and_regret_of_a_ranking_without_ties():
    scores, gains = [3.0, 2.0, 1.0], [1.0, 2.0, 0.0]  # the estimator puts the second-best source first
    assert ndcg_at_k(scores, gains, 1) == pytest.approx(1 / 2)
    ideal = 2 + 1 / log2(3)
    assert ndcg_at_k(scores, gains, 3) == pytest.approx((1 + 2 / log2(3)) / ideal)
    assert regret_at_k(scores, gains, 1) == pytest.approx(1.0)  # 2 points lost by taking source 0
    assert regret_at_k(scores, gains, 2) == 0.0  # the best source is in the top 2
    assert ndcg_at_k([1, 3, 2], [0, 2, 1], 3) == pytest.approx(1.0)  # the ideal order


def test_a_negative_gain_counts_as_irrelevant_for_ndcg_but_as_a_loss_for_regret():
    assert ndcg_at_k([2.0, 1.0], [-1.0, 3.0], 1) == 0.0
    assert regret_at_k([2.0, 1.0], [-1.0, 3.0], 1) == pytest.approx(4.0)
    # Two harmful sources ordered either way: the same NDCG (they are equally irrelevant)
    assert ndcg_at_k([3, 2, 1], [2.0, -1.0, -3.0], 3) == ndcg_at_k([3, 1, 2], [2.0, -1.0, -3.0], 3) == 1.0


def test_no_helpful_source_leaves_ndcg_undefined_and_regret_defined():
    assert np.isnan(ndcg_at_k([1, 2, 3], [-1.0, -2.0, 0.0], 2))
    assert regret_at_k([1, 2, 3], [-1.0, -2.0, 0.0], 1) == 0.0
    assert regret_at_k([3, 2, 1], [-1.0, -2.0, 0.0], 1) == pytest.approx(1.0)


def test_tied_scores_give_the_expectation_over_random_tie_breaking():
    scores, gains = [1.0, 1.0, 0.0], [2.0, 0.0, 1.0]
    assert ndcg_at_k(scores, gains, 1) == pytest.approx(1.0 / 2)  # rank 1 holds gain 2 or 0, each half the time
    assert ndcg_at_k(scores, gains, 2) == pytest.approx((1 + 1 / log2(3)) / (2 + 1 / log2(3)))
    assert regret_at_k(scores, gains, 1) == pytest.approx(1.0)
    assert regret_at_k(scores, gains, 2) == 0.0
    # a tie straddling rank k, below a source already chosen: one (k=2) or two (k=3) of {4, 1, 1} enter
    assert regret_at_k([5, 3, 3, 3], [0, 4, 1, 1], 2) == pytest.approx(4 - (4 + 1 + 1) / 3)
    assert regret_at_k([5, 3, 3, 3], [0, 4, 1, 1], 3) == pytest.approx(4 - (2 / 3 * 4 + 1 / 3 * 1))


def test_tie_expectations_equal_the_average_over_every_tie_order():
    gains = np.array([3.0, -1.0, 2.0, 0.5, 1.0])
    scores = np.array([2.0, 2.0, 2.0, 1.0, 1.0])
    for k in (1, 2, 3, 4):
        ndcgs, regrets = [], []
        for first in itertools.permutations(range(3)):
            for second in itertools.permutations(range(3, 5)):
                order = list(first) + list(second)
                untied = np.empty(5)
                untied[order] = np.arange(5, 0, -1)
                ndcgs.append(ndcg_at_k(untied, gains, k))
                regrets.append(regret_at_k(untied, gains, k))
        assert ndcg_at_k(scores, gains, k) == pytest.approx(np.mean(ndcgs))
        assert regret_at_k(scores, gains, k) == pytest.approx(np.mean(regrets))


def test_bad_input_is_named():
    with pytest.raises(InputError, match="scores"):
        ndcg_at_k([1.0, np.nan], [1.0, 2.0], 1)
    with pytest.raises(InputError, match="sources"):
        regret_at_k([1.0, 2.0], [1.0], 1)
    with pytest.raises(InputError, match="k"):
        regret_at_k([1.0, 2.0], [1.0, 0.0], 0)


def frames(gains: dict, estimators: dict):
    """gains: target -> {source: gain}; estimators: name -> target -> {source: score}."""
    gain_rows = [{"target": t, "source": s, "gain": g} for t, by in gains.items() for s, g in by.items()]
    score_rows = [{"target": t, "source": s, "estimator": e, "score": v}
                  for e, by_target in estimators.items() for t, by in by_target.items() for s, v in by.items()]
    return pd.DataFrame(score_rows), pd.DataFrame(gain_rows)


def test_selection_table_ranks_a_perfect_estimator_above_random_and_an_inverted_one_below():
    rng = np.random.default_rng(0)
    gains = {f"t{i}": {f"s{j}": float(rng.normal(0, 2)) for j in range(5)} for i in range(6)}
    perfect = {t: dict(by) for t, by in gains.items()}
    inverted = {t: {s: -g for s, g in by.items()} for t, by in gains.items()}
    estimates, observed = frames(gains, {"perfect": perfect, "inverted": inverted})
    table = selection_table(estimates, observed, n_permutations=499).set_index("estimator")
    assert list(table.index) == ["perfect", RANDOM, "inverted"]  # sorted by mean Regret@1
    assert table.loc["perfect", "ndcg@1"] == 1.0 and table.loc["perfect", "regret@3"] == 0.0
    assert table.loc["perfect", "kendall_tau"] == pytest.approx(1.0)
    assert table.loc["inverted", "spearman_rho"] == pytest.approx(-1.0)
    # tested on the measure the table is sorted by and a report quotes: Regret@1
    p = table["p_vs_random_regret@1"]
    assert p["perfect"] < 0.01 and "better than random" in table.loc["perfect", "verdict"]
    assert table.loc["perfect", "p_holm"] == pytest.approx(2 * p["perfect"])  # Holm, 2 tests
    assert p["inverted"] > 0.5 and "no better" in table.loc["inverted", "verdict"]
    assert table.loc[RANDOM, "kendall_tau"] == 0.0 and table.loc["perfect", "n_targets"] == 6
    by_target = table.attrs["by_target"]
    assert len(by_target) == 3 * 6 and set(by_target["n_sources"]) == {5}


def test_selection_table_names_a_scored_pair_without_an_observed_gain():
    estimates, observed = frames({"t": {"a": 1.0, "b": 0.0}}, {"logme": {"t": {"a": 1.0, "b": 2.0, "c": 0.5}}})
    with pytest.raises(InputError, match="no observed gain.*'t', 'c'"):
        selection_by_target(estimates, observed)


def test_pooled_test_against_random_is_calibrated():
    """For an estimator that knows nothing, the pooled test rejects at alpha = 0.05 in 3-7% of 400 studies."""
    rng = np.random.default_rng(1)
    rejections, simulations = 0, 400
    for _ in range(simulations):
        targets = [(f"t{i}", rng.normal(size=4), rng.normal(0.5, 2, size=4)) for i in range(5)]
        rejections += permutation_test_vs_random(targets, k=1, n_permutations=99,
                                                 seed=int(rng.integers(1 << 31))) <= 0.05
    assert 0.03 <= rejections / simulations <= 0.07, rejections / simulations


def test_regret_at_every_source_is_no_test_and_ndcg_can_still_be_tested():
    targets = [(f"t{i}", np.arange(4.0), np.arange(4.0)) for i in range(5)]  # a perfect ranking
    assert permutation_test_vs_random(targets, k=4, measure="regret", n_permutations=99) == 1.0  # regret@4 is 0 always
    assert permutation_test_vs_random(targets, k=1, measure="regret", n_permutations=99) < 0.05
    assert permutation_test_vs_random(targets, k=3, measure="ndcg", n_permutations=99) < 0.05


def test_seed_uncertainty_gives_intervals_and_a_noise_ceiling():
    from fusionkit.evaluation.selection import seed_uncertainty

    rng = np.random.default_rng(2)
    truth = {f"t{i}": {f"s{j}": float(j) for j in range(4)} for i in range(4)}  # s3 best everywhere
    rows = [{"target": t, "source": s, "seed": seed, "gain": g + rng.normal(0, noise)}
            for noise, targets in ((0.2, ["t0", "t1"]), (0.2, ["t2", "t3"]))
            for t in targets for s, g in truth[t].items() for seed in range(5)]
    seed_gains = pd.DataFrame(rows)
    estimates, _ = frames(truth, {"oracle": truth, "inverted": {t: {s: -g for s, g in by.items()}
                                                               for t, by in truth.items()}})
    intervals, ceiling = seed_uncertainty(estimates, seed_gains, n_resamples=200)
    intervals = intervals.set_index("estimator")
    assert intervals.loc["oracle", "regret@1_high"] < intervals.loc["inverted", "regret@1_low"]
    assert intervals.loc["oracle", "ndcg@3_low"] > intervals.loc["inverted", "ndcg@3_high"]
    # little seed noise against gaps of 1 point: one seed's ranking already finds the best source
    assert ceiling["regret@1"] == pytest.approx(0.0, abs=0.05) and ceiling["seed_rankings"] == 4 * 5
    noisy = seed_gains.assign(gain=seed_gains["gain"] + rng.normal(0, 5, len(seed_gains)))
    assert seed_uncertainty(estimates, noisy, n_resamples=50)[1]["regret@1"] > 0.5  # noise lowers the ceiling
