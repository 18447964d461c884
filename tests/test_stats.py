"""Statistics agree with scipy (and deepsig for ASO), hold their nominal error rates in simulation, reject bad input."""
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.evaluation import metrics, stats
from fusionkit.errors import ConfigError, InputError


@pytest.fixture
def two_systems():
    rng = np.random.default_rng(3)
    n, k = 400, 3
    y = rng.integers(0, k, n)
    probs = {}
    for name, skill in (("a", 2.0), ("b", 1.0)):
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), y] += skill
        probs[name] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs["a"], probs["b"]


def binary_probs(rng, y, n):
    """Probabilities of an equally good system on every call: the true class gets Beta(4, 2)."""
    p_true = rng.beta(4, 2, n)
    probs = np.empty((n, 2))
    probs[np.arange(n), y], probs[np.arange(n), 1 - y] = p_true, 1 - p_true
    return probs


# ---------------------------------------------------------------- example-level

@pytest.mark.parametrize("name, function, use_probs", [
    ("accuracy", metrics.accuracy, False), ("macro_f1", metrics.macro_f1, False), ("mcc", metrics.mcc, False),
    ("nll", metrics.nll, True), ("brier", metrics.brier, True), ("ece", metrics.ece, True),
])
def test_vectorised_bootstrap_equals_the_plain_loop(two_systems, name, function, use_probs):
    y, probs, _ = two_systems
    array = probs if use_probs else probs.argmax(axis=1)
    fast = stats.bootstrap_ci(name, y, array, n_resamples=300, seed=7)
    slow = stats.bootstrap_ci(function, y, array, n_resamples=300, seed=7)
    assert fast == pytest.approx(slow, rel=1e-12)
    assert fast.low <= fast.point <= fast.high


def test_label_metrics_accept_probabilities_as_their_argmax(two_systems):
    y, probs, _ = two_systems
    assert stats.bootstrap_ci("accuracy", y, probs, n_resamples=200) == \
        stats.bootstrap_ci("accuracy", y, probs.argmax(axis=1), n_resamples=200)


def test_bootstrap_ci_of_accuracy_covers_the_true_value_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    n, true_accuracy = 300, 0.8
    covered = 0
    for trial in range(400):
        y = np.zeros(n, dtype=int)
        pred = (rng.random(n) >= true_accuracy).astype(int)
        _, low, high = stats.bootstrap_ci("accuracy", y, pred, n_resamples=1000, seed=trial)
        covered += low <= true_accuracy <= high
    assert 0.93 <= covered / 400 <= 0.97


def test_permutation_test_rejects_equal_systems_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    n, rejected = 100, 0
    for trial in range(400):
        y = rng.integers(0, 2, n)
        p = stats.paired_permutation_test("nll", y, binary_probs(rng, y, n), binary_probs(rng, y, n),
                                          n_resamples=1000, seed=trial)
        rejected += p < 0.05
    assert 0.03 <= rejected / 400 <= 0.07


def test_permutation_test_finds_a_real_difference_and_never_returns_zero(two_systems):
    y, better, worse = two_systems
    p = stats.paired_permutation_test("accuracy", y, better, worse, n_resamples=2000)
    assert p == pytest.approx(1 / 2001)
    assert stats.paired_permutation_test("macro_f1", y, better, better, n_resamples=500) == 1.0


def test_permutation_test_vectorised_equals_the_plain_loop(two_systems):
    y, a, b = two_systems
    fast = stats.paired_permutation_test("mcc", y, a.argmax(axis=1), b.argmax(axis=1), n_resamples=200, seed=1)
    slow = stats.paired_permutation_test(metrics.mcc, y, a.argmax(axis=1), b.argmax(axis=1), n_resamples=200, seed=1)
    assert fast == slow


# ---------------------------------------------------------------- seed-level

SEEDS_A = np.array([0.81, 0.83, 0.80, 0.84, 0.82])
SEEDS_B = np.array([0.79, 0.80, 0.80, 0.81, 0.78])


