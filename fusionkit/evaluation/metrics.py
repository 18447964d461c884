"""Classification and calibration metrics (numpy in, numbers out) and the input checks all evaluation code shares."""
from __future__ import annotations

import numpy as np

from fusionkit.errors import InputError

PROB_SUM_TOLERANCE = 1e-4
# Metrics where a smaller value is the better one; every other metric here is higher-is-better.
LOWER_IS_BETTER = frozenset({"nll", "brier", "ece"})
# log(0) would make one confident mistake dominate the mean: clip like scikit-learn's log_loss.
_LOG_FLOOR = np.finfo(np.float64).eps


# ---------------------------------------------------------------- shared input checks

def as_checked_array(value, name: str, ndim: int | None = None) -> np.ndarray:
    """Return `value` as a non-empty numeric array with no NaN or inf, of rank `ndim` if given."""
    array = np.asarray(value)
    if ndim is not None and array.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape}); at least one value is needed")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{name} must be numeric, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise InputError(f"{name} contains NaN or inf, e.g. {array[position]} at index {position}")
    return array


def as_labels(value, name: str = "y") -> np.ndarray:
    """Return `value` as a 1-D int64 array of non-negative class labels."""
    array = as_checked_array(value, name, ndim=1)
    if not np.issubdtype(array.dtype, np.inexact):
        array = array.astype(np.int64)
    not_whole = np.flatnonzero(array != np.round(array))
    if not_whole.size:
        raise InputError(f"{name} must hold integer class labels, got {array[not_whole[0]]} at index {not_whole[0]}")
    negative = np.flatnonzero(array < 0)
    if negative.size:
        raise InputError(f"{name} has a negative label {array[negative[0]]} at index {negative[0]}")
    return array.astype(np.int64)


def as_probs(value, name: str = "probs") -> np.ndarray:
    """Return `value` as a float [n, k] array whose rows are probability distributions."""
    array = as_checked_array(value, name, ndim=2).astype(np.float64)
    if array.min() < -PROB_SUM_TOLERANCE or array.max() > 1 + PROB_SUM_TOLERANCE:
        raise InputError(f"{name} must lie in [0, 1], got values from {array.min():.6g} to {array.max():.6g}")
    off = np.flatnonzero(np.abs(array.sum(axis=1) - 1) > PROB_SUM_TOLERANCE)
    if off.size:
        raise InputError(f"{name} rows must sum to 1 (tolerance {PROB_SUM_TOLERANCE:g}); "
                         f"row {off[0]} sums to {array[off[0]].sum():.6g}")
    return array


def check_lengths(unit: str = "examples", **arrays: np.ndarray) -> int:
    """Return the shared length (first dimension) of `arrays`, or raise naming every length."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise InputError(f"length mismatch: {shown} {unit}")
    return next(iter(lengths.values()))


def check_columns(frame, columns, name: str = "results") -> None:
    """Raise unless the DataFrame `frame` has every one of `columns`."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def check_in_range(value: float, name: str, low: float, high: float) -> float:
    """Return `value` if it lies strictly between `low` and `high` (e.g. a confidence level)."""
    if not low < value < high:
        raise InputError(f"{name} must be in ({low:g}, {high:g}), got {value!r}")
    return float(value)


def check_positive_int(value: int, name: str) -> int:
    """Return `value` if it is an integer >= 1 (e.g. a number of bins or resamples)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def labels_and_probs(y, probs) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label vector against a probability matrix: same length, labels index its columns."""
    labels, matrix = as_labels(y, "y"), as_probs(probs, "probs")
    check_lengths(y=labels, probs=matrix)
    outside = np.flatnonzero(labels >= matrix.shape[1])
    if outside.size:
        raise InputError(f"label {labels[outside[0]]} in y (index {outside[0]}) is outside "
                         f"the {matrix.shape[1]} columns of probs")
    return labels, matrix


