"""Linear CKA has the invariances that make it meaningful, and sees no similarity between unrelated representations."""
import numpy as np
import pytest

from fusionkit.errors import InputError
from fusionkit.evaluation.similarity import layerwise_cka, linear_cka


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(500, 16))


def test_cka_is_one_under_rotation_and_scaling(features):
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    assert linear_cka(features, features @ rotation) == pytest.approx(1.0)
    assert linear_cka(features, 3 * features) == pytest.approx(1.0)
    assert linear_cka(features, features + 5.0) == pytest.approx(1.0)  # centring removes offsets


def test_cka_is_near_zero_for_independent_representations():
    rng = np.random.default_rng(2)
    assert linear_cka(rng.normal(size=(4000, 10)), rng.normal(size=(4000, 12))) < 0.02


def test_cka_is_symmetric_and_between_zero_and_one(features):
    rng = np.random.default_rng(3)
    other = features[:, :8] @ rng.normal(size=(8, 5)) + rng.normal(size=(500, 5))
    value = linear_cka(features, other)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(linear_cka(other, features))


def test_layerwise_cka_compares_every_layer_pair(features):
    rng = np.random.default_rng(5)
    layers_a = np.stack([features, rng.normal(size=(500, 16)), 2 * features], axis=1)  # [n, 3, d]
    layers_b = np.stack([features, rng.normal(size=(500, 16))], axis=1)              # [n, 2, d]
    matrix = layerwise_cka(layers_a, layers_b)
    assert matrix.shape == (3, 2)
    assert matrix[0, 0] == pytest.approx(1.0) and matrix[2, 0] == pytest.approx(1.0)
    assert matrix[0, 0] == pytest.approx(linear_cka(layers_a[:, 0], layers_b[:, 0]))
    assert matrix[1, 1] < 0.1


def test_bad_input_raises_clear_errors(features):
    with pytest.raises(InputError, match="length mismatch: x has 500, y has 499 examples"):
        linear_cka(features, features[:-1])
    with pytest.raises(InputError, match="y is constant across examples"):
        linear_cka(features, np.full((500, 3), 0.1))
    with pytest.raises(InputError, match="layers_a must be a 3-D array"):
        layerwise_cka(features, features[:, None, :])
