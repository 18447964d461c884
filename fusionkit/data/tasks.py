"""Named text-classification tasks and user datasets, loaded into train/validation/test splits.

``load_task("cr")`` resolves the data in this order: the ``data_dir`` argument,
the ``FUSIONKIT_DATA`` environment variable, then the Hugging Face Hub.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fusionkit._io import stream_digest
from fusionkit.errors import ConfigError, DataError
from fusionkit.data.readers import RawRows, read_label_text_file, read_table_file

# Ratios for tasks without an official split (MR, CR, SUBJ, MPQA, user files given as one file).
SPLIT_RATIOS = (0.8, 0.1, 0.1)
# Tasks with an official test but no validation (TREC) carve this share of train.
VALIDATION_SHARE = 0.1
# The split seed is fixed and separate from experiment seeds: every run sees the same test set.
SPLIT_SEED = 0
# File suffixes load_task hands to load_task_from_files.
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".gz")


@dataclass(frozen=True)
class HubSource:
    """Where the same task lives on the Hugging Face Hub (used when no local folder is given)."""

    dataset_id: str
    text_column: str = "text"
    label_column: str = "label"
    # A column of label *names*, matched to the task's label_names, for Hub copies whose integer order
    # may differ from the local files' (SetFit/TREC-QC's label_coarse appears to number classes in
    # first-seen order, NUM before LOC; SetFit/subj is used with objective = 0 by others' code).
    # Matching by name cannot swap classes silently: an unknown name is an error.
    label_name_column: str | None = None


@dataclass(frozen=True)
class TaskDefinition:
    """A registered task: its files in the local folder, its label names, its Hub fallback."""

    name: str
    description: str
    label_names: tuple[str, ...]
    files: dict  # split ("all", "train", "validation", "test") -> file name
    hub: HubSource


TASKS: dict[str, TaskDefinition] = {
    definition.name: definition
    for definition in [
        TaskDefinition("mr", "movie review polarity (Pang & Lee 2005)", ("negative", "positive"),
                 {"all": "rt-polarity.all"}, HubSource("cornell-movie-review-data/rotten_tomatoes")),
        TaskDefinition("cr", "customer product review polarity (Hu & Liu 2004)", ("negative", "positive"),
                 {"all": "custrev.all"}, HubSource("SetFit/CR")),
        TaskDefinition("subj", "subjectivity (Pang & Lee 2004)", ("subjective", "objective"),
                 {"all": "subj.all"}, HubSource("SetFit/subj", label_name_column="label_text")),
        TaskDefinition("mpqa", "opinion polarity (Wiebe et al. 2005)", ("negative", "positive"),
                 {"all": "mpqa.all"}, HubSource("SetFit/mpqa")),
        TaskDefinition("trec", "question type (Li & Roth 2002)", ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"),
                 {"train": "TREC.train.all", "test": "TREC.test.all"},
                 HubSource("SetFit/TREC-QC", label_column="label_coarse", label_name_column="label_coarse_original")),
        TaskDefinition("sst2", "binary sentiment treebank (Socher et al. 2013)", ("negative", "positive"),
                 {"train": "stsa.binary.train", "validation": "stsa.binary.dev", "test": "stsa.binary.test"},
                 HubSource("SetFit/sst2")),
        TaskDefinition("sst5", "fine-grained sentiment treebank (Socher et al. 2013)",
                 ("very negative", "negative", "neutral", "positive", "very positive"),
                 {"train": "stsa.fine.train", "validation": "stsa.fine.dev", "test": "stsa.fine.test"},
                 HubSource("SetFit/sst5")),
    ]
}


@dataclass
class Task:
    """A text-classification task: three ``datasets.Dataset`` splits with columns ``text`` and ``label``."""

    name: str
    train: object
    validation: object
    test: object
    label_names: list[str]
    origin: str  # the folder, file or Hub id the data came from
    notes: list[str] = field(default_factory=list)  # what the loader did, in words
    dropped_rows: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> dict:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def fingerprint(self) -> str:
        """A content hash of all three splits: equal on any machine iff the data and split are equal."""
        return stream_digest(chunk for split_name, split in self.splits.items()
                             for chunk in [split_name, *(f"{label}\t{text}\n"
                                                        for text, label in zip(split["text"], split["label"]))])

    def subsample(self, n: int, seed: int = 0) -> "Task":
        """The same task with a stratified subsample of ``n`` training examples."""
        n_train = len(self.train)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"subsample: n must be a positive integer, got {n!r}")
        if n > n_train:
            raise ConfigError(f"subsample: n={n} is larger than the {n_train} training examples of task '{self.name}'")
        if n == n_train:
            return self
        labels = np.asarray(self.train["label"])
        indices = stratified_sample(labels, n, seed)
        return replace(self, train=self.train.select(indices),
                       notes=self.notes + [f"train subsampled to {n} examples (stratified, seed {seed})"])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Task({self.name!r}, {sizes}, labels={self.label_names}, origin={self.origin!r})"


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified sample of size ``n`` (each class in proportion, at least one each)."""
    from sklearn.model_selection import train_test_split

    classes = np.unique(labels)
    if n < len(classes):
        raise ConfigError(f"a stratified sample needs at least one example per class: n={n} < {len(classes)} classes")
    if n >= len(labels):
        return np.arange(len(labels))
    indices = np.arange(len(labels))
    stratify = labels if np.bincount(labels).min() >= 2 else None
    chosen, _ = train_test_split(indices, train_size=n, stratify=stratify, random_state=seed)
    return np.sort(chosen)