def test_t_tests_match_scipy_including_their_intervals():
    welch = stats.welch_t(SEEDS_A, SEEDS_B)
    reference = scipy.stats.ttest_ind(SEEDS_A, SEEDS_B, equal_var=False)
    assert (welch.statistic, welch.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    assert (welch.ci_low, welch.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    paired = stats.paired_t(SEEDS_A, SEEDS_B, confidence=0.9)
    reference = scipy.stats.ttest_rel(SEEDS_A, SEEDS_B)
    assert (paired.statistic, paired.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    assert (paired.ci_low, paired.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.9)))


def test_rank_tests_match_scipy():
    wilcoxon = stats.wilcoxon_signed_rank(SEEDS_A, SEEDS_B + 0.001)
    reference = scipy.stats.wilcoxon(SEEDS_A, SEEDS_B + 0.001)
    assert (wilcoxon.statistic, wilcoxon.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    mann_whitney = stats.mann_whitney(SEEDS_A, SEEDS_B)
    reference = scipy.stats.mannwhitneyu(SEEDS_A, SEEDS_B, alternative="two-sided")
    assert (mann_whitney.statistic, mann_whitney.p_value) == pytest.approx((reference.statistic, reference.pvalue))


def test_identical_seed_scores_give_no_evidence_instead_of_nan():
    assert stats.paired_t(SEEDS_A, SEEDS_A).p_value == 1.0
    assert stats.welch_t([0.8, 0.8], [0.8, 0.8]).p_value == 1.0
    assert stats.wilcoxon_signed_rank(SEEDS_A, SEEDS_A).p_value == 1.0


@pytest.mark.parametrize("test", [stats.welch_t, stats.paired_t, stats.mann_whitney, stats.wilcoxon_signed_rank,
                                  stats.aso, stats.violation_ratio])
def test_seed_level_tests_need_two_seeds(test):
    with pytest.raises(InputError, match="has 1 seed score\\(s\\); a seed-level test needs at least 2"):
        test([0.8], [0.7, 0.75])


def test_paired_tests_need_the_same_seeds():
    with pytest.raises(InputError, match="length mismatch: a has 5, b has 4 seeds"):
        stats.wilcoxon_signed_rank(SEEDS_A, SEEDS_B[:4])


# ---------------------------------------------------------------- ASO

def test_aso_orders_clearly_separated_systems():
    rng = np.random.default_rng(5)
    strong, weak = rng.normal(0.85, 0.01, 10), rng.normal(0.75, 0.01, 10)
    assert stats.aso(strong, weak) <= 0.05
    assert stats.aso(weak, strong) >= 0.95


def test_aso_claims_no_order_between_identical_distributions():
    rng = np.random.default_rng(6)
    draws = [(rng.normal(size=20), rng.normal(size=20)) for _ in range(40)]
    ratios = [stats.violation_ratio(a, b) for a, b in draws]
    assert 0.4 <= np.mean(ratios) <= 0.6
    # eps_min is an upper bound on the violation ratio, so it is mostly at or above 0.5.
    assert np.mean([stats.aso(a, b, n_bootstrap=300) >= 0.5 for a, b in draws]) >= 0.6
    assert stats.violation_ratio(draws[0][0], draws[0][0]) == 0.5


def test_aso_matches_deepsig():
    deepsig_aso = pytest.importorskip("deepsig.aso")
    rng = np.random.default_rng(1)
    for a, b in [(rng.normal(0.3, 1, 5), rng.normal(0, 1, 8)), (rng.normal(1, 1, 10), rng.normal(0, 1, 10))]:
        assert stats.violation_ratio(a, b) == pytest.approx(deepsig_aso.compute_violation_ratio(a, b, dt=0.005))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = deepsig_aso.aso(a, b, num_bootstrap_iterations=300, show_progress=False, seed=0)
    assert stats.aso(a, b) == pytest.approx(reference, abs=0.06)


# ---------------------------------------------------------------- multiple comparisons and rankings

def test_holm_hand_computed():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone).
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    with pytest.raises(InputError, match="pvalues must lie in \\[0, 1\\]"):
        stats.holm([0.5, 1.2])


def test_friedman_nemenyi_matches_scipy_and_demsar():
    rng = np.random.default_rng(8)
    scores = pd.DataFrame(rng.normal(size=(10, 4)) + [0.0, 0.5, 1.0, 1.5], columns=["w", "x", "y", "z"])
    result = stats.friedman_nemenyi(scores)
    reference = scipy.stats.friedmanchisquare(*scores.to_numpy().T)
    assert (result.statistic, result.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    expected_ranks = scipy.stats.rankdata(-scores.to_numpy(), axis=1).mean(axis=0)
    assert result.avg_ranks[["w", "x", "y", "z"]].to_numpy() == pytest.approx(expected_ranks)
    assert result.avg_ranks.index[0] == "z"
    # Demšar's Table 5a gives q = 2.569 for k = 4 (rounded to 3 decimals).
    assert result.cd == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 10)), abs=1e-3)


def test_nemenyi_q_matches_demsars_table():
    # Demšar (2006), Table 5a, alpha 0.05 and 0.10, k = 2..10: the studentized range over sqrt(2), rounded
    # (two of its entries are off by 7e-4).
    table = {0.05: (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164),
             0.10: (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920)}
    for alpha, values in table.items():
        assert [stats.nemenyi_q(alpha, k) for k in range(2, 11)] == pytest.approx(values, abs=1e-3)


def test_cd_groups_join_methods_within_the_critical_difference():
    ranks = {"a": 1.0, "b": 1.5, "c": 2.4, "d": 4.0}
    assert stats.cd_groups(ranks, cd=1.0) == [("a", "b"), ("b", "c")]


def test_bad_arguments_raise_clear_errors(two_systems):
    y, a, b = two_systems
    with pytest.raises(ConfigError, match="unknown metric 'f2'"):
        stats.bootstrap_ci("f2", y, a)
    with pytest.raises(InputError, match="confidence must be in \\(0, 1\\), got 95"):
        stats.bootstrap_ci("accuracy", y, a, confidence=95)
    with pytest.raises(InputError, match="a and b must have the same shape"):
        stats.paired_permutation_test("nll", y, a, b[:, :2])
    with pytest.raises(InputError, match="scores must have at least 3 methods \\(columns\\) for Friedman-Nemenyi, got 2"):
        stats.friedman_nemenyi(np.ones((5, 2)))
