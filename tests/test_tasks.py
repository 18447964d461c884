"""Tasks: real splits and fingerprints, resolution order (data_dir, FUSIONKIT_DATA, the Hub mocked), user files, bad input."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fusionkit import TASKS, load_task, load_task_from_files
from fusionkit.data.tasks import normalised
from fusionkit.errors import ConfigError, DataError, FusionkitError, FusionkitWarning
from fusionkit.data.readers import read_label_text_file

REPO = Path(__file__).resolve().parent.parent
# (train, validation, test) sizes and content hash of each built-in task on the real files, after the rows
# that repeat a text of a later split are dropped (CR 2 train + 1 validation, TREC 21 + 3, SST-2 3 train;
# MR and SUBJ hold no repeated text).
REAL = {
    "mr": ((8528, 1067, 1067), "7d2ce3ccf43f6be0"),
    "cr": ((3014, 376, 378), "e8193b583e46ea1c"),
    "subj": ((7999, 1001, 1000), "11c86058f65334fb"),
    "trec": ((4885, 543, 500), "6239b5d2ec520c3c"),
    "sst2": ((6917, 872, 1821), "3d2fb9b067adfcf6"),
}
LEAKS = {"mr": 0, "cr": 3, "subj": 0, "trec": 24, "sst2": 3}
LABEL_NAMES = {
    "mr": ["negative", "positive"], "cr": ["negative", "positive"], "subj": ["subjective", "objective"],
    "mpqa": ["negative", "positive"], "trec": ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"],
    "sst2": ["negative", "positive"], "sst5": ["very negative", "negative", "neutral", "positive", "very positive"],
}
HUB_IDS = {
    "mr": "cornell-movie-review-data/rotten_tomatoes", "cr": "SetFit/CR", "subj": "SetFit/subj", "mpqa": "SetFit/mpqa",
    "trec": "SetFit/TREC-QC", "sst2": "SetFit/sst2", "sst5": "SetFit/sst5",
}


@pytest.fixture(scope="module")
def real_tasks(data_dir):
    return {name: load_task(name, data_dir=data_dir) for name in REAL}


def write_label_text(path: Path, labels, prefix="row") -> Path:
    path.write_text("".join(f"{label} {prefix} {i} {'word ' * (i % 3)}\n" for i, label in enumerate(labels)))
    return path


def split_sizes(task):
    return len(task.train), len(task.validation), len(task.test)


# ----- the real tasks -----

@pytest.mark.parametrize("name", list(REAL))
def test_real_split_sizes(real_tasks, name):
    assert split_sizes(real_tasks[name]) == REAL[name][0]


@pytest.mark.parametrize("name", list(REAL))
def test_real_leaks_are_dropped_and_recorded(real_tasks, name):
    leaks = [row for row in real_tasks[name].dropped_rows if "later split (leakage)" in row[2]]
    assert len(leaks) == LEAKS[name]
    if leaks:
        assert any("later split" in note for note in real_tasks[name].notes)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_fingerprint_is_the_same_on_every_machine(real_tasks, name):
    assert real_tasks[name].fingerprint() == REAL[name][1]


def test_same_call_gives_the_same_split(real_tasks, data_dir):
    again = load_task("cr", data_dir=data_dir)
    assert again.fingerprint() == real_tasks["cr"].fingerprint()
    assert list(again.test["text"]) == list(real_tasks["cr"].test["text"])


@pytest.mark.parametrize("name", list(REAL))
def test_real_label_names(real_tasks, name):
    task = real_tasks[name]
    assert task.label_names == LABEL_NAMES[name] and task.num_labels == len(LABEL_NAMES[name])
    assert sorted(set(task.train["label"])) == list(range(task.num_labels))


@pytest.mark.parametrize("name, file", [("mr", "rt-polarity.all"), ("cr", "custrev.all"), ("subj", "subj.all")])
def test_seeded_splits_use_every_row_exactly_once(real_tasks, data_dir, name, file):
    from collections import Counter

    rows = read_label_text_file(data_dir / file)
    split_rows = Counter((t, y) for split in real_tasks[name].splits.values() for t, y in zip(split["text"], split["label"]))
    leaked = Counter((rows.texts[rows.line_numbers.index(line)], rows.labels[rows.line_numbers.index(line)])
                     for _, line, reason in real_tasks[name].dropped_rows if "leakage" in reason)
    assert split_rows + leaked == Counter(zip(rows.texts, rows.labels))


@pytest.mark.parametrize("name, splits", [("mr", ("train", "validation", "test")), ("cr", ("train", "validation", "test")),
                                          ("subj", ("train", "validation", "test")), ("trec", ("train", "validation"))])
def test_seeded_splits_are_stratified(real_tasks, name, splits):
    task = real_tasks[name]
    pooled = np.concatenate([np.asarray(task.splits[s]["label"]) for s in splits])
    whole = np.bincount(pooled, minlength=task.num_labels) / len(pooled)
    for split in splits:
        labels = np.asarray(task.splits[split]["label"])
        share = np.bincount(labels, minlength=task.num_labels) / len(labels)
        assert np.abs(share - whole).max() < 0.01, (split, share, whole)


def test_trec_test_is_the_official_file_and_validation_comes_from_train(real_tasks, data_dir):
    task = real_tasks["trec"]
    official = [line.split(" ", 1)[1].strip() for line in (data_dir / "TREC.test.all").read_text().splitlines()]
    assert list(task.test["text"]) == official
    assert any("no official validation" in note for note in task.notes)


def test_sst2_validation_is_the_dev_file(real_tasks, data_dir):
    dev = [line.split(" ", 1)[1].strip() for line in (data_dir / "stsa.binary.dev").read_text().splitlines()]
    assert list(real_tasks["sst2"].validation["text"]) == dev


def test_cr_records_the_dropped_rows_and_why(real_tasks):
    task = real_tasks["cr"]
    assert [row for row in task.dropped_rows if "leakage" not in row[2]] == [
        ("custrev.all", line, "label without text") for line in (769, 1368, 3691, 3775)]
    assert "custrev.all: dropped 4 rows (label without text)" in task.notes


def test_real_tasks_carry_the_exact_accented_rows(real_tasks):
    mr = {t for split in real_tasks["mr"].splits.values() for t in split["text"]}
    assert "the action clich\xe9s just pile up ." in mr
    assert any(t.startswith("\u2026the maudlin way") for t in mr)
    assert any("cp1252" in note for note in real_tasks["mr"].notes)


# ----- subsample -----

def test_subsample_is_stratified_and_deterministic(real_tasks):
    task = real_tasks["trec"]
    small = task.subsample(600, seed=3)
    assert len(small.train) == 600 and len(small.test) == len(task.test)
    whole = np.bincount(task.train["label"], minlength=6) / len(task.train)
    assert np.abs(np.bincount(small.train["label"], minlength=6) / 600 - whole).max() < 0.01
    assert list(small.train["text"]) == list(task.subsample(600, seed=3).train["text"])


def test_subsample_seeds_differ(real_tasks):
    task = real_tasks["cr"]
    assert list(task.subsample(100, seed=0).train["text"]) != list(task.subsample(100, seed=1).train["text"])


def test_subsample_larger_than_train_is_refused(real_tasks):
    with pytest.raises(ConfigError, match=r"n=5000 is larger than the 3014 training examples of task 'cr'"):
        real_tasks["cr"].subsample(5000)


# ----- mpqa and sst5 (not in the shared folder: tiny copies in the same format) -----

def test_mpqa_loads_when_its_file_is_present(tmp_path):
    write_label_text(tmp_path / "mpqa.all", [i % 2 for i in range(60)])
    task = load_task("mpqa", data_dir=tmp_path)
    assert split_sizes(task) == (48, 6, 6) and task.label_names == LABEL_NAMES["mpqa"]


def test_sst5_loads_its_three_files(tmp_path):
    for suffix, n in (("train", 50), ("dev", 10), ("test", 15)):
        write_label_text(tmp_path / f"stsa.fine.{suffix}", [i % 5 for i in range(n)], prefix=suffix)
    task = load_task("sst5", data_dir=tmp_path)
    assert split_sizes(task) == (50, 10, 15) and task.num_labels == 5
    assert task.validation["text"][0].startswith("dev")


def test_registered_task_without_its_file_names_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"task 'mpqa': file '.*mpqa\.all' not found in data folder"):
        load_task("mpqa", data_dir=tmp_path)


# ----- where the data comes from: data_dir, then FUSIONKIT_DATA, then the Hub -----

def test_explicit_data_dir_wins_over_the_environment(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "arg").mkdir()
    write_label_text(tmp_path / "env" / "mpqa.all", [i % 2 for i in range(40)], prefix="env")
    write_label_text(tmp_path / "arg" / "mpqa.all", [i % 2 for i in range(40)], prefix="arg")
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path / "env"))
    task = load_task("mpqa", data_dir=tmp_path / "arg")
    assert task.origin == str(tmp_path / "arg") and task.train["text"][0].startswith("arg")


def test_environment_variable_is_used_without_data_dir(tmp_path, monkeypatch):
    write_label_text(tmp_path / "mpqa.all", [i % 2 for i in range(40)])
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path))
    assert load_task("mpqa").origin == str(tmp_path)


# The integer order of the Hub copies that differ from the local files, as others' code reports it:
# SetFit/TREC-QC numbers coarse classes in first-seen order (NUM before LOC); SetFit/subj has objective = 0.
HUB_ORDER = {"trec": ("label_coarse", "label_coarse_original", ["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"]),
             "subj": ("label", "label_text", ["objective", "subjective"])}


def fake_hub(name: str):
    """A small DatasetDict shaped like the Hub copy of ``name``; row "<split> i" belongs to class i % num_labels."""
    from datasets import Dataset, DatasetDict

    names = LABEL_NAMES[name]

    def split(n, tag):
        ours = [names[i % len(names)] for i in range(n)]
        columns = {"text": [f"{tag} {i}" for i in range(n)], "label": [names.index(x) for x in ours],
                   "label_text": ours}
        if name in HUB_ORDER:
            number_column, name_column, order = HUB_ORDER[name]
            columns[number_column] = [order.index(x) for x in ours]
            columns[name_column] = ours
        return Dataset.from_dict(columns)

    parts = {"train": split(20 * len(names), "train"), "test": split(4 * len(names), "test")}
    if name in ("mr", "sst2", "sst5"):
        parts["validation"] = split(3 * len(names), "validation")
    return DatasetDict(parts)


@pytest.fixture
def hub_calls(monkeypatch):
    """Mock datasets.load_dataset and unset FUSIONKIT_DATA so load_task(name) goes to the (fake) Hub; offline mode
    is lifted for the call (nothing reaches the network: load_dataset is the fake)."""
    import datasets

    calls = []

    def load_dataset(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        name = next(n for n, i in HUB_IDS.items() if i == dataset_id)
        return fake_hub(name)

    monkeypatch.delenv("FUSIONKIT_DATA", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("name", list(HUB_IDS))
def test_hub_is_the_last_resort_with_the_documented_id(hub_calls, name):
    task = load_task(name)
    assert hub_calls == [HUB_IDS[name]] and task.origin == f"hub:{HUB_IDS[name]}"
    for split in task.splits.values():
        assert split.column_names == ["text", "label"]
    assert task.label_names == LABEL_NAMES[name]


@pytest.mark.parametrize("name", ["trec", "subj"])
def test_hub_labels_are_matched_by_name_not_by_number(hub_calls, name):
    task = load_task(name)
    for split in task.splits.values():  # the fake row "train 7" has class 7 % num_labels by name
        assert all(label == int(text.split()[1]) % task.num_labels for text, label in zip(split["text"], split["label"]))


def test_hub_label_name_outside_the_task_is_refused(hub_calls, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake_hub("trec").map(
        lambda row: {"label_coarse_original": "QUANTITY" if row["label_coarse_original"] == "NUM" else
                     row["label_coarse_original"]}))
    with pytest.raises(DataError, match=r"hf:/SetFit/TREC-QC/train', row 5: label name 'QUANTITY' is not one of"):
        load_task("trec")


def test_hub_without_the_expected_column_is_refused(hub_calls, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake_hub("cr").rename_column("text", "sentence"))
    with pytest.raises(DataError, match=r"SetFit/CR/train': no column 'text'"):
        load_task("cr")


def test_unreachable_hub_names_the_dataset_id(monkeypatch):
    import datasets

    def offline(dataset_id, *a, **k):
        raise ConnectionError("offline")

    monkeypatch.delenv("FUSIONKIT_DATA", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"task 'cr': no data_dir or FUSIONKIT_DATA .* 'SetFit/CR' could not be loaded"):
        load_task("cr")


def test_every_hub_id_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for name, spec in TASKS.items():
        assert re.search(rf"\| `{name}` \|.*\| `{re.escape(spec.hub.dataset_id)}` \|", readme), name
    assert {name: spec.hub.dataset_id for name, spec in TASKS.items()} == HUB_IDS


# ----- user datasets -----

ROWS = [(f"{text} {i}", label) for i, (text, label) in enumerate(
    [("a fine phone", "pos"), ("a broken phone", "neg"), ("lovely screen", "pos"), ("awful battery", "neg")] * 10)]


def write_table(path: Path, rows=ROWS, text="text", label="label") -> Path:
    import pandas as pd

    frame = pd.DataFrame({text: [t for t, _ in rows], label: [y for _, y in rows]})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_user_file_in_each_format(tmp_path, suffix):
    task = load_task_from_files(write_table(tmp_path / f"mine{suffix}"))
    assert split_sizes(task) == (32, 4, 4) and task.name == "mine"
    assert task.label_names == ["neg", "pos"]
    assert all(task.label_names[y] == dict(ROWS)[t] for t, y in zip(task.train["text"], task.train["label"]))


def test_user_file_path_through_load_task(tmp_path):
    path = write_table(tmp_path / "mine.csv")
    assert load_task(str(path)).fingerprint() == load_task_from_files(path).fingerprint()


def test_user_trio_keeps_its_splits(tmp_path):
    train = write_table(tmp_path / "train.jsonl", ROWS[14:])
    validation = write_table(tmp_path / "validation.jsonl", ROWS[8:14])
    test = write_table(tmp_path / "test.jsonl", ROWS[:8])
    task = load_task_from_files(train, validation, test, name="trio")
    assert split_sizes(task) == (26, 6, 8) and task.name == "trio"
    assert list(task.test["text"]) == [t for t, _ in ROWS[:8]]


def test_user_columns_by_name(tmp_path):
    path = write_table(tmp_path / "mine.csv", text="sentence", label="y")
    task = load_task_from_files(path, text_column="sentence", label_column="y")
    assert len(task.train) == 32


def test_string_labels_are_mapped_and_the_mapping_kept(tmp_path):
    rows = [(f"text {i}", ["low", "high", "mid"][i % 3]) for i in range(60)]
    task = load_task_from_files(write_table(tmp_path / "three.csv", rows))
    assert task.label_names == ["high", "low", "mid"]
    for text, label in zip(task.train["text"], task.train["label"]):
        assert task.label_names[label] == ["low", "high", "mid"][int(text.split()[1]) % 3]
    assert "labels mapped to classes: 'high'->0, 'low'->1, 'mid'->2" in task.notes


def test_integer_labels_keep_their_values(tmp_path):
    rows = [(f"text {i}", i % 3) for i in range(60)]
    task = load_task_from_files(write_table(tmp_path / "ints.parquet", rows))
    assert task.label_names == ["0", "1", "2"]
    assert all(label == int(text.split()[1]) % 3 for text, label in zip(task.train["text"], task.train["label"]))


# ----- bad input: a fusionkit error naming the file, the line and the problem -----

def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'imdb'; known tasks: cr, mpqa, mr, sst2, sst5, subj, trec"):
        load_task("imdb")


def test_missing_user_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"file '.*absent\.csv' not found"):
        load_task(str(tmp_path / "absent.csv"))


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data folder '.*nowhere' \(from data_dir\) does not exist"):
        load_task("mr", data_dir=tmp_path / "nowhere")


def test_missing_folder_in_the_environment_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"data folder '.*nowhere' \(from FUSIONKIT_DATA\) does not exist"):
        load_task("mr")


def test_non_integer_label_in_a_task_file(tmp_path):
    (tmp_path / "custrev.all").write_text("0 good\n1 bad\nx ugly\n")
    with pytest.raises(DataError, match=r"file '.*custrev\.all', line 3: label 'x' is not an integer"):
        load_task("cr", data_dir=tmp_path)


def test_label_outside_the_declared_range(tmp_path):
    write_label_text(tmp_path / "custrev.all", [0, 1] * 10 + [2])
    with pytest.raises(DataError, match=r"file '.*custrev\.all', line 21: label 2 is outside 0\.\.1 declared for task 'cr'"):
        load_task("cr", data_dir=tmp_path)


def write_rows(path: Path, labels: list, header: str = "text,label") -> Path:
    """A CSV whose row i (line i + 2) is `text i,<labels[i]>`: every text differs, so nothing leaks."""
    path.write_text(header + "\n" + "".join(f"text {i},{label}\n" for i, label in enumerate(labels)))
    return path


def test_whole_number_labels_are_classes_in_numeric_order_without_phantom_classes(tmp_path):
    task = load_task_from_files(write_rows(tmp_path / "ints.csv", [1, 2] * 20))
    assert task.label_names == ["1", "2"] and set(task.train["label"]) == {0, 1}
    signed = load_task_from_files(write_rows(tmp_path / "signed.csv", [-1, 1] * 20))
    assert signed.label_names == ["-1", "1"]


def test_labels_mixing_numbers_and_names_are_refused_with_file_line_and_value(tmp_path):
    path = write_rows(tmp_path / "mixed.csv", [0, 1] * 20 + ["pos"])
    with pytest.raises(DataError, match=r"file '.*mixed\.csv', line 42: label 'pos' is a text while other labels "
                                        r"are numbers \(e\.g\. '0' on line 2\); pass label_names"):
        load_task_from_files(path)
    task = load_task_from_files(path, label_names=["0", "1", "pos"])
    assert task.label_names == ["0", "1", "pos"]


def test_a_fraction_is_not_a_class(tmp_path):
    path = write_rows(tmp_path / "half.csv", [0, 1] * 20 + [0.5])
    with pytest.raises(DataError, match=r"file '.*half\.csv', line 42: label 0\.5 is not a whole number"):
        load_task_from_files(path)


@pytest.mark.parametrize("missing", ["NaN", "NA", "nan", "None", "null", "NULL", ""])
def test_missing_label_cells_are_dropped_not_turned_into_a_class(tmp_path, missing):
    task = load_task_from_files(write_rows(tmp_path / "gaps.csv", ["pos", "neg"] * 20 + [missing] * 3))
    assert task.label_names == ["neg", "pos"]
    assert [(line, reason) for _, line, reason in task.dropped_rows] == [(42, "missing label"), (43, "missing label"),
                                                                        (44, "missing label")]


def test_one_class_is_an_error_naming_the_file_and_the_class(tmp_path):
    with pytest.raises(DataError, match=r"file 'one\.csv': every usable training row has label 'pos'; a "
                                        r"classifier needs at least two classes"):
        load_task_from_files(write_rows(tmp_path / "one.csv", ["pos"] * 40 + ["NaN"] * 5))


def test_texts_of_a_later_split_are_dropped_from_earlier_ones_and_recorded(tmp_path):
    train = write_rows(tmp_path / "train.csv", ["pos", "neg"] * 20)  # text 0 .. text 39
    validation = tmp_path / "validation.csv"
    validation.write_text("text,label\ntext 3,neg\nfresh a,pos\nfresh b,neg\nfresh c,pos\n")
    test = tmp_path / "test.csv"
    test.write_text("text,label\nTEXT   1,neg\ntext 2,pos\nfresh c,pos\nnew d,neg\n")
    task = load_task_from_files(train, validation, test)
    assert split_sizes(task) == (37, 3, 4)
    leaks = sorted((file, line) for file, line, reason in task.dropped_rows if "later split (leakage)" in reason)
    # train lines 3-5 hold texts 1-3 ("text 1" is "TEXT   1" with whitespace collapsed and case folded)
    assert leaks == [("train.csv", 3), ("train.csv", 4), ("train.csv", 5), ("validation.csv", 5)]
    assert any("dropped 3 train, 1 validation rows" in note for note in task.notes)


def test_one_file_with_repeated_rows_is_deduplicated_or_kept_with_a_warning(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{'pos' if i % 2 else 'neg'}\n" for i in range(50)) * 2)
    deduped = load_task_from_files(path)
    leaks = [row for row in deduped.dropped_rows if "later split (leakage)" in row[2]]
    assert leaks and not {normalised(t) for t in deduped.train["text"]} & {normalised(t) for t in deduped.test["text"]}
    with pytest.warns(FusionkitWarning, match=rf"task 'twice': .*rows repeat a text of a later split.*dedup=False"):
        kept = load_task_from_files(path, dedup=False)
    assert sum(map(len, kept.splits.values())) - sum(map(len, deduped.splits.values())) == len(leaks)