def _split_off(labels: np.ndarray, share: float, seed: int, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``range(len(labels))`` into (rest, held_out) with ``share`` held out."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    stratify = labels if np.bincount(labels).min() >= 2 else None
    try:
        rest, held = train_test_split(indices, test_size=share, stratify=stratify, random_state=seed)
    except ValueError as err:  # too few rows (or rows per class) to hold any out: sklearn's words, our file
        raise DataError(f"file '{source}': too few usable rows to split (holding out {share:.0%} of "
                        f"{len(labels)} rows failed: {err})") from None
    return np.sort(rest), np.sort(held)


def _to_dataset(texts: list[str], labels: list[int], label_names: list[str]):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    return Dataset.from_dict({"text": list(texts), "label": [int(x) for x in labels]}, features=features)


def _check_label_range(rows: RawRows, num_labels: int, task_name: str) -> None:
    for label, line_no in zip(rows.labels, rows.line_numbers):
        if not 0 <= label < num_labels:
            raise DataError(
                f"file '{rows.path}', line {line_no}: label {label} is outside 0..{num_labels - 1} "
                f"declared for task '{task_name}'"
            )


def _check_test_labels_seen(split_rows: dict[str, RawRows], train_labels: set) -> None:
    for split_name in ("validation", "test"):
        rows = split_rows.get(split_name)
        if rows is None:
            continue
        for label, line_no in zip(rows.labels, rows.line_numbers):
            if label not in train_labels:
                raise DataError(
                    f"file '{rows.path}', line {line_no}: label {label!r} appears in {split_name} "
                    f"but never in the training data"
                )


def _assemble(name: str, split_rows: dict[str, RawRows], label_names: list[str], origin: str) -> Task:
    """Turn per-file rows into three splits, carving missing splits from train with a fixed seed."""
    notes, dropped = [], []
    for split_name, rows in split_rows.items():
        notes.append(f"{split_name}: read {len(rows.texts)} rows from {rows.path.name} ({rows.encoding})")
        for line_no, reason in rows.dropped:
            dropped.append((rows.path.name, line_no, reason))
        if rows.dropped:
            reasons = sorted({reason for _, reason in rows.dropped})
            notes.append(f"{rows.path.name}: dropped {len(rows.dropped)} rows ({', '.join(reasons)})")

    pool_name = "all" if "all" in split_rows else "train"
    pool = split_rows[pool_name]
    texts, labels = np.array(pool.texts, dtype=object), np.array(pool.labels, dtype=np.int64)
    _check_test_labels_seen(split_rows, set(pool.labels))
    out = {}
    if pool_name == "all":
        train_share, val_share, test_share = SPLIT_RATIOS
        rest, test_idx = _split_off(labels, test_share, SPLIT_SEED, pool.path)
        train_idx, val_idx = _split_off(labels[rest], val_share / (train_share + val_share), SPLIT_SEED, pool.path)
        train_idx, val_idx = rest[train_idx], rest[val_idx]
        out["test"] = (texts[test_idx], labels[test_idx])
        notes.append(f"no official split: stratified {train_share:.0%}/{val_share:.0%}/{test_share:.0%} "
                     f"train/validation/test with seed {SPLIT_SEED}")
    else:
        train_idx = np.arange(len(labels))
        if "validation" not in split_rows:
            train_idx, val_idx = _split_off(labels, VALIDATION_SHARE, SPLIT_SEED, pool.path)
            notes.append(f"no official validation: stratified {VALIDATION_SHARE:.0%} of train held out "
                         f"with seed {SPLIT_SEED}")
        for split_name in ("validation", "test"):
            if split_name in split_rows:
                rows = split_rows[split_name]
                out[split_name] = (rows.texts, rows.labels)
        if "test" not in split_rows:
            raise DataError(f"task '{name}': no test split was given")
    out["train"] = (texts[train_idx], labels[train_idx])
    if "validation" not in out:
        out["validation"] = (texts[val_idx], labels[val_idx])
    datasets = {k: _to_dataset(t, l, label_names) for k, (t, l) in out.items()}
    return Task(name=name, label_names=list(label_names), origin=origin, notes=notes,
                dropped_rows=dropped, **datasets)


def _resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    chosen = data_dir if data_dir is not None else os.environ.get("FUSIONKIT_DATA")
    if chosen is None or chosen == "":
        return None
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        where = "data_dir" if data_dir is not None else "FUSIONKIT_DATA"
        raise DataError(f"data folder '{folder}' (from {where}) does not exist or is not a folder")
    return folder


def _load_registered(definition: TaskDefinition, folder: Path, encoding: str) -> Task:
    split_rows = {}
    for split_name, file_name in definition.files.items():
        path = folder / file_name
        if not path.exists():
            raise DataError(f"task '{definition.name}': file '{path}' not found in data folder '{folder}'")
        rows = read_label_text_file(path, encoding=encoding)
        _check_label_range(rows, len(definition.label_names), definition.name)
        split_rows[split_name] = rows
    return _assemble(definition.name, split_rows, list(definition.label_names), str(folder))


def _load_from_hub(definition: TaskDefinition) -> Task:
    """Download the same task from the Hub; missing splits are carved from train like local files."""
    import datasets

    try:
        hub = datasets.load_dataset(definition.hub.dataset_id)
    except Exception as err:
        raise DataError(
            f"task '{definition.name}': no data_dir or FUSIONKIT_DATA was given, and the Hub dataset "
            f"'{definition.hub.dataset_id}' could not be loaded ({type(err).__name__}: {err})"
        ) from None
    split_rows = {}
    by_name = {name.lower(): index for index, name in enumerate(definition.label_names)}
    label_column = definition.hub.label_name_column or definition.hub.label_column
    for hub_split, our_split in (("train", "train"), ("validation", "validation"), ("test", "test")):
        if hub_split not in hub:
            continue
        part = hub[hub_split]
        path = Path(f"hf://{definition.hub.dataset_id}/{hub_split}")
        for column in (definition.hub.text_column, label_column):
            if column not in part.column_names:
                raise DataError(f"file '{path}': no column '{column}'; its columns are {part.column_names}")
        rows = RawRows(path=path, texts=[], labels=[], line_numbers=[], encoding="hub")
        for index, (text, label) in enumerate(zip(part[definition.hub.text_column], part[label_column])):
            if not text or not str(text).strip():
                rows.dropped.append((index, "missing text"))
                continue
            if definition.hub.label_name_column:
                if str(label).strip().lower() not in by_name:
                    raise DataError(f"file '{path}', row {index}: label name {label!r} is not one of "
                                    f"{list(definition.label_names)} of task '{definition.name}'")
                label = by_name[str(label).strip().lower()]
            rows.texts.append(str(text).strip())
            rows.labels.append(int(label))
            rows.line_numbers.append(index)
        _check_label_range(rows, len(definition.label_names), definition.name)
        split_rows[our_split] = rows
    if "test" not in split_rows:
        split_rows = {"all": split_rows["train"]}
    return _assemble(definition.name, split_rows, list(definition.label_names), f"hub:{definition.hub.dataset_id}")


def load_task(name: str, data_dir: str | Path | None = None, encoding: str = "auto") -> Task:
    """Load a registered task by name (``fusionkit.TASKS`` lists them) or a user file by path.

    A path to a CSV/TSV/JSONL/parquet file is loaded with :func:`load_task_from_files`.
    """
    # A table path goes to the file loader even when missing, so the error says "file not found".
    suffix = Path(name).suffix.lower()
    if name.lower() not in TASKS and (suffix in TABLE_SUFFIXES or (suffix and Path(name).exists())):
        return load_task_from_files(train=name, encoding=encoding)
    key = name.lower()
    if key not in TASKS:
        raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))} "
                          f"(or pass a path to a .csv/.tsv/.jsonl/.parquet file)")
    definition = TASKS[key]
    folder = _resolve_data_dir(data_dir)
    if folder is None:
        return _load_from_hub(definition)
    return _load_registered(definition, folder, encoding)


