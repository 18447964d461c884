"""Which test examples fusion fixes and which it breaks, against its matched control, seed by seed.

A gain of +3 points is the difference of two larger numbers: the examples the control got wrong and the fused
system gets right (*fixes*) minus the reverse (*breaks*). Counted per seed (each seed pairs a fused run with its
control's run on the same seed), and per example over the seeds: an example fixed on every seed is a consistent
fix, the kind worth reading. McNemar's exact test on each seed's 2x2 table (statsmodels) is a secondary view:
it asks whether that one pair of runs differs beyond these examples' noise, not whether retraining would agree.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import as_checked_array


def flip_counts(y, control_predictions, fused_predictions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``control_predictions[s]`` and ``fused_predictions[s]`` are the two systems' predicted labels on the test
    examples for seed s (the same examples, in the same order, as ``y``).

    Returns (1) per seed: fixes, breaks, both right, both wrong, the net change in points, and McNemar's exact
    p-value (binomial on the discordant pairs; 1 without any); (2) per example: how many seeds fixed it, broke it,
    and ``consistent`` ("fixed" / "broken" on every seed, else "")."""
    from statsmodels.stats.contingency_tables import mcnemar

    y = as_checked_array(y, "y", ndim=1)
    control = np.asarray([as_checked_array(p, "control_predictions", ndim=1) for p in control_predictions])
    fused = np.asarray([as_checked_array(p, "fused_predictions", ndim=1) for p in fused_predictions])
    if control.shape != fused.shape or control.ndim != 2 or control.shape[1] != len(y) or not len(control):
        raise InputError(f"need the same number (>= 1) of control and fused seeds, each predicting all {len(y)} "
                         f"examples; got {control.shape} and {fused.shape}")
    control_right, fused_right = control == y, fused == y
    fixed, broken = ~control_right & fused_right, control_right & ~fused_right
    rows = []
    for seed in range(len(control)):
        table = [[int((control_right[seed] & fused_right[seed]).sum()), int(broken[seed].sum())],
                 [int(fixed[seed].sum()), int((~control_right[seed] & ~fused_right[seed]).sum())]]
        discordant = table[0][1] + table[1][0]
        rows.append({"seed_index": seed, "fixes": table[1][0], "breaks": table[0][1], "both_right": table[0][0],
                     "both_wrong": table[1][1], "net_points": 100 * (table[1][0] - table[0][1]) / len(y),
                     "mcnemar_p": float(mcnemar(table, exact=True).pvalue) if discordant else 1.0})
    seeds = len(control)
    per_example = pd.DataFrame({"example": np.arange(len(y)), "label": y, "fixed_on": fixed.sum(axis=0),
                                "broken_on": broken.sum(axis=0)})
    per_example["consistent"] = np.where(per_example["fixed_on"] == seeds, "fixed",
                                         np.where(per_example["broken_on"] == seeds, "broken", ""))
    return pd.DataFrame(rows), per_example
