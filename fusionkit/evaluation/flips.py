"""Which test examples fusion fixes and which it breaks, against its matched control, seed by seed.

A gain of +3 points is the difference of two larger numbers: the examples the control got wrong and the fused
system gets right (*fixes*) minus the reverse (*breaks*). Counted per seed (each seed pairs a fused run with its
control's run on the same seed), and per example over the seeds: an example fixed on every seed is a consistent
fix, the kind worth reading. McNemar's exact test on each seed's 2x2 table (statsmodels) is a secondary view:
it asks whether that one pair of runs differs beyond these examples' noise, not whether retraining would agree.

The retrieval view asks where the fixes fall: on test examples whose nearest source training text (by the base
encoder's embeddings) is close, or anywhere. "Close" is declared from the texts alone, before any prediction is
read: the top quarter of the test examples by their nearest source text's cosine similarity (``CLOSE_QUANTILE``),
so a quarter of all test examples are close by construction and a share of fixes well above it says that fusion
helped where the source has similar text.
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


CLOSE_QUANTILE = 0.75  # "close": a test example in the top quarter by its nearest source text's similarity


def nearest_texts(test_embeddings, source_embeddings: dict) -> pd.DataFrame:
    """Each test example's nearest source training text by cosine similarity of embeddings (exact search,
    scikit-learn's ``NearestNeighbors``): ``source`` (the name in ``source_embeddings``: name -> [n_s, d]),
    ``index`` (row in that source's embeddings) and ``similarity`` (cosine, in [-1, 1])."""
    from sklearn.neighbors import NearestNeighbors

    test = as_checked_array(test_embeddings, "test_embeddings", ndim=2).astype(np.float64)
    if not source_embeddings:
        raise InputError("nearest_texts needs at least one source's embeddings")
    best = pd.DataFrame({"source": [""] * len(test), "index": -1, "similarity": -np.inf})
    for name, embeddings in source_embeddings.items():
        source = as_checked_array(embeddings, f"source_embeddings[{name!r}]", ndim=2).astype(np.float64)
        if source.shape[1] != test.shape[1]:
            raise InputError(f"source {name!r} has {source.shape[1]}-dimensional embeddings, the test examples "
                             f"{test.shape[1]}: embed both with the same encoder")
        distance, index = NearestNeighbors(n_neighbors=1, metric="cosine").fit(source).kneighbors(test)
        similarity = 1.0 - distance[:, 0]
        closer = similarity > best["similarity"].to_numpy()
        best.loc[closer, "source"] = name
        best.loc[closer, "index"] = index[closer, 0]
        best.loc[closer, "similarity"] = similarity[closer]
    return best


def flips_near_source(per_example: pd.DataFrame, similarity, seeds: int,
                      quantile: float = CLOSE_QUANTILE) -> pd.DataFrame:
    """Where the fixes and breaks of ``flip_counts``'s per-example table fall: ``similarity`` is each test example's
    nearest source text similarity (``nearest_texts``), ``seeds`` the number of seeds compared.

    One row per direction (fixed, broken) and one for all test examples: ``flips`` counts fix (break) events over
    the seeds, ``share_close`` the share of them on close examples (the all-examples row: the share of close test
    examples, about 1 - ``quantile``), ``lift`` that share over the all-examples one; ``examples`` and
    ``close_examples`` count the examples fixed (broken) on more than half the seeds, and ``fisher_p`` is Fisher's
    exact test of closeness between them and the other test examples (scipy; examples, not seeds, are the units,
    so seeds do not count an example twice)."""
    from scipy.stats import fisher_exact

    similarity = as_checked_array(similarity, "similarity", ndim=1).astype(np.float64)
    if len(similarity) != len(per_example):
        raise InputError(f"similarity has {len(similarity)} values for {len(per_example)} test examples")
    if not 0 < quantile < 1:
        raise InputError(f"quantile must lie in (0, 1), got {quantile}")
    threshold = float(np.quantile(similarity, quantile))
    close = similarity >= threshold
    base_share = float(close.mean())
    rows = []
    for direction, column in (("fixed", "fixed_on"), ("broken", "broken_on")):
        events = per_example[column].to_numpy()
        majority = events * 2 > seeds
        table = [[int((majority & close).sum()), int((majority & ~close).sum())],
                 [int((~majority & close).sum()), int((~majority & ~close).sum())]]
        share = float(events[close].sum() / events.sum()) if events.sum() else np.nan
        rows.append({"direction": direction, "flips": int(events.sum()), "share_close": share,
                     "lift": share / base_share, "examples": int(majority.sum()), "close_examples": table[0][0],
                     "fisher_p": float(fisher_exact(table).pvalue) if majority.any() else np.nan})
    rows.append({"direction": "all test examples", "flips": len(similarity), "share_close": base_share, "lift": 1.0,
                 "examples": len(similarity), "close_examples": int(close.sum()), "fisher_p": np.nan})
    return pd.DataFrame(rows).assign(close_similarity=threshold)
