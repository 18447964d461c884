"""The committed report under reports/ is whole: figures, links, clean notebooks, verdicts that match its results CSV."""
import html
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fusionkit.evaluation.verdicts import compare_pairs, verdict_sentences
from fusionkit.report.findings import Comparisons

REPORTS = Path(__file__).resolve().parent.parent / "reports"
FOLDERS = sorted(path.parent for path in REPORTS.glob("*/index.html"))


@pytest.fixture(params=FOLDERS, ids=[folder.name for folder in FOLDERS])
def report(request) -> Path:
    return request.param


def test_a_report_is_committed():
    assert FOLDERS, f"no reports/*/index.html under {REPORTS}"


def test_index_has_figures_and_every_link_resolves(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 8
    links = images + re.findall(r"href='([^']+)'", page)
    missing = [link for link in links if not (report / link).is_file()]
    assert not missing, missing
    assert page.index("Verdicts") < page.index("Figures") < page.index("Provenance")


def test_executed_notebooks_hold_no_error_output(report):
    notebooks = sorted((report / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 5
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"


def test_verdicts_are_recomputed_exactly_from_the_results_csv(report):
    """Every verdict sentence on the page is what compare_pairs says from results.csv: each fusion system against
    its matched control, with the declared alpha and minimum effect."""
    results = pd.read_csv(report / "results.csv", keep_default_na=False, na_values=[""])
    parameters = json.loads((report / "provenance.json").read_text())["parameters"]["study_parameters"]
    controls = results[(results["role"] == "control") & results["primary_control"]]
    pairs = list(dict.fromkeys(zip(controls["of"], controls["system"])))
    knowledge = compare_pairs(results, pairs, metric="accuracy", alpha=parameters["alpha"],
                              min_effect=parameters["min_effect"])
    sections = {s["title"]: s["sentences"] for s in json.loads((report / "verdicts.json").read_text())["sections"]}
    assert verdict_sentences(knowledge) == sections[Comparisons.TITLES["knowledge"]]
    assert set(knowledge["system"]) == set(results.loc[results["role"] == "fusion", "system"])  # every one judged
    page = (report / "index.html").read_text(encoding="utf-8")
    for sentence in knowledge["sentence"]:
        assert html.escape(sentence) in page


def test_every_system_was_tuned_with_the_same_budget_on_validation(report):
    tuning = pd.read_csv(report / "tuning.csv")
    parameters = json.loads((report / "provenance.json").read_text())["parameters"]["study_parameters"]
    counts = tuning.groupby(["system", "train_size"]).size()
    assert set(counts) == {parameters["tuning_budget"]}
    chosen = tuning[tuning["chosen"]]
    assert (chosen.groupby(["system", "train_size"]).size() == 1).all()
    best = tuning.groupby(["system", "train_size"])["val_accuracy"].transform("max")
    assert (chosen["val_accuracy"] == best[chosen.index]).all()  # chosen on validation accuracy


def test_provenance_says_how_the_report_was_made(report):
    record = json.loads((report / "provenance.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["git_commit"])
    assert {"torch", "transformers", "fusionkit"} <= set(record["versions"])
    assert record["profile"] in ("smoke", "quick", "full") and record["hardware"]


@pytest.mark.slow
def test_the_code_plans_exactly_the_runs_of_the_committed_report(report, data_dir):
    """The committed report is what the code would run: the tuning runs its study plans today are the ids in its
    tuning.csv, and with the choices those runs made, the other runs are the ids in its results.csv; so
    regenerating it from its stored runs trains nothing and gives the same numbers."""
    from fusionkit.report import notebook_run
    from fusionkit.study import StudyDesign, load_study_tasks

    parameters = json.loads((report / "provenance.json").read_text())["parameters"]
    run = notebook_run(parameters["profile"], parameters["target"], parameters["sources"], workdir="unused",
                       out_dir=str(report), data_dir=str(data_dir), overrides=parameters["overrides"])
    tuning = pd.read_csv(report / "tuning.csv")
    scores = dict(zip(tuning["run_id"], tuning["val_accuracy"]))
    planned_tuning, planned = set(), set()
    for part in ("baselines", "fusion"):
        config = run.study(part)
        design = StudyDesign(config, *load_study_tasks(config))
        planned_tuning |= {p.key for p in design.tuning_runs()}
        planned |= {p.key for p in design.final_runs(scores)}
    assert planned_tuning == set(tuning["run_id"])
    assert planned == set(pd.read_csv(report / "results.csv")["run_id"])
