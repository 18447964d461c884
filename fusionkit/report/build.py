"""Reports: the notebooks' shared setup, and ``run_report``, which executes them with papermill into one folder.

Layout of a report folder::

    index.html            the headline table, the verdicts under their rule, figures, links, provenance
                          (fusionkit.report.page; --single-file also writes <folder name>.html, self-contained)
    headline.csv          the headline table in full precision
    notebooks/NN_*.ipynb  the executed notebooks (kept even when one fails) and their .html
    figures/*.png|svg     every figure, listed with its caption in figures.json
    results.csv, summary.csv, tuning.csv, verdict_table.csv, comparisons_*.csv, overlap_card.csv,
    verdicts.json, provenance.json

Study runs (experts, fitted models, features, the results store) live in a separate work folder
(default ``runs/<profile>-<target>``), so a second ``run_report`` reuses them instead of retraining.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from fusionkit._io import atomic_write
from fusionkit.errors import ConfigError, FusionkitError
from fusionkit.report import tracking
from fusionkit.report.notebook import DEFAULT_PROFILE, matrix_run, notebook_run, notebooks_dir
from fusionkit.report.page import write_index, write_single_file
from fusionkit.report.provenance import provenance
from fusionkit.study.progress import EVENTS_VARIABLE, SCHEDULE, WARNING
from fusionkit.study.store import SESSION_VARIABLE


class ReportError(FusionkitError):
    """A notebook failed while a report was being made."""


def write_verdicts(out_dir: Path, question: str, sections: list[tuple[str, str, list[str]]],
                   notes: list[str]) -> Path:
    """verdicts.json, what index.html shows first (written by the evaluation notebook): the question, then per
    section (title, methods paragraph, findings), then free notes."""
    payload = {"question": question, "notes": notes,
               "sections": [{"title": title, "methods": methods, "sentences": list(sentences)}
                            for title, methods, sentences in sections]}
    return atomic_write(Path(out_dir) / "verdicts.json", json.dumps(payload, indent=1))


MATRIX = "matrix"  # a notebook's metadata {"fusionkit": {"report": "matrix"}}: it belongs to the matrix report


def report_kind(notebook: Path) -> str:
    """"matrix" for a notebook of the transfer-matrix report, "target" for one of the single-target report."""
    metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    return metadata.get("fusionkit", {}).get("report", "target")


def _notebooks(notebooks_dir: Path, kind: str = "target") -> list[Path]:
    found = [path for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")) if report_kind(path) == kind]
    if not found:
        raise ConfigError(f"no numbered notebooks (NN_name.ipynb) of the {kind} report in {notebooks_dir}")
    return found


def _to_html(notebook_path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    path = notebook_path.with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


class _Events:
    """While the notebooks run: print to the terminal what their kernels emit (``study.progress``: the study's
    progress, fusionkit's warnings, each distinct warning once) and keep the warnings for the page."""

    def __init__(self, path: Path, show: bool):
        self.path, self.show, self.notebook = path, show, ""
        self.warnings: list[dict] = []
        self.busy_seconds = self.slot_seconds = 0.0  # the executors' workers, over every phase (``study.progress``)
        self._read, self._stop, self._lock = 0, threading.Event(), threading.Lock()
        path.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.drain()
        self.path.unlink(missing_ok=True)

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self.drain()

    def drain(self) -> None:
        """Handle the whole lines written since the last call (the follower thread and the main one both call it)."""
        with self._lock:
            self._handle_new_lines()

    def _handle_new_lines(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._read)
            chunk = handle.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._read += len(complete)
        for line in complete.decode("utf-8").splitlines():
            event = json.loads(line)
            if event["kind"] == SCHEDULE:
                phase = json.loads(event["text"])
                self.busy_seconds += phase["busy_seconds"]
                self.slot_seconds += phase["slot_seconds"]
                continue
            if event["kind"] == WARNING:
                if any(seen["text"] == event["text"] for seen in self.warnings):
                    continue
                self.warnings.append({"notebook": self.notebook, "text": event["text"]})
                print(f"    warning ({self.notebook}): {event['text']}", flush=True)
            elif self.show:
                print(f"    {event['text']}", flush=True)


def _execute(notebook: Path, executed: Path, parameters: dict) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        # No cell-count bar: the study's own progress lines (runs done of total, time left) say more.
        papermill.execute_notebook(notebook, executed, parameters=parameters, cwd=os.getcwd(),
                                   kernel_name="python3", progress_bar=False)
    except PapermillExecutionError as error:
        raise ReportError(f"notebook {notebook.name} failed in cell {error.exec_count} "
                          f"({error.ename}: {error.evalue}); the partial executed notebook is kept at "
                          f"{executed}") from None
    finally:
        _relative_paths(notebook, executed)


def _relative_paths(notebook: Path, executed: Path) -> None:
    """papermill records where it read and wrote the notebook; keep those names free of this machine's folders."""
    import nbformat

    if not executed.is_file():
        return
    node = nbformat.read(executed, as_version=4)
    recorded = node.metadata.get("papermill", {})
    recorded.update(input_path=f"fusionkit.notebooks/{notebook.name}", output_path=os.path.relpath(executed))
    nbformat.write(node, executed)


def run_report(out: str | Path, profile: str = DEFAULT_PROFILE, target="cr",
               sources=None, overrides: dict | None = None, workdir: str | None = None,
               data_dir: str | None = None, notebooks_folder: str | Path | None = None,
               progress: bool = True, executor: dict | None = None, targets=None, track: str | None = None,
               single_file: bool = False) -> Path:
    """Execute every numbered notebook in order into ``out`` and write ``out/index.html``; return its path.
    ``executor``: how the study's runs are carried out, e.g. ``{"kind": "ray", "workers": 2}`` (see
    ``fusionkit.study.executors.make_executor``); in this process by default. ``targets`` (a list, "a,b,c", or
    "all": every task whose files are present) makes the transfer-matrix report instead: its notebooks, every
    task of the pool a target (``target`` is then unused; ``sources``, if given, is knowledge beside the pool:
    models, adapters, features). ``target`` and ``sources`` take what a study file does (``fusionkit.study.sources``;
    default cr from mr, subj, trec). ``track="mlflow"`` then logs the report
    and each of its runs to MLflow (``fusionkit.report.tracking``: ``MLFLOW_TRACKING_URI``, else ./mlruns).
    ``single_file``: also write the page as one self-contained HTML file (``page.write_single_file``)."""
    tracking.check_tracker(track)  # a missing mlflow fails now, not after the study
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; the report needs a folder")
    # The notebooks run in the current folder and get paths relative to it: the report (executed notebooks,
    # provenance) then names no folder of the machine that made it.
    common = {"data_dir": data_dir and os.path.relpath(data_dir), "out_dir": os.path.relpath(out)}
    if targets is None:
        run = notebook_run(profile, target, ("mr", "subj", "trec") if sources is None else sources, workdir,
                           str(out), data_dir, overrides, executor)
        parameters = {"profile": run.profile, "target": run.target, "sources": run.sources}
    else:
        run = matrix_run(profile, None if targets == "all" else targets, workdir, str(out), data_dir, overrides,
                         executor, sources)
        parameters = {"profile": run.profile, "targets": run.targets, "sources": run.sources}
    parameters.update(workdir=os.path.relpath(run.workdir), overrides=run.overrides, executor=run.executor, **common)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    notebooks = _notebooks(Path(notebooks_folder) if notebooks_folder else notebooks_dir(),
                           "target" if targets is None else MATRIX)
    # The runs this report trains carry its session id, so it counts its own even when another report shares
    # the work folder (a resumed report finds everything stored and trains nothing).
    session = uuid.uuid4().hex
    timings, start = {}, time.perf_counter()
    events_file = out / f".events-{session}.jsonl"
    with _environment(SESSION_VARIABLE, session), _environment(EVENTS_VARIABLE, str(events_file)), \
            _Events(events_file, progress) as events:
        for index, notebook in enumerate(notebooks, start=1):
            print(f"[{index}/{len(notebooks)}] {notebook.name} ...", flush=True)
            began, events.notebook = time.perf_counter(), notebook.stem
            executed = out / "notebooks" / notebook.name
            try:
                _execute(notebook, executed, parameters)
            finally:
                events.drain()
            _to_html(executed)
            timings[notebook.stem] = round(time.perf_counter() - began, 1)
            print(f"[{index}/{len(notebooks)}] {notebook.name} done in {timings[notebook.stem]:.0f} s", flush=True)
    record = provenance(run.profile, {**parameters, "study_parameters": run.parameters}, timings,
                        round(time.perf_counter() - start, 1))
    record["warnings"] = events.warnings  # what happened during this run: the page lists them
    records = _run_records(run.workdir / "results", out)
    ours = [r for r in records if r.get("session") == session]
    record["runs_trained"], record["runs_found_stored"] = len(ours), len(records) - len(ours)
    # When the runs this report stands on were made, whichever report made them: a report regenerated from a
    # stored study still says how long the study took to train.
    created = sorted(r["created_at"] for r in records)
    record["runs_created_between"] = [created[0], created[-1]] if created else None
    record["experts"] = _expert_reuse(records)
    record["model_flops"] = sum(r["cost"].get("model_flops", 0.0) for r in ours)  # what this report trained
    # How much of its workers' time the executor kept them fitting experts and runs (None: nothing was run).
    record["workers_busy_fraction"] = (round(events.busy_seconds / events.slot_seconds, 3)
                                       if events.slot_seconds > 0 else None)
    if track:
        record["tracking"] = tracking.destination(out)
    atomic_write(out / "provenance.json", json.dumps(record, indent=1, default=str))
    index = write_index(out, notebooks, record)
    print(f"report written to {index} in {record['total_seconds']:.0f} s", flush=True)
    if single_file:
        print(f"the same page in one file, to mail: {write_single_file(out)}", flush=True)
    if track:
        logged = tracking.track_report(out, run.workdir)
        print(f"tracked in {record['tracking']}: {logged['runs_logged']} runs logged, {logged['runs_replaced']} "
              f"replaced, {logged['runs_already_logged']} already there", flush=True)
    return index


@contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _run_records(store_root: Path, out: Path) -> list[dict]:
    """The stored record of each run of the report (results.csv and the configurations tried in tuning.csv, each
    run once; its ``session`` says which report made it)."""
    import pandas as pd

    tables = [out / name for name in ("results.csv", "tuning.csv") if (out / name).is_file()]
    run_ids = dict.fromkeys(run_id for table in tables for run_id in pd.read_csv(table)["run_id"])
    return [json.loads((store_root / f"{run_id}.json").read_text()) for run_id in run_ids]


def _expert_reuse(records: list[dict]) -> dict:
    """How many experts (task, seed) the report's runs used, and how many (target, task, seed) uses they served:
    in a matrix each expert serves every target it is a source of and is trained once."""
    uses = {(record["config"]["target"], artefact["task"], artefact["seed"]) for record in records
            for artefact in record["config"].get("details", {}).get("artefacts", [])
            if artefact["task"] != record["config"]["target"]}
    return {"distinct": len({use[1:] for use in uses}), "target_uses": len(uses)}
