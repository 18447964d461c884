"""Named text-classification tasks and user datasets, loaded into train/validation/test splits.

``load_task("cr")`` resolves the data in this order: the ``data_dir`` argument,
the ``FUSIONKIT_DATA`` environment variable, then the Hugging Face Hub (also when the folder holds none of
the task's files). In offline mode (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` true) the Hub is not tried:
a task missing locally is one ``DataError`` naming both ways to get it.
"""
from __future__ import annotations

import itertools
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fusionkit._io import stream_digest
from fusionkit.errors import ConfigError, DataError, FusionkitWarning
from fusionkit.data.readers import RawRows, read_label_text_file, read_table_file

# Ratios for tasks without an official split (MR, CR, SUBJ, MPQA, user files given as one file).
SPLIT_RATIOS = (0.8, 0.1, 0.1)
# Tasks with an official test but no validation (TREC) carve this share of train.
VALIDATION_SHARE = 0.1
# The split seed is fixed and separate from experiment seeds: every run sees the same test set.
SPLIT_SEED = 0
# File suffixes load_task hands to load_task_from_files.
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".gz")
# A knowledge source's features are a dataset column named so: they follow their rows through every subsample.
KNOWLEDGE_PREFIX = "knowledge:"


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
    unlabelled: list[str] = field(default_factory=list)  # training texts left out of a subsample, labels unused

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> dict:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @property
    def knowledge_names(self) -> list[str]:
        """The knowledge feature sources read with the task (``load_task_from_files(knowledge_columns=...)``)."""
        return [c[len(KNOWLEDGE_PREFIX):] for c in self.train.column_names if c.startswith(KNOWLEDGE_PREFIX)]

    def knowledge(self, name: str, split: str) -> np.ndarray:
        """The knowledge features ``name`` of every example of ``split``: float32 [n, width]."""
        if name not in self.knowledge_names:
            raise ConfigError(f"task '{self.name}' has no knowledge features {name!r}; it has "
                              f"{self.knowledge_names or 'none'} (they are columns of the task's own file)")
        data = getattr(self, split)
        return np.asarray(data[KNOWLEDGE_PREFIX + name][:], dtype=np.float32).reshape(len(data), -1)

    def fingerprint(self) -> str:
        """A content hash of all three splits: equal on any machine iff the data and split are equal."""
        labelled = (chunk for split_name, split in self.splits.items() for chunk in
                    [split_name, *(f"{label}\t{text}\n" for text, label in zip(split["text"][:], split["label"][:]))])
        # Knowledge columns count only where there are some, like unlabelled texts below.
        knowledge = (chunk for name in self.knowledge_names for split in self.splits for chunk in
                     [f"knowledge {name} {split}", self.knowledge(name, split).tobytes().hex()])
        # Unlabelled texts count only where there are some: a whole task keeps the fingerprint it always had.
        unlabelled = ["unlabelled", *(f"{text}\n" for text in self.unlabelled)] if self.unlabelled else []
        return stream_digest(itertools.chain(labelled, knowledge, unlabelled))

    def subsample(self, n: int | None, seed: int = 0) -> "Task":
        """The same task with a stratified subsample of ``n`` training examples (None: the whole split).

        The other training texts, without their labels, become ``unlabelled``: what a user with ``n`` labels
        and the rest of the corpus unlabelled has (distillation labels them with its teachers)."""
        if n is None:
            return self
        n_train = len(self.train)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"subsample: n must be a positive integer, got {n!r}")
        if n > n_train:
            raise ConfigError(f"subsample: n={n} is larger than the {n_train} training examples of task '{self.name}'")
        if n == n_train:
            return self
        labels = np.asarray(self.train["label"][:])
        indices = stratified_sample(labels, n, seed)
        # [:] reads the column as one list: indexing a datasets Column one row at a time is ~100x slower
        rest, texts = np.setdiff1d(np.arange(n_train), indices), self.train["text"][:]
        return replace(self, train=self.train.select(indices), unlabelled=[texts[i] for i in rest],
                       notes=self.notes + [f"train subsampled to {n} examples (stratified, seed {seed})"])

    def capped(self, split: str, cap: int | None) -> "Task":
        """The same task with at most ``cap`` examples in ``split`` (a stratified sample, seed 0: the same
        examples in every run); None or a cap beyond the split leaves it whole."""
        data = getattr(self, split)
        if not cap or cap >= len(data):
            return self
        indices = stratified_sample(np.asarray(data["label"][:]), cap, seed=0)
        return replace(self, **{split: data.select(indices)},
                       notes=self.notes + [f"{split} capped to {cap} examples (stratified, seed 0)"])

    def with_shuffled_labels(self, seed: int) -> "Task":
        """The same texts with the training labels permuted (validation and test keep theirs): a source that
        carries no knowledge of its labels, for the "it was just more training" control (STILTs-style)."""
        labels = np.random.default_rng(seed).permutation(np.asarray(self.train["label"][:]))
        train = _to_dataset(list(self.train["text"][:]), labels.tolist(), self.label_names)
        return replace(self, name=f"{self.name}-shuffled", train=train,
                       notes=self.notes + [f"train labels shuffled (seed {seed})"])

    def without_matches(self, index, why: str) -> "Task":
        """The task without every example (any split) that ``index`` matches (``overlap.EvaluationIndex``: the
        same text, a tokenisation variant, or a near-duplicate of a text no source may hold), noted per level with
        ``why``. A split left empty, or a training split left with one class, is a DataError naming the task."""
        kept, notes = {}, list(self.notes)
        for split, data in self.splits.items():
            levels = index.match(data["text"][:])
            keep = np.flatnonzero(levels == "")
            kept[split] = data if len(keep) == len(data) else data.select(keep)
            if len(keep) < len(data):
                counted = ", ".join(f"{int((levels == level).sum())} {level}" for level in ("exact", "letters", "near")
                                    if (levels == level).any())
                notes.append(f"{len(data) - len(keep)} {split} examples dropped ({counted}): {why}")
            classes = len(set(kept[split]["label"][:]))
            if not len(keep) or (split == "train" and classes < 2):
                left = "no example" if not len(keep) else f"examples of one class only ({len(keep)})"
                raise DataError(f"task '{self.name}' ({self.origin}): dropping its {len(data) - len(keep)} {split} "
                                f"examples {why} leaves {left} in its {split} split")
        return replace(self, **kept, notes=notes)

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


