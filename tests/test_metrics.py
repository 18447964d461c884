"""Metrics agree with scikit-learn and with hand-worked calibration cases, and bad arrays fail with clear messages."""
import numpy as np
import pytest
from sklearn import metrics as sk

from fusionkit.evaluation import metrics
from fusionkit.errors import InputError


def softmax_probs(rng, n, k):
    logits = rng.normal(size=(n, k)) * 2
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    probs = softmax_probs(rng, 300, 4)
    # Labels follow the probabilities half the time so the scores are neither trivial nor chance.
    y = np.where(rng.random(300) < 0.5, probs.argmax(axis=1), rng.integers(0, 4, 300))
    return y, probs


def test_label_metrics_match_sklearn(predictions):
    y, probs = predictions
    pred = probs.argmax(axis=1)
    assert metrics.accuracy(y, pred) == pytest.approx(sk.accuracy_score(y, pred))
    assert metrics.macro_f1(y, pred) == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert metrics.mcc(y, pred) == pytest.approx(sk.matthews_corrcoef(y, pred))


def test_macro_f1_and_mcc_match_sklearn_when_classes_are_missing():
    # Class 3 is never predicted and class 4 never occurs: sklearn averages over the union of both.
    y = np.array([0, 0, 1, 1, 2, 3, 3, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 4, 2])
    assert metrics.macro_f1(y, pred) == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    assert metrics.mcc(y, pred) == pytest.approx(sk.matthews_corrcoef(y, pred))
    assert metrics.mcc([1, 1, 1], [1, 1, 1]) == 0.0  # undefined: sklearn also reports 0


def test_nll_matches_sklearn_log_loss(predictions):
    y, probs = predictions
    assert metrics.nll(y, probs) == pytest.approx(sk.log_loss(y, probs, labels=range(4)))


def test_brier_hand_computed_and_twice_sklearn_binary_brier():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    # (0.3² + 0.2² + 0.1²) for the first row, (0.5² + 0.5² + 1²) for the second.
    assert metrics.brier([0, 2], probs) == pytest.approx((0.14 + 1.5) / 2)
    rng = np.random.default_rng(1)
    positive = rng.random(50)
    y = rng.integers(0, 2, 50)
    binary = np.column_stack([1 - positive, positive])
    assert metrics.brier(y, binary) == pytest.approx(2 * sk.brier_score_loss(y, positive))


def test_ece_hand_built_case():
    # Two examples at confidence 0.85 (one right) and two at 0.65 (both right):
    # ECE = 0.5 * |0.5 - 0.85| + 0.5 * |1.0 - 0.65| = 0.35.
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.35, 0.65], [0.35, 0.65]])
    y = np.array([0, 1, 1, 1])
    assert metrics.ece(y, probs, n_bins=10) == pytest.approx(0.35)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.tile([0.7, 0.3], (10, 1))
    y = np.array([0] * 7 + [1] * 3)
    assert metrics.ece(y, probs) == pytest.approx(0.0)


def test_reliability_bins_describe_every_example(predictions):
    y, probs = predictions
    bins = metrics.reliability_bins(y, probs, n_bins=5)
    assert bins["edges"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"].sum() == len(y)
    filled = bins["count"] > 0
    assert np.all((bins["confidence"][filled] > bins["edges"][:-1][filled])
                  & (bins["confidence"][filled] <= bins["edges"][1:][filled]))
    assert np.isnan(bins["accuracy"][~filled]).all()


def test_score_all_reports_every_metric_from_probabilities(predictions):
    y, probs = predictions
    scores = metrics.score_all(y, probs)
    assert set(scores) == {"accuracy", "macro_f1", "mcc", "nll", "brier", "ece"}
    assert scores["accuracy"] == pytest.approx(metrics.accuracy(y, probs.argmax(axis=1)))
    assert scores["ece"] == pytest.approx(metrics.ece(y, probs))
    assert all(isinstance(value, float) for value in scores.values())


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.accuracy([0, 1, 1], [0, 1]), "length mismatch: y has 3, pred has 2 examples"),
    (lambda: metrics.nll([0, 1], [[0.5, 0.5], [0.6, 0.3]]), "probs rows must sum to 1.*row 1 sums to 0.9"),
    (lambda: metrics.brier([0, 3], [[0.5, 0.5], [0.5, 0.5]]), "label 3 in y \\(index 1\\) is outside the 2 columns"),
    (lambda: metrics.ece([0, 1], [[0.5, 0.5], [np.nan, 0.5]]), "probs contains NaN"),
    (lambda: metrics.accuracy([], []), "y is empty"),
    (lambda: metrics.macro_f1([0, 1], [0, -1]), "pred has a negative label -1 at index 1"),
    (lambda: metrics.accuracy([0.0, 1.5], [0, 1]), "y must hold integer class labels, got 1.5"),
    (lambda: metrics.nll([0], [0.5, 0.5]), "probs must be a 2-D array, got shape \\(2,\\)"),
    (lambda: metrics.ece([0], [[1.0, 0.0]], n_bins=0), "n_bins must be a positive integer, got 0"),
])
def test_bad_input_raises_clear_error(call, message):
    with pytest.raises(InputError, match=message):
        call()