def _label_mapping(split_rows: dict[str, RawRows]) -> tuple[dict, list[str]]:
    """Integer labels keep their values; any other labels are sorted and numbered."""
    unique = sorted({x for rows in split_rows.values() for x in rows.labels}, key=str)
    if all(isinstance(x, (int, np.integer)) for x in unique):
        for rows in split_rows.values():
            for label, line_no in zip(rows.labels, rows.line_numbers):
                if label < 0:
                    raise DataError(f"file '{rows.path}', line {line_no}: label {label} is negative; "
                                    f"integer labels must be 0, 1, 2, ...")
        top = max(unique)
        return {i: i for i in range(top + 1)}, [str(i) for i in range(top + 1)]
    return {label: index for index, label in enumerate(unique)}, [str(x) for x in unique]


def load_task_from_files(
    train: str | Path,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    name: str | None = None,
    encoding: str = "auto",
) -> Task:
    """A task from your own CSV/TSV/JSONL/parquet file(s). String labels are mapped to integers
    (sorted order); ``task.label_names`` keeps the mapping. Missing splits are carved from train."""
    if validation is not None and test is None:
        raise ConfigError("load_task_from_files: give a test file with the validation file, or only train")
    given = {"train": train, "validation": validation, "test": test}
    split_rows = {k: read_table_file(v, text_column, label_column, encoding) for k, v in given.items() if v}
    _check_test_labels_seen(split_rows, set(split_rows["train"].labels))
    mapping, label_names = _label_mapping(split_rows)
    for rows in split_rows.values():
        rows.labels = [mapping[x] for x in rows.labels]
    if test is None:
        split_rows = {"all": split_rows["train"]}
    task_name = name or Path(train).stem
    task = _assemble(task_name, split_rows, label_names, str(Path(train).parent))
    if not all(isinstance(k, int) for k in mapping):
        task.notes.append("string labels mapped to integers: " + ", ".join(f"{k!r}->{v}" for k, v in mapping.items()))
    return task
