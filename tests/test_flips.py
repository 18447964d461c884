"""Which examples fusion fixes and breaks: counts per seed and per example, McNemar against statsmodels' table."""
import numpy as np
import pandas as pd
import pytest

from fusionkit.errors import InputError
from fusionkit.evaluation.flips import flip_counts


def test_fixes_and_breaks_on_a_hand_built_case():
    y = np.array([0, 1, 1, 0, 1, 0])
    control = [np.array([1, 1, 0, 0, 0, 0]), np.array([1, 0, 0, 0, 1, 0])]
    fused = [np.array([0, 1, 1, 1, 0, 0]), np.array([0, 1, 1, 0, 0, 0])]
    per_seed, per_example = flip_counts(y, control, fused)
    # seed 0: fixes examples 0 and 2, breaks 3; seed 1: fixes 0, 1, 2, breaks 4
    assert per_seed[["fixes", "breaks"]].values.tolist() == [[2, 1], [3, 1]]
    assert per_seed["net_points"].tolist() == pytest.approx([100 / 6, 200 / 6])
    assert (per_seed["fixes"] + per_seed["breaks"] + per_seed["both_right"] + per_seed["both_wrong"] == 6).all()
    assert per_example["fixed_on"].tolist() == [2, 1, 2, 0, 0, 0]
    assert per_example["consistent"].tolist() == ["fixed", "", "fixed", "", "", ""]
    # McNemar's exact test: two-sided binomial on the discordant pairs (3 fixes vs 1 break: p = 0.625)
    assert per_seed.loc[1, "mcnemar_p"] == pytest.approx(0.625)


def test_no_discordant_pair_is_no_evidence_and_bad_shapes_are_named():
    y = np.array([0, 1])
    per_seed, _ = flip_counts(y, [y], [y])
    assert per_seed.loc[0, "mcnemar_p"] == 1.0 and per_seed.loc[0, "net_points"] == 0
    with pytest.raises(InputError, match="same number"):
        flip_counts(y, [y, y], [y])


def test_nearest_texts_finds_each_test_examples_nearest_source_text_across_sources():
    from fusionkit.evaluation.flips import nearest_texts

    test = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    sources = {"a": np.array([[3.0, 0.1], [0.0, -1.0]]), "b": np.array([[0.2, 1.0], [1.0, 0.9]])}
    nearest = nearest_texts(test, sources)
    assert nearest["source"].tolist() == ["a", "b", "b"]
    assert nearest["index"].tolist() == [0, 0, 1]
    # cosine written out: (1, 0) against (3, 0.1); (0, 2) against (0.2, 1); (1, 1) against (1, 0.9)
    expected = [3 / np.hypot(3, 0.1), 1 / np.hypot(0.2, 1), 1.9 / (np.sqrt(2) * np.hypot(1, 0.9))]
    assert nearest["similarity"].tolist() == pytest.approx(expected)
    with pytest.raises(InputError, match="'a' has 3-dimensional"):
        nearest_texts(test, {"a": np.ones((2, 3))})


def test_fixes_on_close_examples_are_counted_against_the_share_of_close_examples():
    from fusionkit.evaluation.flips import flips_near_source

    # 8 test examples; the top quarter by similarity (examples 6 and 7) are "close". Two seeds fix 6 and 7 and
    # one seed fixes 0; the break is on 1: 4 of 5 fix events are close (lift 0.8 / 0.25), no break is.
    y = np.zeros(8, dtype=int)
    control = [np.ones(8, dtype=int), np.ones(8, dtype=int)]
    fused = [np.array([0, 1, 1, 1, 1, 1, 0, 0]), np.array([1, 1, 1, 1, 1, 1, 0, 0])]
    control[0][1] = 0  # seed 0's control got example 1 right; its fused run breaks it
    _, per_example = flip_counts(y, control, fused)
    similarity = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.95])
    table = flips_near_source(per_example, similarity, seeds=2).set_index("direction")
    assert table.loc["fixed", "flips"] == 5 and table.loc["fixed", "share_close"] == pytest.approx(0.8)
    assert table.loc["fixed", "lift"] == pytest.approx(0.8 / 0.25)
    assert table.loc["broken", "flips"] == 1 and table.loc["broken", "share_close"] == 0
    assert table.loc["all test examples", "share_close"] == pytest.approx(0.25)
    # examples fixed on both seeds: 6 and 7, both close; Fisher's exact test on [[2, 0], [0, 6]]: p = 1 / C(8, 2)
    assert table.loc["fixed", "examples"] == 2 and table.loc["fixed", "close_examples"] == 2
    assert table.loc["fixed", "fisher_p"] == pytest.approx(1 / 28)
    with pytest.raises(InputError, match="7 values for 8"):
        flips_near_source(per_example, similarity[:7], seeds=2)


def test_the_retrieval_sentence_reads_its_numbers_from_the_table():
    from fusionkit.evaluation.flips import flips_near_source
    from fusionkit.report.findings import fixes_near_source_sentences

    # close: the top quarter of similarities 0.1 ... 0.8, examples 6 and 7, which hold 6 of the 10 fix events;
    # fixed on most seeds: 3, 6, 7; Fisher's exact test on [[2, 1], [0, 5]]: p = C(3, 2) / C(8, 2) = 3 / 28
    per_example = pd.DataFrame({"fixed_on": [0, 0, 0, 3, 0, 1, 3, 3], "broken_on": [1, 0, 0, 0, 0, 0, 0, 0]})
    table = flips_near_source(per_example, np.linspace(0.1, 0.8, 8), seeds=3).assign(
        system="sequential (mr)", train_size=128, seeds=3)
    assert fixes_near_source_sentences(table, 128) == [
        "share of each system's fixes and breaks (over 3 seeds) on the test examples whose nearest text among its "
        "sources' training texts is in the closest quarter (25% of the test examples): sequential (mr) 60% of 10 "
        "fixes, 0% of 1 breaks; the smallest Fisher's exact p (examples fixed on most seeds against the rest, "
        "uncorrected) is 0.11, for sequential (mr)"]
    assert fixes_near_source_sentences(table, 64) == []
