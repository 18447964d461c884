"""A run of a report as a model other tools load: refitted from the report's record, then exported.

Runs keep their predictions, not their weights (``store``), so ``export_run`` rebuilds the studies the report ran
from its ``provenance.json`` (profile, target and sources or the matrix's targets, work folder, overrides, data
folder; relative paths are read from the current folder, as the report wrote them), finds the run in a study's
design, checks that the data folder still holds the data the run was fitted on (content fingerprints), fits the run
through the artefact cache (``<workdir>/models/``: trained once, loaded after that) and exports it
(``FittedModel.export``). Training is deterministic on CPU, so the refit scores the stored test accuracy; where it
does not (another device, other library versions), a warning names both numbers.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionkit.errors import ConfigError, DataError, FusionkitWarning
from fusionkit.strategies.export import check_export_folder
from fusionkit.study.design import StudyDesign
from fusionkit.study.profiles import matrix_configs, study_config
from fusionkit.study.runner import StudyConfig, StudyRunner, load_study_tasks
from fusionkit.study.store import ResultsStore

ACCURACY_TOLERANCE = 1e-6


@dataclass
class ExportedRun:
    """Where a run was exported, what it is, and its test accuracy as stored and as refitted."""

    path: Path
    run_id: str
    system: str
    stored_accuracy: float
    refit_accuracy: float


def report_study_configs(report_dir: str | Path) -> list[StudyConfig]:
    """The study configs a report ran, rebuilt from its provenance.json (both parts of a target's report, or one
    study per target of a matrix)."""
    path = Path(report_dir) / "provenance.json"
    if not path.is_file():
        raise DataError(f"'{report_dir}' is not a report folder: it has no provenance.json")
    try:
        parameters = json.loads(path.read_text())["parameters"]
        profile, workdir = parameters["profile"], parameters["workdir"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"'{path}' does not record the study's parameters ({type(error).__name__}: {error})") from None
    data_dir, overrides = parameters.get("data_dir"), parameters.get("overrides") or {}
    if parameters.get("targets"):
        return matrix_configs(profile, parameters["targets"], workdir, data_dir, overrides, parameters.get("sources"))
    return [study_config(profile, part, parameters["target"], parameters["sources"], workdir, data_dir, overrides)
            for part in ("baselines", "fusion")]


def export_run(run_id: str, to: str | Path, report_dir: str | Path, overwrite: bool = False) -> ExportedRun:
    """Refit the run ``run_id`` of the report in ``report_dir`` and export it to the folder ``to`` (checked before
    the refit: ``strategies.export.check_export_folder``; ``overwrite`` replaces a folder of other files)."""
    check_export_folder(to, overwrite)
    configs = report_study_configs(report_dir)
    results = Path(configs[0].workdir) / "results"
    if not results.is_dir():
        raise ConfigError(f"report '{report_dir}' ran in work folder '{configs[0].workdir}', which has no results "
                          f"store here: run the export from the folder the report was made from")
    store = ResultsStore(results)
    if not store.has(run_id):
        raise ConfigError(f"unknown run id {run_id!r}: no run of report '{report_dir}' is stored under it in "
                          f"'{results}' (see the run_id column of its results.csv or tuning.csv)")
    record = store.record(run_id)
    design, planned = _find(configs, run_id, record, store, report_dir)
    runner = StudyRunner(design.config, design.target, design.sources, store)
    fitted = runner.as_artefact(planned.run).provide()
    test = design.target.test
    refit = float((fitted.predict(test) == np.asarray(test["label"][:])).mean())
    stored = float(record["scores"]["accuracy"])
    if abs(refit - stored) > ACCURACY_TOLERANCE:
        warnings.warn(f"run {run_id} ({planned.system}) refitted scores test accuracy {refit:.6f}, but its stored "
                      f"record says {stored:.6f}: the export is the refitted model", FusionkitWarning, stacklevel=2)
    return ExportedRun(fitted.export(to, overwrite), run_id, planned.system, stored, refit)


def _find(configs: list[StudyConfig], run_id: str, record: dict, store: ResultsStore, report_dir):
    """The design of the study that plans ``run_id`` and its planned run; a DataError when the data folder no longer
    holds the data the run was fitted on."""
    stored_data, changed = record["config"].get("data"), []
    for config in configs:
        if config.target != record["config"].get("target"):
            continue
        design = StudyDesign(config, *load_study_tasks(config))
        if design.data != stored_data:
            changed.append(f"now {design.data}")
            continue
        tuning = design.tuning_runs()
        scores = design.validation_scores(store) if config.tuning_budget > 1 else None
        for planned in [*tuning, *design.final_runs(scores)]:
            if planned.key == run_id:
                return design, planned
    if changed:
        raise DataError(f"run {run_id} was fitted on data with fingerprints {stored_data}, but the data folder "
                        f"holds other data ({'; '.join(changed)}): it cannot be refitted as it was")
    raise ConfigError(f"run {run_id} is stored, but no study of report '{report_dir}' plans it (was it made by "
                      f"another report sharing the work folder?)")
