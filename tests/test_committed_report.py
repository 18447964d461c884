"""The committed report under reports/ is whole: figures, links, clean notebooks, verdicts that match its results CSV."""
import html
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fusionkit.report import tables as summaries
from fusionkit.evaluation.verdicts import compare_to_baseline, verdict_sentences

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
    results = pd.read_csv(report / "results.csv", keep_default_na=False, na_values=[""])
    results["sources"] = results["sources"].fillna("").astype(str)
    comparisons = compare_to_baseline(summaries.comparable_runs(results, "finetune"), "finetune", metric="accuracy",
                                      distinguish_by=["system"], name_column="system")
    sections = {s["title"]: s["sentences"] for s in json.loads((report / "verdicts.json").read_text())["sections"]}
    assert verdict_sentences(comparisons) == sections["Across seeds (retraining noise)"]
    # The per-example test judges the same point estimates (a mean of per-example differences).
    per_example = sections["Across test examples (test-set noise)"]
    gain = re.compile(r"^(.*?: [+-][0-9.]+ accuracy points)")
    assert [gain.match(s).group(1) for s in per_example] == [gain.match(s).group(1) for s in comparisons["sentence"]]
    page = (report / "index.html").read_text(encoding="utf-8")
    for sentence in [*per_example, *comparisons["sentence"]]:
        assert html.escape(sentence) in page


def test_provenance_says_how_the_report_was_made(report):
    record = json.loads((report / "provenance.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["git_commit"])
    assert {"torch", "transformers", "fusionkit"} <= set(record["versions"])
    assert record["profile"] in ("smoke", "quick", "full") and record["hardware"]


@pytest.mark.slow
def test_the_code_plans_exactly_the_runs_of_the_committed_report(report, data_dir):
    """The committed report is what the code would run: the run ids its study plans today are the ids in its
    results.csv, so regenerating it from its stored runs trains nothing and gives the same numbers."""
    from fusionkit.report import notebook_run
    from fusionkit.study import load_study_tasks, planned_runs, run_key

    parameters = json.loads((report / "provenance.json").read_text())["parameters"]
    run = notebook_run(parameters["profile"], parameters["target"], parameters["sources"], workdir="unused",
                       out_dir=str(report), data_dir=str(data_dir), overrides=parameters["overrides"])
    planned = set()
    for part in ("baselines", "fusion"):
        config = run.study(part)
        planned |= {run_key(r) for r in planned_runs(config, *load_study_tasks(config))}
    committed = set(pd.read_csv(report / "results.csv")["run_id"])
    assert planned == committed
