"""Task-vector geometry on constructed vectors: cosines overall and per layer, TIES's sign-conflict rate."""
import numpy as np
import pytest

from fusionkit.errors import InputError
from fusionkit.evaluation.geometry import layer_cosines, sign_conflict_rate, task_vector_cosines


def vector(layer0, layer1):
    return {"encoder.layer.0.weight": np.array(layer0, dtype=np.float32),
            "encoder.layer.1.weight": np.array(layer1, dtype=np.float32)}


def test_cosines_overall_and_per_layer():
    a = vector([1.0, 0.0], [1.0, 1.0])
    b = vector([0.0, 1.0], [1.0, 1.0])   # orthogonal in layer 0, identical in layer 1
    c = vector([-1.0, 0.0], [-1.0, -1.0])  # a reversed
    table = task_vector_cosines([a, b, c], ["a", "b", "c"])
    assert table.loc["a", "a"] == pytest.approx(1.0) and table.loc["a", "c"] == pytest.approx(-1.0)
    assert table.loc["a", "b"] == pytest.approx(2 / 3)  # (0 + 2) / (sqrt(3) * sqrt(3))
    layers = layer_cosines([a, b, c], ["a", "b", "c"]).set_index(["source_a", "source_b", "layer"])["cosine"]
    assert layers[("a", "b", 0)] == pytest.approx(0.0) and layers[("a", "b", 1)] == pytest.approx(1.0)
    assert layers[("a", "c", 0)] == pytest.approx(-1.0)


def test_sign_conflicts_count_only_entries_two_trimmed_vectors_keep():
    a = vector([3.0, -2.0, 0.1, 0.0], [1.0, 1.0])
    b = vector([2.0, 2.0, -0.1, 0.0], [-1.0, 1.0])
    # density 0.5: layer 0 keeps entries 0 and 1 of both (agree on 0, conflict on 1); layer 1 keeps entry 0 of
    # both (topk takes the first of equal magnitudes): a conflict. 3 overlapping, 2 conflicting.
    assert sign_conflict_rate([a, b], ["a", "b"], density=0.5) == pytest.approx(2 / 3)
    assert sign_conflict_rate([a, a], ["a", "a"], density=1.0) == 0.0


def test_mismatched_vectors_are_named():
    with pytest.raises(InputError, match="different shapes"):
        task_vector_cosines([vector([1.0], [1.0]), vector([1.0, 2.0], [1.0])], ["a", "b"])
    with pytest.raises(InputError, match="at least 2"):
        task_vector_cosines([vector([1.0], [1.0])], ["a"])


def test_each_sources_geometry_sits_beside_its_sequential_gain_and_its_merge_contribution():
    import pandas as pd

    from fusionkit.report import plots, tables

    cosines = pd.DataFrame([[1.0, 0.2, -0.4], [0.2, 1.0, 0.0], [-0.4, 0.0, 1.0]], index=["a", "b", "c"],
                           columns=["a", "b", "c"])
    results = pd.DataFrame({"system": ["sequential (a)", "sequential (b)", "merge ties", "merge ties: without a",
                                       "merge ties: without c", "representation sum: without a"],
                            "strategy": ["sequential", "sequential", "merge", "merge", "merge", "representation"],
                            "sources": ["a", "b", "a,b,c", "b,c", "a,b", "b,c"]})
    row = {"target": "t", "metric": "accuracy", "verdict": "inconclusive"}
    knowledge = pd.DataFrame([{**row, "system": "sequential (a)", "train_size": 128, "gain": 3.0, "ci_low": 1.0,
                               "ci_high": 5.0},
                              {**row, "system": "sequential (b)", "train_size": 64, "gain": 9.0, "ci_low": 8.0,
                               "ci_high": 10.0},  # another size: not this table's
                              {**row, "system": "merge ties", "train_size": 128, "gain": 2.0, "ci_low": 0.0,
                               "ci_high": 4.0}])  # a merge's own gain has no one source
    leave_one_out = pd.DataFrame([{**row, "system": "merge ties", "baseline": "merge ties: without a",
                                   "train_size": 128, "gain": -1.5, "ci_low": -3.0, "ci_high": 0.0},
                                  {**row, "system": "merge ties", "baseline": "merge ties: without c",
                                   "train_size": 128, "gain": 0.5, "ci_low": -1.0, "ci_high": 2.0}])
    table = tables.geometry_beside_gains(cosines, knowledge, leave_one_out, results, 128)
    assert table[["source", "gain_of", "gain"]].values.tolist() == [["a", "sequential", 3.0],
                                                                   ["a", "merge ties", -1.5],
                                                                   ["c", "merge ties", 0.5]]
    # mean cosine with the other sources: a (0.2 - 0.4) / 2, c (-0.4 + 0) / 2
    assert table["mean_cosine"].tolist() == pytest.approx([-0.1, -0.1, -0.2])
    figure = plots.geometry_beside_gains(cosines, table.assign(min_effect=1.0))
    drawn = sorted(tuple(np.round(line.get_segments()[0][:, 0], 6)) for axes in figure.axes[1:2]
                   for bar in axes.containers for line in bar.lines[2])
    assert drawn == sorted(tuple(pair) for pair in table[["ci_low", "ci_high"]].to_numpy())
