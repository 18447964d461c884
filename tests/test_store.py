"""The results store keeps complete records only, round-trips predictions exactly and keys runs by their config."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from fusionkit._io import file_sha256
from fusionkit.errors import DataError, FusionkitWarning, InputError
from fusionkit.evaluation.metrics import score_all
from fusionkit.study.store import ResultsStore, run_key

CONFIG = {"target": "cr", "sources": ["mr", "subj"], "strategy": "attention", "knobs": {"lr": 2e-5, "rank": 8},
          "seed": 0, "train_size": 512, "encoder": "minilm"}
COST = {"trainable_params": 1200, "train_seconds": 3.5, "infer_ms_per_example": 0.2}


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "runs")


def make_predictions(seed: int):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=20)
    return rng.integers(0, 3, 20), probs


@pytest.fixture
def predictions():
    return make_predictions(0)


SCORES = score_all(*make_predictions(0))


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
        store.put(run_key(config), config, score_all(*make_predictions(seed)), COST, *make_predictions(seed))
    frame = store.to_frame()
    assert len(frame) == 2
    assert {"run_id", "created_at", *CONFIG, *SCORES, *COST} <= set(frame.columns)
    assert (frame["sources"] == "mr,subj").all()
    assert json.loads(frame["knobs"].iloc[0]) == CONFIG["knobs"]
    assert sorted(frame["accuracy"]) == pytest.approx(sorted(score_all(*make_predictions(s))["accuracy"]
                                                             for s in (0, 1)))


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


def put_one(store, predictions) -> str:
    key = run_key(CONFIG)
    store.put(key, CONFIG, SCORES, COST, *predictions)
    return key


def flip_one_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def swap_class_columns(path):
    with np.load(path) as arrays:
        y_true, probs = arrays["y_true"], arrays["probs"]
    np.savez(path, y_true=y_true, probs=probs[:, ::-1])


def pickle_instead(path):
    np.save(path.with_suffix(".npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path.with_suffix(".npy").replace(path)


@pytest.mark.parametrize("damage, reason", [
    (lambda root, key: (root / f"{key}.json").write_text('{"run_id": "x", "conf'), "corrupt"),
    (lambda root, key: (root / f"{key}.npz").unlink(), "is missing"),
    (lambda root, key: (root / f"{key}.npz").write_bytes((root / f"{key}.npz").read_bytes()[:100]), "damaged"),
    (lambda root, key: (root / f"{key}.npz").write_bytes(b"garbage" * 50), "damaged"),
    (lambda root, key: flip_one_bit(root / f"{key}.npz"), "damaged|checksum"),
    (lambda root, key: swap_class_columns(root / f"{key}.npz"), "checksum"),
    (lambda root, key: pickle_instead(root / f"{key}.npz"), "damaged"),
], ids=["truncated json", "missing npz", "truncated npz", "garbage npz", "one bit flipped", "class columns swapped",
        "a pickle"])
def test_a_damaged_record_is_moved_aside_named_and_counted_as_not_stored(store, predictions, damage, reason):
    key = put_one(store, predictions)
    damage(store.root, key)
    with pytest.warns(FusionkitWarning, match=rf"'{store.root}/{key}\.(json|npz)' is damaged \((.*)({reason})"):
        assert not store.has(key)
    assert not list(store.root.glob(f"{key}.*")) and list((store.root / "damaged").glob(f"{key}.json.*"))
    assert store.to_frame().empty
    store.put(key, CONFIG, SCORES, COST, *predictions)  # the run is redone and stored again
    assert store.has(key)


def test_valid_arrays_that_disagree_with_the_scores_are_not_trusted(store, predictions):
    key = put_one(store, predictions)
    record = json.loads((store.root / f"{key}.json").read_text())
    swap_class_columns(store.root / f"{key}.npz")
    record["predictions_sha256"] = file_sha256(store.root / f"{key}.npz")  # as if the checksum were redone too
    (store.root / f"{key}.json").write_text(json.dumps(record))
    with pytest.warns(FusionkitWarning, match=r"gives accuracy .* but its record says"):
        assert not store.has(key)


def test_no_error_suggests_allow_pickle(store, predictions):
    key = put_one(store, predictions)
    pickle_instead(store.root / f"{key}.npz")
    with pytest.raises(DataError) as error:
        store.predictions(key)
    assert "pickle" in str(error.value) and "allow_pickle" not in str(error.value)


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
    store.put("old", {"label": "finetune", "seed": 0}, SCORES, {}, y, probs)  # as stored before
    store.put("new", {"system": "lora", "seed": 0}, SCORES, {}, y, probs)
    frame = store.to_frame().set_index("run_id")
    assert frame.loc["old", "system"] == "finetune" and frame.loc["new", "system"] == "lora"
    assert "label" not in frame.columns
