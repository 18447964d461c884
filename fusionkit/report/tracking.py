"""Experiment tracking: a written report and every run it stands on, logged to MLflow (``--track mlflow``).

One MLflow experiment (by default named after the report folder) holds one parent run for the report (its
folder as artifacts, its provenance as params and tags) and, nested under it, one run per fusionkit run of
results.csv and tuning.csv: named by its system, tagged with its fusionkit run id, system, role and target,
with the study's fields and knobs as params, every score and cost as metrics, the training history as
per-epoch series (``step`` = epoch) and its stored record as an artifact. ``mlflow ui`` then compares them.

Where it goes: ``uri``, else ``MLFLOW_TRACKING_URI``, else ``./mlruns`` in the current folder, with no server:
the runs in the SQLite file ``./mlruns/mlflow.db`` and their artifacts under ``./mlruns/artifacts``. (MLflow
3 refuses its plain-folder store at ``./mlruns`` unless ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is the local
store it supports.) Any SQLite store keeps the artifacts of the experiments made here beside its database.

Logging a report again adds nothing: a report already logged with the same provenance.json is found by its
tags and left alone, as is each of its runs whose stored record is unchanged. A regenerated report (new
provenance) or a run redone since (new ``created_at``) replaces what was logged for it.

mlflow is an optional dependency (``pip install fusionkit[mlflow]``), imported only here and only when used.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fusionkit._io import file_sha256
from fusionkit.errors import ConfigError, DataError
from fusionkit.study.store import ResultsStore

TRACKERS = ("mlflow",)
DEFAULT_FOLDER = "mlruns"  # under the current folder: mlflow.db (runs) and artifacts/
# Older MLflow servers (and some hosted ones) refuse param values over 500 characters (6000 now); longer ones are
# cut to fit and end in TRUNCATED, their keys listed in the run's "fusionkit_truncated_params" tag, and the
# whole value stays in the run's artifacts (the stored record, provenance.json).
PARAM_LIMIT = 500
TRUNCATED = "...[truncated]"
TAG_LIMIT = 5000  # MLflow keeps tag values up to 8000 characters
_BATCH = 100  # MLflow's most params in one log_batch call (and at most 1000 metrics)
_KEY_FORBIDDEN = re.compile(r"[^\w\-. /:]")  # MLflow keys: letters, digits, _ - . space / :
KIND, REPORT, RUN = "fusionkit_kind", "report", "run"
RUN_ID, CREATED, PROVENANCE = "fusionkit_run_id", "fusionkit_created_at", "fusionkit_provenance_sha256"
PARENT = "mlflow.parentRunId"  # what mlflow.start_run(nested=True) sets: the UI nests the run under its parent


def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("--track mlflow needs MLflow, which is not installed: "
                          "pip install fusionkit[mlflow]") from None


def check_tracker(track: str | None) -> None:
    """Fail before any work when ``track`` is unknown, or is "mlflow" and MLflow is not installed."""
    if track is None:
        return
    if track not in TRACKERS:
        raise ConfigError(f"unknown tracker {track!r} for --track; known: {', '.join(TRACKERS)}")
    _require_mlflow()


def _default_uri() -> str:
    return f"sqlite:///{(Path.cwd() / DEFAULT_FOLDER / 'mlflow.db').as_posix()}"


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the SQLite store in ``./mlruns`` (see the module docstring)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_uri()


def shown_uri(uri: str) -> str:
    """The URI as a report records it: a SQLite store under the current folder by its relative path (what
    ``mlflow ui --backend-store-uri`` takes when run from there), a server without its password."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        return f"sqlite:///{path.relative_to(Path.cwd()).as_posix()}" if path.is_relative_to(Path.cwd()) else uri
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def destination(out_dir: str | Path, uri: str | None = None, experiment: str | None = None) -> str:
    """Where ``track_report`` logs a report, in words, for its provenance."""
    return f"MLflow experiment {experiment or Path(out_dir).resolve().name!r} at {shown_uri(tracking_uri(uri))}"


def _key(name: str) -> str:
    return _KEY_FORBIDDEN.sub("_", name)[:250]


