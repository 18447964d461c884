"""What fusion costs the source skill: the retention probe on a planted case, and the table the report shows."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from fusionkit.modeling.encoders import Encoder, load_encoder
from fusionkit.report.tables import retention_table
from fusionkit.study.runner import retention_sets, source_skill


def test_an_overwritten_encoder_loses_the_source_skill_and_a_frozen_one_keeps_it(toy_source):
    base = load_encoder("tiny", max_length=16)
    sets = retention_sets([toy_source], 30)
    assert len(sets[toy_source.name].train) == 30 and len(sets[toy_source.name].test) == min(30, len(toy_source.test))
    before = source_skill(base, sets)[toy_source.name]
    frozen = source_skill(Encoder(copy.deepcopy(base.model), base.tokenizer, "frozen", "mean", 16), sets)
    assert frozen[toy_source.name] == before  # untouched weights: the same skill, exactly
    overwritten = copy.deepcopy(base.model)
    with torch.no_grad():  # every weight rewritten: the features no longer depend on the words
        for param in overwritten.parameters():
            param.zero_()
    after = source_skill(Encoder(overwritten, base.tokenizer, "overwritten", "mean", 16), sets)[toy_source.name]
    majority = np.bincount(np.asarray(sets[toy_source.name].test["label"])).max() / len(sets[toy_source.name].test)
    assert before > majority + 0.1  # the toy's label words survive even the tiny random encoder's mean pooling
    assert after == pytest.approx(majority)  # constant features: the probe can only guess the majority


def test_retention_table_pairs_each_run_with_its_seeds_expert():
    runs = pd.DataFrame({
        "system": ["sequential (mr)"] * 3 + ["finetune"] * 3 + ["representation sum"] * 3,
        "role": ["fusion"] * 3 + ["control"] * 3 + ["fusion"] * 3, "train_size": 128, "seed": [0, 1, 2] * 3,
        "details": [json.dumps({"source_skill": {"mr": a}}) for a in (0.70, 0.72, 0.68, 0.60, 0.61, 0.62)]
        + [json.dumps({"arch": {}})] * 3})  # no encoder of its own: no row
    references = pd.DataFrame({"seed": [None, 0, 1, 2], "source": "mr", "reference": ["base", "expert", "expert",
                                                                                        "expert"],
                               "accuracy": [0.65, 0.80, 0.78, 0.82]})
    table = retention_table(runs, references).set_index("system")
    assert list(table.index) == ["sequential (mr)", "finetune"]
    row = table.loc["sequential (mr)"]
    drops = np.array([80 - 70, 78 - 72, 82 - 68], dtype=float)  # expert minus system, points, seed by seed
    half = scipy.stats.t.ppf(0.975, 2) * drops.std(ddof=1) / np.sqrt(3)
    assert row["forgetting"] == pytest.approx(drops.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((drops.mean() - half, drops.mean() + half))
    assert (row["skill"], row["expert"], row["base"], row["n_seeds"]) == pytest.approx((0.70, 0.80, 0.65, 3))
