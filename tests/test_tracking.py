"""``--track mlflow``: a report and each of its runs logged to a local MLflow store, once, whatever the reruns."""
import json
import subprocess
import sys

import nbformat
import pytest
from typer.testing import CliRunner

from fusionkit.cli import app
from fusionkit.errors import ConfigError
from fusionkit.report import run_report
from fusionkit.report.tracking import PARAM_LIMIT, TRUNCATED, check_tracker, destination, track_report
from fusionkit.study.executors import run_study
from fusionkit.study.profiles import study_config
from fusionkit.study.store import ResultsStore

mlflow = pytest.importorskip("mlflow")
# MLflow 3.17's SQLite store trips SQLAlchemy's deprecation of its `noload` strategy on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")

EPOCHS = 2
# One finetune arm, one seed, two learning rates tried on validation: one run in results.csv, one more only in
# tuning.csv. About 5 s with the tiny encoder.
TINY = {"seeds": [0], "task_train_cap": 60, "validation_cap": 20, "test_cap": 30, "cka_examples": 8,
        "tuning_budget": 2, "train_knobs": {"epochs": EPOCHS, "batch_size": 16, "progress": False},
        "baseline_arms": [{"system": "finetune", "strategy": "finetune", "train_sizes": [30],
                           "search": {"lr": [1e-4, 3e-4]}}]}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Whatever MLflow might put in the current folder goes to the test's folder, not the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def study(data_dir, tmp_path_factory):
    """(work folder, results table, tuning table) of a tiny real study."""
    workdir = tmp_path_factory.mktemp("work")
    results = run_study(study_config("smoke", "baselines", "cr", [], str(workdir), str(data_dir), overrides=TINY),
                        progress=False)
    return workdir, results.drop(columns=["details"]), results.attrs["tuning"]


def write_report(out, study, provenance=None):
    """A report folder as run_report leaves it, as far as tracking reads it."""
    _, results, tuning = study
    (out / "figures").mkdir(parents=True)
    results.to_csv(out / "results.csv", index=False)
    tuning.to_csv(out / "tuning.csv", index=False)
    (out / "figures" / "accuracy.png").write_bytes(b"\x89PNG not really")
    (out / "index.html").write_text("<html></html>")
    record = provenance or {"profile": "smoke", "git_commit": "0" * 40, "versions": {"torch": "2.13.0"},
                            "parameters": {"target": "cr", "sources": []}, "total_seconds": 12.5}
    (out / "provenance.json").write_text(json.dumps(record))
    return out


def runs_of(uri, experiment="report"):
    """{"report": the parent run, fusionkit run id: its MLflow run} of the active runs in the experiment."""
    client = mlflow.MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, {run.data.tags.get("fusionkit_run_id", "report"): run for run in found}


@pytest.fixture(scope="module")
def tracked(study, tmp_path_factory):
    """A report tracked in the default store: ./mlruns of the current folder."""
    folder = tmp_path_factory.mktemp("cwd")
    out = write_report(folder / "report", study)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        summary = track_report(out, study[0])
    return folder, summary


def test_the_default_store_is_mlruns_in_the_current_folder(tracked):
    folder, summary = tracked
    assert summary["uri"] == f"sqlite:///{folder}/mlruns/mlflow.db" and summary["experiment"] == "report"
    assert (folder / "mlruns" / "mlflow.db").is_file() and (folder / "mlruns" / "artifacts").is_dir()


def test_each_run_of_the_report_is_one_nested_mlflow_run_with_its_params_and_scores(study, tracked):
    folder, summary = tracked
    workdir, results, tuning = study
    store = ResultsStore(workdir / "results")
    _, runs = runs_of(f"sqlite:///{folder}/mlruns/mlflow.db")
    run_ids = set(results["run_id"]) | set(tuning["run_id"])
    assert len(run_ids) == 2 and set(runs) == run_ids | {"report"}
    assert (summary["runs_logged"], summary["runs_already_logged"]) == (2, 0)
    chosen = results["run_id"].iloc[0]
    for run_id in run_ids:
        run, record = runs[run_id], store.record(run_id)
        assert run.data.tags["mlflow.parentRunId"] == runs["report"].info.run_id == summary["report_run_id"]
        assert run.info.run_name == run.data.tags["system"] == "finetune"
        assert run.data.tags["role"] == ("baseline" if run_id == chosen else "tuning")
        assert run.data.tags["target"] == "cr"
        assert run.data.params["knobs.lr"] == str(record["config"]["knobs"]["lr"])
        assert (run.data.params["seed"], run.data.params["encoder"], run.data.params["train_size"]) == ("0", "tiny",
                                                                                                        "30")
        assert run.data.metrics["accuracy"] == record["scores"]["accuracy"]
        assert run.data.metrics["train_seconds"] == record["cost"]["train_seconds"]
        assert "history.val_metric" in run.data.metrics and "details.history" not in run.data.params
    assert runs[chosen].data.metrics["accuracy"] == results["accuracy"].iloc[0]