def _flat(value, prefix: str) -> dict[str, object]:
    """Nested dicts as dotted keys ("knobs.lr"); lists of plain values comma-joined, other lists as JSON."""
    if isinstance(value, dict):
        return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{prefix}.{name}").items()}
    if isinstance(value, (list, tuple)):
        plain = all(isinstance(item, (str, int, float, bool)) or item is None for item in value)
        return {prefix: ",".join(str(item) for item in value) if plain else json.dumps(value, sort_keys=True)}
    return {prefix: value}


def _params(fields: dict) -> tuple[dict[str, str], list[str]]:
    """Flattened params as strings within PARAM_LIMIT, and the keys that had to be cut."""
    params, cut = {}, []
    for name, value in fields.items():
        for key, leaf in _flat(value, name).items():
            text = str(leaf)
            if len(text) > PARAM_LIMIT:
                text = text[:PARAM_LIMIT - len(TRUNCATED)] + TRUNCATED
                cut.append(key)
            params[_key(key)] = text
    return params, cut


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _millis(created_at: str) -> int:
    return int(datetime.fromisoformat(created_at).timestamp() * 1000)


def _log(client, run_id: str, params: dict[str, str], metrics: list) -> None:
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in params.items()]
    for start in range(0, max(len(params), len(metrics)), _BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _BATCH], params=params[start:start + _BATCH])