def _to_dataset(texts: list[str], labels: list[int], label_names: list[str], knowledge: dict | None = None):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    knowledge = knowledge or {}
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names)),
                         **{KNOWLEDGE_PREFIX + name: Sequence(Value("float32")) for name in knowledge}})
    return Dataset.from_dict({"text": list(texts), "label": [int(x) for x in labels],
                              **{KNOWLEDGE_PREFIX + name: np.asarray(values, dtype=np.float32).tolist()
                                 for name, values in knowledge.items()}}, features=features)


def _check_label_range(rows: RawRows, num_labels: int, task_name: str) -> None:
    for label, line_no in zip(rows.labels, rows.line_numbers):
        if not 0 <= label < num_labels:
            raise DataError(
                f"file '{rows.path}', {rows.unit} {line_no}: label {label} is outside 0..{num_labels - 1} "
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
                    f"file '{rows.path}', {rows.unit} {line_no}: label {label!r} appears in {split_name} "
                    f"but never in the training data"
                )


def normalised(text: str) -> str:
    """The form two texts share when they are the same sentence: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


@dataclass
class _Split:
    """The rows of one split, each with the file and line it came from."""

    texts: np.ndarray
    labels: np.ndarray
    files: np.ndarray
    lines: np.ndarray
    knowledge: dict = field(default_factory=dict)  # source name -> features [n, width]

    def keep(self, mask: np.ndarray) -> "_Split":
        return _Split(self.texts[mask], self.labels[mask], self.files[mask], self.lines[mask],
                      {name: values[mask] for name, values in self.knowledge.items()})


def _split_of(rows: RawRows, index: np.ndarray | None = None) -> _Split:
    texts, labels = np.array(rows.texts, dtype=object), np.array(rows.labels, dtype=np.int64)
    lines = np.array(rows.line_numbers, dtype=np.int64)
    index = np.arange(len(texts)) if index is None else index
    knowledge = {name: np.asarray(values, dtype=np.float32).reshape(len(texts), -1)[index]
                 for name, values in rows.knowledge.items()}
    return _Split(texts[index], labels[index], np.full(len(index), rows.path.name, dtype=object), lines[index],
                  knowledge)


def _leaks(splits: dict[str, _Split]) -> dict[str, np.ndarray]:
    """Per split, which rows repeat (normalised) a text of a later split: train vs validation and test,
    validation vs test. Such a row lets a model see a test example while training."""
    order = ("train", "validation", "test")
    later: set[str] = set()
    leaking = {}
    for split in reversed(order):
        normal = [normalised(t) for t in splits[split].texts]
        leaking[split] = np.array([text in later for text in normal], dtype=bool)
        later |= set(normal)
    return leaking


def _remove_leaks(name: str, splits: dict[str, _Split], dedup: bool, notes: list, dropped: list) -> dict:
    leaking = _leaks(splits)
    counts = {split: int(leaking[split].sum()) for split in ("train", "validation") if leaking[split].any()}
    if not counts:
        return splits
    described = ", ".join(f"{count} {split}" for split, count in counts.items())
    if not dedup:
        warnings.warn(f"task '{name}': {described} rows repeat a text of a later split (train/validation/test "
                      f"leakage); kept because dedup=False, so scores on it may be inflated", FusionkitWarning,
                      stacklevel=3)
        notes.append(f"kept {described} rows that repeat a text of a later split (dedup=False)")
        return splits
    for split, mask in leaking.items():
        rows = splits[split]
        dropped += [(file, int(line), f"{split} text also in a later split (leakage)")
                    for file, line in zip(rows.files[mask], rows.lines[mask])]
    notes.append(f"dropped {described} rows whose text (whitespace collapsed, case folded) also appears in a "
                 f"later split")
    for split, count in counts.items():
        if count == len(splits[split].texts):
            files = ", ".join(f"'{file}'" for file in sorted(set(splits[split].files)))
            later = "validation or test" if split == "train" else "test"
            raise DataError(f"task '{name}': every one of the {count} {split} rows (file {files}) repeats a text of "
                            f"the {later} split and was dropped as leakage, which leaves no {split} example; give "
                            f"{split} rows whose texts the later splits do not hold")
    return {split: rows.keep(~leaking[split]) for split, rows in splits.items()}


def _check_two_classes(name: str, train: _Split, label_names: list[str]) -> None:
    present = np.unique(train.labels)
    if len(present) < 2:
        files = ", ".join(sorted(set(train.files))) or "(no file)"
        only = label_names[present[0]] if len(present) else "none"
        raise DataError(f"task '{name}', file '{files}': every usable training row has label {only!r}; a "
                        f"classifier needs at least two classes")


def _assemble(name: str, split_rows: dict[str, RawRows], label_names: list[str], origin: str,
              dedup: bool = True) -> Task:
    """Turn per-file rows into three splits, carving missing splits from train with a fixed seed, and drop
    (``dedup``) the rows that repeat a text of a later split."""
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
    labels = np.array(pool.labels, dtype=np.int64)
    _check_test_labels_seen(split_rows, set(pool.labels))
    splits = {}
    if pool_name == "all":
        train_share, val_share, test_share = SPLIT_RATIOS
        rest, test_idx = _split_off(labels, test_share, SPLIT_SEED, pool.path)
        train_idx, val_idx = _split_off(labels[rest], val_share / (train_share + val_share), SPLIT_SEED, pool.path)
        train_idx, val_idx = rest[train_idx], rest[val_idx]
        splits["test"] = _split_of(pool, test_idx)
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
                splits[split_name] = _split_of(split_rows[split_name])
        if "test" not in split_rows:
            raise DataError(f"task '{name}': no test split was given")
    splits["train"] = _split_of(pool, train_idx)
    if "validation" not in splits:
        splits["validation"] = _split_of(pool, val_idx)
    splits = _remove_leaks(name, splits, dedup, notes, dropped)
    _check_two_classes(name, splits["train"], label_names)
    datasets = {k: _to_dataset(rows.texts, rows.labels, label_names, rows.knowledge) for k, rows in splits.items()}
    return Task(name=name, label_names=list(label_names), origin=origin, notes=notes,
                dropped_rows=dropped, **datasets)


def _resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    chosen = data_dir if data_dir is not None else os.environ.get("FUSIONKIT_DATA")
    if chosen is None or chosen == "":
        return None
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        where = "data_dir" if data_dir is not None else "FUSIONKIT_DATA"
        instead = "leave data_dir out and unset FUSIONKIT_DATA" if data_dir is not None else "unset FUSIONKIT_DATA"
        raise DataError(f"data folder '{folder}' (from {where}) does not exist or is not a folder; to download the "
                        f"registered tasks from the Hugging Face Hub instead, {instead} (and HF_HUB_OFFLINE, "
                        f"HF_DATASETS_OFFLINE)")
    return folder


# The environment variables that keep the Hugging Face Hub offline, and the values that mean "on" (as in
# huggingface_hub). Read at call time, so a variable set after import still counts.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def _offline_setting() -> str | None:
    """``"NAME=value"`` of the first variable that puts the Hub in offline mode, or None when online."""
    for variable in OFFLINE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.strip().upper() in _TRUE_VALUES:
            return f"{variable}={value}"
    return None


def _no_data_error(definition: TaskDefinition, missing: str, hub_failure: str) -> DataError:
    """The one error for a registered task that is in no local folder and cannot come from the Hub: what is
    missing, why the Hub did not serve it, and both ways to get the data."""
    files = ", ".join(definition.files.values())
    return DataError(
        f"task '{definition.name}': {missing}, and {hub_failure}. To get its data, either set FUSIONKIT_DATA "
        f"(or pass data_dir=) to a folder holding {files}, or go online: unset {' and '.join(OFFLINE_VARIABLES)} "
        f"(with a network connection) so it downloads from the Hugging Face Hub dataset "
        f"'{definition.hub.dataset_id}'"
    )


def tasks_present(data_dir: str | Path | None = None) -> list[str]:
    """The registered tasks whose every file is in the data folder (``data_dir``, else FUSIONKIT_DATA), in
    registry order; with no data folder, every registered task (they load from the Hugging Face Hub)."""
    folder = _resolve_data_dir(data_dir)
    return [name for name, definition in TASKS.items()
            if folder is None or all((folder / file).is_file() for file in definition.files.values())]


def _load_registered(definition: TaskDefinition, folder: Path, encoding: str, dedup: bool) -> Task:
    absent = [file for file in definition.files.values() if not (folder / file).exists()]
    if absent and len(absent) == len(definition.files):
        # None of the task's files is here: the Hub is the next place to look (offline, that is one error
        # naming both ways to get the data). A folder with only some of them is a broken copy: refused below.
        missing = (f"file{'s' if len(absent) > 1 else ''} {', '.join(repr(str(folder / f)) for f in absent)} "
                   f"not found in data folder '{folder}'")
        task = _load_from_hub(definition, dedup, missing)
        task.notes.insert(0, f"{missing}: loaded from the Hugging Face Hub instead")
        return task
    split_rows = {}
    for split_name, file_name in definition.files.items():
        path = folder / file_name
        if not path.exists():
            raise DataError(f"task '{definition.name}': file '{path}' not found in data folder '{folder}'")
        rows = read_label_text_file(path, encoding=encoding)
        _check_label_range(rows, len(definition.label_names), definition.name)
        split_rows[split_name] = rows
    return _assemble(definition.name, split_rows, list(definition.label_names), str(folder), dedup)


def _load_from_hub(definition: TaskDefinition, dedup: bool,
                   missing: str = "no data_dir or FUSIONKIT_DATA was given") -> Task:
    """Download the same task from the Hub; missing splits are carved from train like local files.

    ``missing`` says why no local copy was used. In offline mode the Hub is not tried at all."""
    offline = _offline_setting()
    if offline:
        raise _no_data_error(definition, missing, f"the Hugging Face Hub is not tried because offline mode is on "
                                                  f"({offline})")
    import datasets

    try:
        hub = datasets.load_dataset(definition.hub.dataset_id)
    except Exception as err:
        raise _no_data_error(definition, missing, f"the Hub dataset '{definition.hub.dataset_id}' could not be "
                                                  f"loaded ({type(err).__name__}: {err})") from None
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
        rows = RawRows(path=path, texts=[], labels=[], line_numbers=[], encoding="hub", unit="row")
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
    return _assemble(definition.name, split_rows, list(definition.label_names), f"hub:{definition.hub.dataset_id}",
                     dedup)


def load_task(name: str, data_dir: str | Path | None = None, encoding: str = "auto", dedup: bool = True) -> Task:
    """Load a registered task by name (``fusionkit.TASKS`` lists them) or a user file by path.

    A path to a CSV/TSV/JSONL/parquet file is loaded with :func:`load_task_from_files`. Rows whose text also
    appears in a later split (train vs validation and test, validation vs test) are dropped and recorded in
    ``task.dropped_rows``; ``dedup=False`` keeps them, with a warning saying how many leak.
    """
    # A table path goes to the file loader even when missing, so the error says "file not found".
    suffix = Path(name).suffix.lower()
    if name.lower() not in TASKS and (suffix in TABLE_SUFFIXES or (suffix and Path(name).exists())):
        return load_task_from_files(train=name, encoding=encoding, dedup=dedup)
    key = name.lower()
    if key not in TASKS:
        raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))} "
                          f"(or pass a path to a .csv/.tsv/.jsonl/.parquet file)")
    definition = TASKS[key]
    folder = _resolve_data_dir(data_dir)
    if folder is None:
        return _load_from_hub(definition, dedup)
    return _load_registered(definition, folder, encoding, dedup)


_INTEGER = re.compile(r"[+-]?\d+")


def _label_value(label, rows: RawRows, line_no: int) -> tuple[str, object]:
    """A user label as ("number", int) or ("text", str); a number that is not a whole number is a DataError."""
    if isinstance(label, (bool, np.bool_)):
        return "text", str(label)
    if isinstance(label, (int, np.integer)):
        return "number", int(label)
    if isinstance(label, (float, np.floating)):
        if float(label).is_integer():
            return "number", int(label)
        raise DataError(f"file '{rows.path}', {rows.unit} {line_no}: label {label!r} is not a whole number; "
                        f"class labels "
                        f"are integers or names (pass label_names=[...] to say which values are classes)")
    text = str(label).strip()
    if _INTEGER.fullmatch(text):
        return "number", int(text)
    try:
        float(text)
    except ValueError:
        return "text", text
    raise DataError(f"file '{rows.path}', {rows.unit} {line_no}: label {text!r} is not a whole number; "
                    f"class labels are "
                    f"integers or names (pass label_names=[...] to say which values are classes)")


def _label_mapping(split_rows: dict[str, RawRows], label_names: list | None = None) -> tuple[dict, list[str]]:
    """Labels as read -> class indices, and the class names.

    With ``label_names`` each label must be one of them (compared as text). Otherwise the labels must be all
    whole numbers (sorted numerically, e.g. {1, 2} -> 2 classes named "1" and "2") or all names (sorted);
    a column that mixes the two, or holds a fraction, is a DataError naming the file, line and value.
    """
    values = [(rows, line_no, label, _label_value(label, rows, line_no) if label_names is None else None)
              for rows in split_rows.values() for label, line_no in zip(rows.labels, rows.line_numbers)]
    if label_names is not None:
        names = [str(name) for name in label_names]
        index = {name: i for i, name in enumerate(names)}
        for rows, line_no, label, _ in values:
            key = str(int(label)) if isinstance(label, (float, np.floating)) and float(label).is_integer() else str(label).strip()
            if key not in index:
                raise DataError(f"file '{rows.path}', {rows.unit} {line_no}: label {label!r} is not one of the "
                                f"label_names "
                                f"{names}")
        return {label: index[str(int(label)) if isinstance(label, (float, np.floating)) and float(label).is_integer()
                             else str(label).strip()] for _, _, label, _ in values}, names
    kinds = [kind for *_, (kind, _) in values]
    if len(set(kinds)) > 1:
        minority = min(set(kinds), key=kinds.count)
        rows, line_no, label, _ = next(v for v in values if v[3][0] == minority)
        other = next(v for v in values if v[3][0] != minority)
        raise DataError(f"file '{rows.path}', {rows.unit} {line_no}: label {label!r} is a {minority} while other "
                        f"labels are "
                        f"{other[3][0]}s (e.g. {other[2]!r} on line {other[1]}); pass label_names=[...] to say which "
                        f"values are classes")
    classes = sorted({value for *_, (_, value) in values})
    position = {value: i for i, value in enumerate(classes)}
    return {label: position[value] for _, _, label, (_, value) in values}, [str(value) for value in classes]


def load_task_from_files(
    train: str | Path,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    name: str | None = None,
    encoding: str = "auto",
    label_names: list | None = None,
    dedup: bool = True,
    knowledge_columns: dict[str, list[str]] | None = None,
) -> Task:
    """A task from your own CSV/TSV/JSONL/parquet file(s). Labels are mapped to class indices (whole numbers
    in numeric order, names in sorted order, or the order of ``label_names`` when given); ``task.label_names``
    keeps the mapping. Missing splits are carved from train. Rows whose text also appears in a later split are
    dropped and recorded (``dedup=False`` keeps them, with a warning).

    ``knowledge_columns`` (name -> columns) also reads knowledge features, one vector per example, for
    ``representation`` fusion: numeric columns, or one column holding a vector (``task.knowledge(name, split)``)."""
    if validation is not None and test is None:
        raise ConfigError("load_task_from_files: give a test file with the validation file, or only train")
    given = {"train": train, "validation": validation, "test": test}
    split_rows = {k: read_table_file(v, text_column, label_column, encoding, knowledge_columns)
                  for k, v in given.items() if v}
    for source in knowledge_columns or {}:
        widths = {rows.path: len(rows.knowledge[source][0]) for rows in split_rows.values()}
        if len(set(widths.values())) > 1:
            raise DataError(f"knowledge features {source!r} ({', '.join(knowledge_columns[source])}) have different "
                            f"widths in different files: " + ", ".join(f"'{p}': {w}" for p, w in widths.items()))
    _check_test_labels_seen(split_rows, set(split_rows["train"].labels))
    mapping, names = _label_mapping(split_rows, label_names)
    for rows in split_rows.values():
        rows.labels = [mapping[x] for x in rows.labels]
    if test is None:
        split_rows = {"all": split_rows["train"]}
    task_name = name or Path(train).stem
    task = _assemble(task_name, split_rows, names, str(Path(train).parent), dedup)
    if any(str(label) != names[index] or index != label for label, index in mapping.items()):
        task.notes.append("labels mapped to classes: " + ", ".join(
            f"{k!r}->{v}" for k, v in sorted(mapping.items(), key=lambda item: item[1])))
    return task