def test_the_training_history_is_a_series_with_one_step_per_epoch(study, tracked):
    folder, _ = tracked
    store = ResultsStore(study[0] / "results")
    client, runs = runs_of(f"sqlite:///{folder}/mlruns/mlflow.db")
    run_id = study[1]["run_id"].iloc[0]
    history = store.record(run_id)["config"]["details"]["history"]
    for name in ("val_metric", "train_loss"):
        series = client.get_metric_history(runs[run_id].info.run_id, f"history.{name}")
        assert len(history[name]) == EPOCHS
        assert [(m.step, m.value) for m in sorted(series, key=lambda m: m.step)] == list(enumerate(history[name]))


def test_the_report_folder_and_each_record_are_artifacts(study, tracked):
    folder, _ = tracked
    client, runs = runs_of(f"sqlite:///{folder}/mlruns/mlflow.db")
    parent = runs["report"]
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} >= {
        "results.csv", "tuning.csv", "provenance.json", "index.html", "figures"}
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "figures")] == ["figures/accuracy.png"]
    assert (parent.data.params["profile"], parent.data.params["versions.torch"]) == ("smoke", "2.13.0")
    assert parent.data.tags["mlflow.source.git.commit"] == "0" * 40
    run_id = study[1]["run_id"].iloc[0]
    assert [f.path for f in client.list_artifacts(runs[run_id].info.run_id)] == [f"{run_id}.json"]


def test_tracking_a_report_again_adds_no_runs_and_a_regenerated_one_replaces_its_runs(study, tmp_path):
    out, uri = write_report(tmp_path / "report", study), f"sqlite:///{tmp_path}/store.db"
    first = track_report(out, study[0], uri=uri)
    again = track_report(out, study[0], uri=uri)
    assert again["report_already_logged"] and (again["runs_logged"], again["runs_already_logged"]) == (0, 2)
    assert again["report_run_id"] == first["report_run_id"]
    client, runs = runs_of(uri)
    assert len(runs) == 3 and (tmp_path / "artifacts").is_dir()  # beside the database
    (out / "provenance.json").write_text(json.dumps({"profile": "smoke", "total_seconds": 13.0}))
    regenerated = track_report(out, study[0], uri=uri)
    assert not regenerated["report_already_logged"] and regenerated["runs_logged"] == 2
    _, runs = runs_of(uri)
    assert len(runs) == 3 and runs["report"].info.run_id == regenerated["report_run_id"] != first["report_run_id"]
    assert runs["report"].data.params == {"profile": "smoke", "total_seconds": "13.0"}


def test_a_long_param_is_cut_to_the_limit_and_named(study, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store.db")
    out = write_report(tmp_path / "report", study, {"profile": "smoke", "parameters": {"arms": "x" * 2000}})
    track_report(out, study[0], experiment="long")
    _, runs = runs_of(f"sqlite:///{tmp_path}/store.db", "long")
    value = runs["report"].data.params["parameters.arms"]
    assert len(value) == PARAM_LIMIT and value.endswith(TRUNCATED)
    assert runs["report"].data.tags["fusionkit_truncated_params"] == "parameters.arms"
    # recorded relative to the current folder (here tmp_path): a report names no folder of the machine
    assert destination(out, experiment="long") == "MLflow experiment 'long' at sqlite:///store.db"


def test_run_report_tracks_what_it_wrote_and_names_where_in_its_provenance(study, tmp_path, monkeypatch):
    """The whole path, with one trivial notebook standing in for the real ones (which would train again)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store.db")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    notebook.cells = [nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]})]
    nbformat.write(notebook, notebooks / "01_nothing.ipynb")
    out = tmp_path / "quick-cr"
    _, results, tuning = study
    out.mkdir()
    results.to_csv(out / "results.csv", index=False)  # as the real notebooks would have written them
    tuning.to_csv(out / "tuning.csv", index=False)
    run_report(out, profile="smoke", workdir=str(study[0]), notebooks_folder=notebooks, progress=False,
               track="mlflow")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["tracking"] == "MLflow experiment 'quick-cr' at sqlite:///store.db"
    client, runs = runs_of(f"sqlite:///{tmp_path}/store.db", "quick-cr")
    assert len(runs) == 3 and "index.html" in {f.path for f in client.list_artifacts(runs["report"].info.run_id)}


def test_without_mlflow_tracking_is_a_config_error_that_says_what_to_install(study, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install fusionkit\[mlflow\]"):
        check_tracker("mlflow")
    with pytest.raises(ConfigError, match=r"pip install fusionkit\[mlflow\]"):
        track_report(write_report(tmp_path / "report", study), study[0])
    with pytest.raises(ConfigError, match=r"pip install fusionkit\[mlflow\]"):  # before any notebook runs
        run_report(tmp_path / "never", profile="smoke", workdir=str(tmp_path / "work"), track="mlflow")
    assert not (tmp_path / "never").exists()


def test_an_unknown_tracker_is_refused_by_the_command(tmp_path):
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "out"), "--track", "wandb"])
    assert result.exit_code == 1 and "unknown tracker 'wandb'" in result.output and "mlflow" in result.output
    assert not (tmp_path / "out").exists()


def test_the_command_line_never_imports_mlflow_unasked():
    code = "import sys, fusionkit.cli, fusionkit.report; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
