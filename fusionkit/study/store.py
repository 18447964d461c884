"""The results store: one complete record per run (config, scores, cost, test predictions), written atomically.

Format, all in the store's root folder, for run id ``<id>`` (``run_key(config)``, 20 hex digits):

* ``<id>.npz``: ``y_true`` [n] int64 and ``probs`` [n, k] float64, written by ``np.savez``; read back
  with ``allow_pickle=False``, so a store never unpickles anything.
* ``<id>.json``: ``{"format_version": 2, "run_id", "created_at" (UTC, ISO 8601), "config", "scores",
  "cost", "predictions": "<id>.npz", "predictions_sha256"}`` (version 1 records, without the checksum, are read
  and checked the other ways).

A record is trusted only whole: its JSON parses, its ``.npz`` is there, matches the checksum and holds
predictions that reproduce the stored scores. Any other record is moved to ``<root>/damaged/`` with a
warning naming it and why, and its run counts as not stored, so the study redoes it.

Each file is written to a hidden ``.<name>.*.tmp`` file in the same folder, fsynced, then renamed onto
its name (``os.replace`` is atomic; ``fusionkit._io.atomic_write``). The JSON goes last, so a record exists exactly when its JSON does:
a run killed at any moment leaves a whole record or none, plus at most a stray .tmp or .npz that is ignored.
Putting a key again replaces its record.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from fusionkit._io import atomic_write, digest, file_sha256, move_aside, read_arrays, to_json
from fusionkit.errors import DataError, InputError
from fusionkit.evaluation.metrics import labels_and_probs, score_all

FORMAT_VERSION = 2  # 2: the record holds the SHA-256 of its .npz
RUN_KEY_LENGTH = 20
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_RESERVED_COLUMNS = ("run_id", "created_at")
# Config fields renamed since runs were first stored: new name -> the name their keys and old records use.
LEGACY_FIELDS = {"system": "label"}
SESSION_VARIABLE = "FUSIONKIT_SESSION"
_RENAMED = {old: new for new, old in LEGACY_FIELDS.items()}


def _as_dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{name} must be a dict, got {type(value).__name__}: {value!r}")
    return value


def run_key(config: dict) -> str:
    """Stable id of a run config: dict key order does not matter, any changed value (or list order) does.

    The key is computed with the system's name under "label", its field name when the first runs were
    stored: a run keeps its id across the rename (see ``LEGACY_FIELDS``).
    """
    config = _as_dict(config, "config")
    return digest({LEGACY_FIELDS.get(name, name): value for name, value in config.items()}, RUN_KEY_LENGTH, "config")


def _cell(value: Any) -> Any:
    """One table cell from a config value: lists comma-joined, dicts as sorted JSON."""
    if isinstance(value, dict):
        return to_json(value, "config value")
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return value


def _check_no_clashes(config: dict, scores: dict, cost: dict) -> None:
    # to_frame puts all three side by side; a shared name would silently overwrite a column.
    seen = {name: "reserved" for name in _RESERVED_COLUMNS}
    for part, mapping in (("config", config), ("scores", scores), ("cost", cost)):
        for name in mapping:
            if name in seen:
                raise InputError(f"{part} key {name!r} clashes with a {seen[name]} column of the results table")
            seen[name] = part


class ResultsStore:
    """Run records under one folder (created if missing); see the module docstring for the format."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, suffix: str) -> Path:
        if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
            raise InputError(f"run key must be letters, digits, '-' or '_' (as run_key makes), got {key!r}")
        return self.root / f"{key}{suffix}"

    def _record(self, path: Path) -> dict:
        if not path.is_file():
            raise DataError(f"no complete record {path.name} in results store {self.root}")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"results record {path} is corrupt: {error}") from None
        if not isinstance(record, dict) or not {"run_id", "created_at", "config", "scores", "cost"} <= set(record):
            raise DataError(f"results record {path} lacks run_id, created_at, config, scores or cost")
        return record

    def _verified(self, json_path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
        """The record and its predictions, or a DataError saying why they cannot be trusted: unreadable JSON,
        a missing or damaged .npz, a checksum that differs, or probabilities that disagree with the scores."""
        record = self._record(json_path)
        npz_path = json_path.with_suffix(".npz")
        arrays = read_arrays(npz_path, ("y_true", "probs"))
        expected = record.get("predictions_sha256")
        if expected is not None and file_sha256(npz_path) != expected:
            raise DataError(f"'{npz_path}' does not match the checksum its record holds")
        labels, probs = arrays["y_true"], arrays["probs"]
        try:
            labels, probs = labels_and_probs(labels, probs)
        except InputError as error:
            raise DataError(f"'{npz_path}' holds no valid predictions ({error})") from None
        for metric, value in score_all(labels, probs).items():
            stored = record["scores"].get(metric)
            if stored is not None and not np.isclose(stored, value, rtol=1e-9, atol=1e-12):
                raise DataError(f"'{npz_path}' gives {metric} {value:.6g} but its record says {stored:.6g}")
        return record, labels, probs

    def _healthy(self, json_path: Path) -> dict | None:
        """The record, or None after moving a damaged one (JSON and .npz) aside with a warning."""
        try:
            return self._verified(json_path)[0]
        except DataError as error:
            for path in (json_path, json_path.with_suffix(".npz")):
                if path.exists():
                    move_aside(path, str(error))
            return None

    def lock(self, key: str, timeout: float = -1):
        """An inter-process lock on one run (``filelock``: released when its holder exits, even killed), so two
        processes sharing this store never train the same run; ``timeout=0`` fails at once if it is held."""
        folder = self.root / "locks"
        folder.mkdir(exist_ok=True)
        return FileLock(folder / f"{self._path(key, '.lock').name}", timeout=timeout)

    def has(self, key: str) -> bool:
        """Whether a whole, trustworthy record of the run is stored; a damaged one is moved to
        ``<root>/damaged/`` (with a warning naming it and why), so the run counts as not stored and is redone."""
        path = self._path(key, ".json")
        return path.is_file() and self._healthy(path) is not None

    def put(self, key: str, config: dict, scores: dict, cost: dict, y_true, probs) -> None:
        """Store one run; the predictions go first and the JSON record (with their checksum) last, each atomically."""
        labels, matrix = labels_and_probs(y_true, probs)
        config, scores, cost = _as_dict(config, "config"), _as_dict(scores, "scores"), _as_dict(cost, "cost")
        _check_no_clashes(config, scores, cost)
        npz_path, json_path = self._path(key, ".npz"), self._path(key, ".json")
        buffer = io.BytesIO()
        np.savez(buffer, y_true=labels, probs=matrix)
        record = {"format_version": FORMAT_VERSION, "run_id": key,
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  # which report made the run (see report.build.run_report), so each report counts its own
                  "session": os.environ.get(SESSION_VARIABLE),
                  "config": config, "scores": scores, "cost": cost, "predictions": npz_path.name,
                  "predictions_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
        text = to_json(record, f"record of run {key}", indent=1)
        atomic_write(npz_path, buffer.getvalue())
        atomic_write(json_path, text)

    def record(self, key: str) -> dict:
        """The JSON record of a complete run (config, scores, cost...), checked as ``has`` checks it."""
        return self._verified(self._path(key, ".json"))[0]

    def predictions(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(y_true, probs) of a complete run, checked as ``has`` checks them."""
        _, labels, probs = self._verified(self._path(key, ".json"))
        return labels, probs

    def to_frame(self) -> pd.DataFrame:
        """One row per complete, trustworthy run: run_id, created_at, config (lists comma-joined, dicts as JSON),
        scores, cost. Damaged records are moved aside (see ``has``) and left out."""
        rows = []
        for path in sorted(self.root.glob("*.json")):
            record = self._healthy(path)
            if record is None:
                continue
            row = {"run_id": record["run_id"], "created_at": record["created_at"]}
            row.update({_RENAMED.get(name, name): _cell(value) for name, value in record["config"].items()})
            row.update(record["scores"])
            row.update(record["cost"])
            rows.append(row)
        if not rows:
            return pd.DataFrame(columns=list(_RESERVED_COLUMNS))
        return pd.DataFrame(rows).sort_values(["created_at", "run_id"], ignore_index=True)
