"""Which examples fusion fixes and breaks: counts per seed and per example, McNemar against statsmodels' table."""
import numpy as np
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
