"""Representation similarity between encoders or layers: linear CKA (Kornblith et al. 2019)."""
from __future__ import annotations

import numpy as np

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import as_checked_array, check_lengths


def _centred(matrix: np.ndarray, name: str) -> np.ndarray:
    centred = matrix - matrix.mean(axis=0)
    # Centring a constant column leaves rounding noise, not exact zeros.
    if np.abs(centred).max() <= 1e-12 * max(1.0, np.abs(matrix).max()):
        raise InputError(f"{name} is constant across examples; CKA is undefined without variance")
    return centred


def _self_similarity(centred: np.ndarray) -> float:
    return float(np.linalg.norm(centred.T @ centred))


def _cka(x: np.ndarray, y: np.ndarray, x_self: float, y_self: float) -> float:
    return float(np.linalg.norm(y.T @ x) ** 2 / (x_self * y_self))


def linear_cka(x, y) -> float:
    """Linear CKA of two representations [n, d_x] and [n, d_y] of the same n examples, in [0, 1].

    Invariant to orthogonal transforms and isotropic scaling of either side; 1 means the same geometry.
    """
    x = as_checked_array(x, "x", ndim=2).astype(np.float64)
    y = as_checked_array(y, "y", ndim=2).astype(np.float64)
    check_lengths(x=x, y=y)
    x, y = _centred(x, "x"), _centred(y, "y")
    return _cka(x, y, _self_similarity(x), _self_similarity(y))


def layerwise_cka(layers_a, layers_b) -> np.ndarray:
    """CKA of every layer pair: [n, L_a, d_a] and [n, L_b, d_b] pooled features of the same inputs -> [L_a, L_b]."""
    a = as_checked_array(layers_a, "layers_a", ndim=3).astype(np.float64)
    b = as_checked_array(layers_b, "layers_b", ndim=3).astype(np.float64)
    check_lengths(layers_a=a, layers_b=b)
    centred_a = [_centred(a[:, i], f"layers_a[:, {i}]") for i in range(a.shape[1])]
    centred_b = [_centred(b[:, j], f"layers_b[:, {j}]") for j in range(b.shape[1])]
    # The self-similarity terms are computed once per layer, not once per pair.
    self_a, self_b = [_self_similarity(x) for x in centred_a], [_self_similarity(y) for y in centred_b]
    return np.array([[_cka(x, y, x_self, y_self) for y, y_self in zip(centred_b, self_b)]
                     for x, x_self in zip(centred_a, self_a)])