def labels_and_pred(y, pred) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label vectors of the same length (true labels and predictions)."""
    labels, predicted = as_labels(y, "y"), as_labels(pred, "pred")
    check_lengths(y=labels, pred=predicted)
    return labels, predicted


# ---------------------------------------------------------------- per-example values

def correct(y, pred) -> np.ndarray:
    """1.0 where the prediction equals the label, else 0.0: accuracy is its mean."""
    labels, predicted = labels_and_pred(y, pred)
    return (labels == predicted).astype(np.float64)


def nll_per_example(y, probs) -> np.ndarray:
    """Negative log probability given to the true class of each example."""
    labels, matrix = labels_and_probs(y, probs)
    return -np.log(np.clip(matrix[np.arange(len(labels)), labels], _LOG_FLOOR, 1.0))


def brier_per_example(y, probs) -> np.ndarray:
    """Squared distance from each probability row to the one-hot label, summed over classes."""
    labels, matrix = labels_and_probs(y, probs)
    one_hot = np.eye(matrix.shape[1])[labels]
    return ((matrix - one_hot) ** 2).sum(axis=1)


# ---------------------------------------------------------------- confusion-based metrics

def confusion_counts(y, pred) -> np.ndarray:
    """Confusion matrix [k, k] (rows true, columns predicted) over classes 0..max label."""
    labels, predicted = labels_and_pred(y, pred)
    n_classes = int(max(labels.max(), predicted.max())) + 1
    cells = np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    return cells.reshape(n_classes, n_classes)


def macro_f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Macro F1 of one [k, k] or a batch [..., k, k] of confusion matrices.

    Classes absent from both labels and predictions are left out of the mean, as scikit-learn does.
    """
    true_pos = np.diagonal(confusion, axis1=-2, axis2=-1)
    denominator = confusion.sum(axis=-1) + confusion.sum(axis=-2)  # 2TP + FP + FN
    present = denominator > 0
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros(true_pos.shape), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def mcc_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Multi-class Matthews correlation (Gorodkin's R_K) of one or a batch of confusion matrices; 0 when undefined."""
    confusion = confusion.astype(np.float64)
    true_totals, pred_totals = confusion.sum(axis=-1), confusion.sum(axis=-2)
    n_correct = np.trace(confusion, axis1=-2, axis2=-1)
    n_total = true_totals.sum(axis=-1)
    covariance = n_correct * n_total - (true_totals * pred_totals).sum(axis=-1)
    scale = np.sqrt((n_total ** 2 - (pred_totals ** 2).sum(axis=-1)) * (n_total ** 2 - (true_totals ** 2).sum(axis=-1)))
    return np.divide(covariance, scale, out=np.zeros(np.shape(covariance)), where=scale > 0)


# ---------------------------------------------------------------- metrics

def accuracy(y, pred) -> float:
    return float(correct(y, pred).mean())


def macro_f1(y, pred) -> float:
    return float(macro_f1_from_confusion(confusion_counts(y, pred)))


def mcc(y, pred) -> float:
    return float(mcc_from_confusion(confusion_counts(y, pred)))


def nll(y, probs) -> float:
    return float(nll_per_example(y, probs).mean())


def brier(y, probs) -> float:
    return float(brier_per_example(y, probs).mean())


def reliability_bins(y, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count over equal-width bins of the max probability.

    Bins are right-closed, (lo, hi], as in Guo et al. 2017; empty bins have NaN confidence and accuracy.
    Returns arrays under "edges" (n_bins + 1), "confidence", "accuracy" and "count" (n_bins each).
    """
    labels, matrix = labels_and_probs(y, probs)
    edges = np.linspace(0.0, 1.0, check_positive_int(n_bins, "n_bins") + 1)
    confidence = matrix.max(axis=1)
    hits = (matrix.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        bin_accuracy = np.bincount(bins, weights=hits, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_confidence, "accuracy": bin_accuracy, "count": count}


def ece(y, probs, n_bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| per bin, weighted by the bin's share of examples."""
    bins = reliability_bins(y, probs, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((gaps * bins["count"][filled]).sum() / bins["count"].sum())


def score_all(y, probs, n_bins: int = 15) -> dict[str, float]:
    """Every metric from predicted probabilities (predictions are the argmax), keyed by metric name."""
    labels, matrix = labels_and_probs(y, probs)
    pred = matrix.argmax(axis=1)
    return {
        "accuracy": accuracy(labels, pred), "macro_f1": macro_f1(labels, pred), "mcc": mcc(labels, pred),
        "nll": nll(labels, matrix), "brier": brier(labels, matrix), "ece": ece(labels, matrix, n_bins),
    }
