"""Transferability scores equal their closed forms on small cases and rank good features above useless ones."""
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.transferability import hscore, leep, logme, nce, rank_correlation


def separable_features(rng, n=200, d=8, classes=3):
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, d))
    features[np.arange(n), labels] += 4.0  # one strong direction per class
    return features, labels


def exact_log_evidence(features, indicator):
    """max over (alpha, beta) of log N(indicator; 0, F F^T / alpha + I / beta) per example, by brute force."""
    def negative(log_precisions):
        alpha, beta = np.exp(log_precisions)
        covariance = features @ features.T / alpha + np.eye(len(indicator)) / beta
        return -scipy.stats.multivariate_normal.logpdf(indicator, cov=covariance)
    best = scipy.optimize.minimize(negative, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    return -best.fun / len(indicator)


def test_logme_prefers_separable_features_to_shuffled_labels():
    rng = np.random.default_rng(0)
    features, labels = separable_features(rng)
    assert logme(features, labels) > logme(features, rng.permutation(labels)) + 0.1


@pytest.mark.parametrize("n, d", [(40, 5), (15, 25)])  # more examples than features, and fewer
def test_logme_is_the_maximised_marginal_likelihood(n, d):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(n, d))
    labels = rng.integers(0, 2, n)
    features[:, 0] += labels
    expected = np.mean([exact_log_evidence(features, (labels == c).astype(float)) for c in (0, 1)])
    assert logme(features, labels) == pytest.approx(expected, rel=1e-5)


def test_leep_closed_form_on_a_hand_made_case():
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1])
    joint = np.zeros((2, 2))
    for row, label in zip(theta, labels):
        joint[label] += row / 4
    conditional = joint / joint.sum(axis=0)  # P(y | z)
    expected = np.mean([np.log(sum(conditional[label, z] * row[z] for z in range(2)))
                        for row, label in zip(theta, labels)])
    assert leep(theta, labels) == pytest.approx(expected)


def test_nce_closed_form_and_leep_with_hard_source_labels():
    source = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    target = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    # Given z = 0, y is 0 w.p. 3/4; given z = 1, y is always 1: -H(Y|Z) = 0.5 (3/4 ln 3/4 + 1/4 ln 1/4).
    expected = 0.5 * (0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert nce(source, target) == pytest.approx(expected)
    # With one-hot source predictions LEEP reduces to NCE (Nguyen et al. 2020).
    assert leep(np.eye(2)[source], target) == pytest.approx(expected)


def test_hscore_is_the_between_class_variance_share_in_one_dimension():
    features = np.array([[1.0], [2.0], [3.0], [7.0], [8.0], [9.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    between = np.array([2.0, 2.0, 2.0, 8.0, 8.0, 8.0])
    assert hscore(features, labels) == pytest.approx(between.var() / features.var())


def test_hscore_ignores_invertible_linear_maps_and_prefers_separable_features():
    rng = np.random.default_rng(2)
    features, labels = separable_features(rng)
    mixing = rng.normal(size=(8, 8))
    assert hscore(features @ mixing, labels) == pytest.approx(hscore(features, labels), rel=1e-6)
    assert hscore(features, labels) > 5 * hscore(features, rng.permutation(labels))


def test_rank_correlation_matches_scipy():
    """The statistics are scipy's; over 5 pairs the p-values are exact (all 120 orderings), over many scipy's own."""
    predicted, observed = [0.1, 0.4, 0.35, 0.8, 0.6], [-1.0, 0.5, 0.2, 2.0, 2.1]
    result = rank_correlation(predicted, observed)
    kendall, spearman = scipy.stats.kendalltau(predicted, observed), scipy.stats.spearmanr(predicted, observed)
    assert (result["kendall_tau"], result["spearman_rho"]) == pytest.approx((kendall.statistic, spearman.statistic))
    # tau = 0.8: orderings with |tau| >= 0.8 are 2 x (1 + 4) of 120; rho = 0.9: 2 x (1 + 4) too
    assert (result["kendall_p"], result["spearman_p"]) == pytest.approx((10 / 120, 10 / 120))
    rng = np.random.default_rng(0)
    many = rng.normal(size=30), rng.normal(size=30)
    large = rank_correlation(*many)
    assert large["p_method"] == "asymptotic"
    assert (large["kendall_p"], large["spearman_p"]) == pytest.approx(
        (scipy.stats.kendalltau(*many).pvalue, scipy.stats.spearmanr(*many).pvalue))


def test_bad_input_raises_clear_errors():
    with pytest.raises(InputError, match="length mismatch: features has 3, labels has 2 examples"):
        logme(np.ones((3, 2)), [0, 1])
    with pytest.raises(InputError, match="source_probs rows must sum to 1"):
        leep([[0.5, 0.6]], [0])
    with pytest.raises(InputError, match="at least 3 \\(predicted, observed\\) pairs, got 2"):
        rank_correlation([1, 2], [2, 1])


def test_regularised_hscore_matches_a_hand_computed_case():
    """Ibrahim et al. (2022): tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f|y])), with the Ledoit-Wolf alpha written out."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 4)
    features = rng.normal(size=(12, 20)) + labels[:, None] * np.linspace(0, 1, 20)
    n, d = features.shape
    centred = features - features.mean(axis=0)
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    squared = centred ** 2
    beta = (np.sum(squared.T @ squared) / n - np.sum(sample ** 2)) / (d * n)
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d
    alpha = min(beta, delta) / delta
    shrunk = (1 - alpha) * sample + alpha * mu * np.eye(d)
    means = np.stack([features[labels == k].mean(axis=0) for k in labels])
    between = np.cov(means, rowvar=False)
    expected = np.trace(np.linalg.pinv(shrunk) @ ((1 - alpha) * between))
    assert 0 < alpha < 1
    assert hscore(features, labels, shrinkage=True) == pytest.approx(expected, rel=1e-9)


def test_hscore_with_fewer_examples_than_dimensions_shrinks_instead_of_collapsing():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    features = rng.normal(size=(40, 100)) + 0.8 * labels[:, None]
    # The plain estimate is singular: every feature set scores K - 1 = 1, separable or not.
    assert hscore(features, labels, shrinkage=False) == pytest.approx(1.0, abs=1e-6)
    assert hscore(features, rng.permutation(labels), shrinkage=False) == pytest.approx(1.0, abs=1e-6)
    assert hscore(features, labels) > 1.4 * hscore(features, rng.permutation(labels))


def test_text_embedding_similarity_is_the_cosine_of_the_mean_embeddings():
    from fusionkit.evaluation.transferability import text_embedding_similarity

    source = np.array([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    target = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 1.0]])  # mean (1, 1)
    assert text_embedding_similarity(source, target) == pytest.approx(1.0)
    assert text_embedding_similarity(source, np.array([[1.0, -1.0]])) == pytest.approx(0.0)
    assert text_embedding_similarity([[3.0, 4.0]], [[4.0, 3.0]]) == pytest.approx(24 / 25)
    with pytest.raises(InputError, match="same encoder"):
        text_embedding_similarity(source, np.ones((2, 3)))
