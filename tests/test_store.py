"""The results store keeps complete records only, round-trips predictions exactly and keys runs by their config."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from fusionkit.errors import DataError, InputError
from fusionkit.study.store import ResultsStore, run_key

CONFIG = {"target": "cr", "sources": ["mr", "subj"], "strategy": "attention", "knobs": {"lr": 2e-5, "rank": 8},
          "seed": 0, "train_size": 512, "encoder": "minilm"}
SCORES = {"accuracy": 0.85, "nll": 0.4}
COST = {"trainable_params": 1200, "train_seconds": 3.5, "infer_ms_per_example": 0.2}


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "runs")


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=20)
    return rng.integers(0, 3, 20), probs


def test_put_has_and_predictions_round_trip(store, predictions):
    key = run_key(CONFIG)
    assert not store.has(key)
    store.put(key, CONFIG, SCORES, COST, *predictions)
    assert store.has(key)
    y_true, probs = store.predictions(key)
    np.testing.assert_array_equal(y_true, predictions[0])
    np.testing.assert_array_equal(probs, predictions[1])
    assert json.loads((store.root / f"{key}.json").read_text())["config"] == CONFIG


def test_to_frame_has_one_flat_row_per_run(store, predictions):
    for seed in (0, 1):
        config = {**CONFIG, "seed": seed}
        store.put(run_key(config), config, {**SCORES, "accuracy": 0.8 + seed / 100}, COST, *predictions)
    frame = store.to_frame()
    assert len(frame) == 2
    assert {"run_id", "created_at", *CONFIG, *SCORES, *COST} <= set(frame.columns)
    assert (frame["sources"] == "mr,subj").all()
    assert json.loads(frame["knobs"].iloc[0]) == CONFIG["knobs"]
    assert sorted(frame["accuracy"]) == pytest.approx([0.8, 0.81])


def test_empty_store_gives_an_empty_frame(store):
    assert isinstance(store.to_frame(), pd.DataFrame) and store.to_frame().empty


def test_leftover_temp_file_or_lone_npz_is_not_a_record(store, predictions):
    key = run_key(CONFIG)
    (store.root / f".{key}.json.abc123.tmp").write_text('{"run_id": "half written')
    np.savez(store.root / f"{key}.npz", y_true=predictions[0], probs=predictions[1])
    assert not store.has(key)
    assert store.to_frame().empty
    with pytest.raises(DataError, match=f"no complete record {key}.json"):
        store.predictions(key)


def test_a_run_killed_while_writing_the_record_leaves_nothing(store, predictions, monkeypatch):
    real_replace = os.replace

    def crash_on_json(source, target):
        if str(target).endswith(".json"):
            raise KeyboardInterrupt
        real_replace(source, target)
    monkeypatch.setattr(os, "replace", crash_on_json)
    key = run_key(CONFIG)
    with pytest.raises(KeyboardInterrupt):
        store.put(key, CONFIG, SCORES, COST, *predictions)
    assert not store.has(key)
    assert not list(store.root.glob("*.tmp")) and not list(store.root.glob(".*.tmp"))


def test_run_key_ignores_dict_order_and_sees_every_field():
    reordered = dict(reversed(list(CONFIG.items())))
    reordered["knobs"] = {"rank": 8, "lr": 2e-5}
    assert run_key(reordered) == run_key(CONFIG)
    assert run_key({**CONFIG, "seed": np.int64(0)}) == run_key(CONFIG)
    changes = {"target": "mr", "sources": ["subj", "mr"], "strategy": "concat", "knobs": {"lr": 3e-5, "rank": 8},
               "seed": 1, "train_size": 256, "encoder": "tiny"}
    keys = {run_key({**CONFIG, field: value}) for field, value in changes.items()}
    assert len(keys) == len(changes) and run_key(CONFIG) not in keys


def test_corrupt_record_names_the_file(store, predictions):
    key = run_key(CONFIG)
    store.put(key, CONFIG, SCORES, COST, *predictions)
    (store.root / f"{key}.json").write_text("{not json")
    with pytest.raises(DataError, match=f"results record .*{key}.json is corrupt"):
        store.to_frame()


def test_bad_records_are_refused_before_writing(store, predictions):
    with pytest.raises(InputError, match="probs rows must sum to 1"):
        store.put("abc", CONFIG, SCORES, COST, predictions[0], predictions[1] * 0.5)
    with pytest.raises(InputError, match="scores key 'seed' clashes with a config column"):
        store.put("abc", CONFIG, {"seed": 1.0}, COST, *predictions)
    with pytest.raises(InputError, match="run key must be letters, digits"):
        store.put("../escape", CONFIG, SCORES, COST, *predictions)
    with pytest.raises(InputError, match="config cannot be stored as JSON: object value"):
        run_key({"callback": object()})
    assert not any(store.root.iterdir())


def test_runs_stored_before_the_system_rename_keep_their_ids_and_read_as_systems(store, predictions):
    y, probs = predictions
    assert run_key({"system": "finetune", "seed": 0}) == run_key({"label": "finetune", "seed": 0})
    store.put("old", {"label": "finetune", "seed": 0}, {"accuracy": 0.5}, {}, y, probs)  # as stored before
    store.put("new", {"system": "lora", "seed": 0}, {"accuracy": 0.6}, {}, y, probs)
    frame = store.to_frame().set_index("run_id")
    assert frame.loc["old", "system"] == "finetune" and frame.loc["new", "system"] == "lora"
    assert "label" not in frame.columns