def _search(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _artifact_location(uri: str) -> str | None:
    """A SQLite store keeps its artifacts in ``artifacts/`` beside its database file; MLflow's own default,
    ./mlruns of whichever folder the logging process runs in, would scatter them. Other stores choose."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()


def _experiment(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    if found.lifecycle_stage != "active":
        raise ConfigError(f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
                          f"--experiment-id {found.experiment_id}) or pass another experiment name")
    return found.experiment_id


def _report_runs(out: Path) -> dict[str, dict]:
    """Each run id of results.csv and tuning.csv (none if the report has neither) with its systems and roles
    (one fit may serve several systems, e.g. a baseline and a fusion system's control); a run only tried in
    tuning has the role "tuning"."""
    import pandas as pd

    runs: dict[str, dict] = {}
    for table in ("results.csv", "tuning.csv"):
        path = out / table
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if "run_id" not in frame or "system" not in frame:
            raise DataError(f"'{path}' has no run_id and system columns; is {out} a fusionkit report?")
        chosen = set(runs)  # in tuning.csv: the configurations kept, already described by results.csv
        for row in frame.to_dict("records"):
            if row["run_id"] in chosen:
                continue
            entry = runs.setdefault(row["run_id"], {"systems": [], "roles": []})
            role = row.get("role", "unknown") if table == "results.csv" else "tuning"
            for key, value in (("systems", row["system"]), ("roles", role)):
                if value not in entry[key]:
                    entry[key].append(value)
    return runs


def _history_metrics(history: dict, timestamp: int) -> list:
    """The training history: each per-epoch list a series (step = epoch), each number one value."""
    from mlflow.entities import Metric

    metrics = []
    for name, value in history.items():
        values = value if isinstance(value, list) else [value]
        metrics += [Metric(f"history.{name}", float(item), timestamp, step)
                    for step, item in enumerate(values) if _number(item)]
    return metrics


def _log_run(client, experiment_id: str, parent: str, record: dict, record_path: Path, systems: dict) -> None:
    from mlflow.entities import Metric

    config, started = record["config"], _millis(record["created_at"])
    fields = {name: value for name, value in config.items() if name != "details"}
    params, cut = _params(fields)
    numbers = {**record["scores"], **record["cost"]}
    metrics = [Metric(_key(name), float(value), started, 0) for name, value in numbers.items() if _number(value)]
    metrics += _history_metrics(config.get("details", {}).get("history", {}), started)
    tags = {PARENT: parent, KIND: RUN, RUN_ID: record["run_id"],
            "system": " | ".join(systems["systems"]), "role": " | ".join(systems["roles"]),
            "target": config.get("target", "")}
    if cut:
        tags["fusionkit_truncated_params"] = ",".join(cut)[:TAG_LIMIT]
    run = client.create_run(experiment_id, start_time=started, run_name=tags["system"], tags=tags)
    _log(client, run.info.run_id, params, metrics)
    client.log_artifact(run.info.run_id, str(record_path))
    client.set_tag(run.info.run_id, CREATED, record["created_at"])  # last, as the report's PROVENANCE tag
    seconds = record["cost"].get("train_seconds")  # the UI's duration: how long the run trained
    client.set_terminated(run.info.run_id, end_time=started + int(1000 * seconds) if _number(seconds) else None)


def _report_run(client, experiment_id: str, out: Path) -> tuple[str, bool]:
    """The parent run of the report: (its id, whether it was logged before with this provenance). An earlier
    parent with another provenance is deleted with its child runs."""
    provenance_path = out / "provenance.json"
    if not provenance_path.is_file():
        raise DataError(f"'{provenance_path}' is missing: track a report once run_report has written it")
    sha = file_sha256(provenance_path)
    for earlier in _search(client, experiment_id, f"tags.{KIND} = '{REPORT}'"):
        if earlier.data.tags.get("fusionkit_report") != out.name:
            continue
        if earlier.data.tags.get(PROVENANCE) == sha:
            return earlier.info.run_id, True
        for child in _search(client, experiment_id, f"tags.`{PARENT}` = '{earlier.info.run_id}'"):
            client.delete_run(child.info.run_id)
        client.delete_run(earlier.info.run_id)
    record = json.loads(provenance_path.read_text(encoding="utf-8"))
    params, cut = _params(record)
    tags = {KIND: REPORT, "fusionkit_report": out.name, "profile": record.get("profile", ""),
            "mlflow.source.git.commit": record.get("git_commit", "")}
    if cut:
        tags["fusionkit_truncated_params"] = ",".join(cut)[:TAG_LIMIT]
    run = client.create_run(experiment_id, run_name=f"report {out.name}", tags=tags)
    _log(client, run.info.run_id, params, [])
    client.log_artifacts(run.info.run_id, str(out))
    client.set_tag(run.info.run_id, PROVENANCE, sha)  # last: a parent cut short is replaced, not taken as whole
    client.set_terminated(run.info.run_id)
    return run.info.run_id, False


def track_report(out_dir: str | Path, workdir: str | Path, uri: str | None = None,
                 experiment: str | None = None) -> dict:
    """Log the report in ``out_dir`` (written by ``run_report``) and every run of its results.csv and
    tuning.csv (records in ``workdir/results``) to MLflow at ``tracking_uri(uri)``, in the experiment
    ``experiment`` (default: the report folder's name). Returns what was done: ``uri``, ``experiment``,
    ``experiment_id``, ``report_run_id``, ``report_already_logged``, ``runs_logged``, ``runs_already_logged``,
    ``runs_replaced``."""
    _require_mlflow()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    out = Path(out_dir).resolve()
    runs = _report_runs(out)
    store = ResultsStore(Path(workdir) / "results")
    records = {run_id: store.record(run_id) for run_id in runs}  # every record checked before anything is logged
    uri = tracking_uri(uri)
    if uri == _default_uri():
        (Path.cwd() / DEFAULT_FOLDER).mkdir(exist_ok=True)
    experiment = experiment or out.name
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment(client, experiment, uri)
    except MlflowException as error:
        raise ConfigError(f"MLflow tracking store {shown_uri(uri)!r} cannot be used: {error.message}") from None
    parent, report_already_logged = _report_run(client, experiment_id, out)
    children = _search(client, experiment_id, f"tags.`{PARENT}` = '{parent}'")
    logged = {run.data.tags.get(RUN_ID): run for run in children}
    counts = {"runs_logged": 0, "runs_already_logged": 0, "runs_replaced": 0}
    for run_id, record in records.items():
        earlier = logged.get(run_id)
        if earlier is not None and earlier.data.tags.get(CREATED) == record["created_at"]:
            counts["runs_already_logged"] += 1
            continue
        if earlier is not None:  # the run was redone since it was logged (or its logging was cut short)
            client.delete_run(earlier.info.run_id)
            counts["runs_replaced"] += 1
        else:
            counts["runs_logged"] += 1
        _log_run(client, experiment_id, parent, record, store.root / f"{run_id}.json", runs[run_id])
    return {"uri": uri, "experiment": experiment, "experiment_id": experiment_id, "report_run_id": parent,
            "report_already_logged": report_already_logged, **counts}
