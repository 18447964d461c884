"""The committed report under reports/ is whole: figures, links, clean notebooks, verdicts that match its results CSV."""
import html
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fusionkit.evaluation.sequential import SeedDesign
from fusionkit.evaluation.verdicts import compare_pairs, verdict_sentences
from fusionkit.report.findings import Comparisons

REPORTS = Path(__file__).resolve().parent.parent / "reports"
FOLDERS = sorted(path.parent for path in REPORTS.glob("*/index.html"))


def is_matrix(folder: Path) -> bool:
    return "targets" in json.loads((folder / "provenance.json").read_text())["parameters"]


TARGET_FOLDERS = [folder for folder in FOLDERS if not is_matrix(folder)]
MATRIX_FOLDERS = [folder for folder in FOLDERS if is_matrix(folder)]
# What each kind of report holds at least: its notebooks and figures.
NOTEBOOKS, FIGURES = {False: 5, True: 1}, {False: 8, True: 3}


@pytest.fixture(params=FOLDERS, ids=[folder.name for folder in FOLDERS])
def report(request) -> Path:
    return request.param


@pytest.fixture(params=TARGET_FOLDERS, ids=[folder.name for folder in TARGET_FOLDERS])
def target_report(request) -> Path:
    return request.param


@pytest.fixture(params=MATRIX_FOLDERS, ids=[folder.name for folder in MATRIX_FOLDERS])
def matrix_report(request) -> Path:
    return request.param


def test_a_report_of_each_kind_is_committed():
    assert TARGET_FOLDERS and MATRIX_FOLDERS, f"reports/*/index.html under {REPORTS}: {FOLDERS}"


def test_index_has_figures_and_every_link_resolves(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= FIGURES[is_matrix(report)]
    links = images + re.findall(r"href='([^']+)'", page)
    missing = [link for link in links if not (report / link).is_file()]
    assert not missing, missing
    assert page.index("Verdicts") < page.index("Figures") < page.index("Provenance")


def test_executed_notebooks_hold_no_error_output(report):
    notebooks = sorted((report / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == NOTEBOOKS[is_matrix(report)]
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"


def test_verdicts_are_recomputed_exactly_from_the_results_csv(target_report):
    """Every verdict sentence (verdicts.json) and every row of the page's verdict table is what compare_pairs says
    from results.csv: each fusion system against its matched control, with the declared alpha and minimum effect."""
    report = target_report
    if made_under_an_older_protocol(report):
        return  # its sentences follow that protocol's verdict rule; its page says so (checked there)
    results = pd.read_csv(report / "results.csv", keep_default_na=False, na_values=[""])
    parameters = json.loads((report / "provenance.json").read_text())["parameters"]["study_parameters"]
    controls = results[(results["role"] == "control") & results["primary_control"]]
    pairs = list(dict.fromkeys(zip(controls["of"], controls["system"])))
    knowledge = compare_pairs(results, pairs, metric="accuracy", alpha=parameters["alpha"],
                              min_effect=parameters["min_effect"],
                              design=SeedDesign.from_parameter(parameters["seeds"]))
    sections = {s["title"]: s["sentences"] for s in json.loads((report / "verdicts.json").read_text())["sections"]}
    assert verdict_sentences(knowledge) == sections[Comparisons.TITLES["knowledge"]]
    assert set(knowledge["system"]) == set(results.loc[results["role"] == "fusion", "system"])  # every one judged
    page = (report / "index.html").read_text(encoding="utf-8")
    for row in knowledge.itertuples():
        assert f"<tr data-system='{html.escape(row.system)}' data-verdict='{html.escape(row.verdict)}'>" in page


def test_the_advice_is_recomputed_from_the_reports_own_csvs(target_report):
    """The Advice section of verdicts.json is what ``findings.advice`` says from verdict_table.csv, cost.csv and
    results.csv as committed; with every verdict read as undecided, the same tables advise the target-only
    baseline best on validation (recomputed here from results.csv), at the cost cost.csv gives it."""
    from fusionkit.report.findings import advice

    report = target_report
    if made_under_an_older_protocol(report) or not (report / "verdict_table.csv").is_file():
        return
    parameters = json.loads((report / "provenance.json").read_text())["parameters"]["study_parameters"]
    verdicts, cost = pd.read_csv(report / "verdict_table.csv"), pd.read_csv(report / "cost.csv")
    results = pd.read_csv(report / "results.csv", keep_default_na=False, na_values=[""])
    size, min_effect = parameters["fusion_size"], parameters["min_effect"]
    sections = {s["title"]: s["sentences"] for s in json.loads((report / "verdicts.json").read_text())["sections"]}
    assert advice(verdicts, cost, results, size, min_effect) == sections["Advice"]
    helping = verdicts[(verdicts["train_size"] == size) & (verdicts["verdict"] == "helps")]
    assert sections["Advice"][0].startswith("Use " if len(helping) else "Nothing fused helps")
    undecided = verdicts.assign(verdict="inconclusive")
    words = advice(undecided, cost, results, size, min_effect)
    baselines = results[(results["role"] == "baseline") & (results["train_size"] == size)]
    best = baselines.groupby("system")["val_accuracy"].mean().idxmax()
    seconds = cost.set_index("system").loc[best, "train_seconds_with_experts"]
    assert words[0].startswith(f"Nothing fused helps at this study's error rate: use {best}, ")
    assert f"{baselines[baselines['system'] == best]['val_accuracy'].mean():.3f}" in words[0]
    assert (f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s") in words[0]
    assert words[-1].startswith(f"Undecided: {', '.join(verdicts[verdicts['train_size'] == size]['system'])}.")


def test_every_system_was_tuned_with_the_same_budget_on_validation(report):
    tuning = pd.read_csv(report / "tuning.csv")
    parameters = json.loads((report / "provenance.json").read_text())["parameters"]["study_parameters"]
    arm = [column for column in ("target", "system", "train_size") if column in tuning]
    counts = tuning.groupby(arm).size()
    assert set(counts) == {parameters["tuning_budget"]}
    chosen = tuning[tuning["chosen"]]
    assert (chosen.groupby(arm).size() == 1).all()
    best = tuning.groupby(arm)["val_accuracy"].transform("max")
    assert (chosen["val_accuracy"] == best[chosen.index]).all()  # chosen on validation accuracy


def test_provenance_says_how_the_report_was_made(report):
    record = json.loads((report / "provenance.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["git_commit"])
    assert {"torch", "transformers", "fusionkit"} <= set(record["versions"])
    from fusionkit.study.profiles import PROFILES

    assert record["profile"] in PROFILES and record["hardware"]


def made_under_an_older_protocol(report: Path) -> bool:
    """Whether the committed report was made under an older protocol; then its page must say so (it cannot be what
    today's code plans), which is what is checked instead."""
    from fusionkit.study.design import PROTOCOL_VERSION

    made = json.loads((report / "provenance.json").read_text()).get("protocol_version", 1)
    if made == PROTOCOL_VERSION:
        return False
    page = (report / "index.html").read_text()
    assert f"Made under protocol version {made}</strong>; this code plans version {PROTOCOL_VERSION}" in page
    return True


@pytest.mark.slow
def test_the_code_plans_exactly_the_runs_of_the_committed_report(target_report, data_dir):
    """The committed report is what the code would run: the tuning runs its study plans today are the ids in its
    tuning.csv, and with the choices those runs made, the other runs are the ids in its results.csv; so
    regenerating it from its stored runs trains nothing and gives the same numbers. A report made under an older
    protocol says so on its page instead."""
    from fusionkit.report import notebook_run
    from fusionkit.study import StudyDesign, load_study_tasks

    report = target_report
    if made_under_an_older_protocol(report):
        return
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


def test_the_matrix_report_has_five_targets_its_figures_and_the_selection_measures(matrix_report):
    targets = json.loads((matrix_report / "provenance.json").read_text())["parameters"]["targets"]
    assert len(targets) >= 5
    cells = pd.read_csv(matrix_report / "transfer_matrix.csv")
    assert len(cells) == len(targets) * (len(targets) - 1) and (cells["source"] != cells["target"]).all()
    figures = json.loads((matrix_report / "figures" / "figures.json").read_text())
    assert {"06_transfer_matrix", "06_critical_difference", "06_asymmetry"} <= set(figures)
    selection = pd.read_csv(matrix_report / "selection.csv")
    assert {"ndcg@1", "ndcg@3", "regret@1", "regret@3"} <= set(selection.columns)
    assert any(column.startswith("p_vs_random") for column in selection.columns)
    assert {"logme", "hscore", "leep", "nce", "textemb", "random", "source train size"} == set(selection["estimator"])
    size = sum(path.stat().st_size for path in matrix_report.rglob("*") if path.is_file())
    assert size < 15e6, f"{size / 1e6:.1f} MB"


def test_the_matrix_cells_and_selection_are_recomputed_exactly_from_its_csvs(matrix_report):
    """Each cell is the primary comparisons on results.csv (sequential against its matched control, one family with
    the systems over all sources), and the selection table is selection_table on source_estimates.csv against those
    gains. A report made under an older protocol keeps its gains (they follow no rule) and says so on its page."""
    from fusionkit.evaluation.selection import selection_table
    from fusionkit.study.design import primary_comparisons

    results = pd.read_csv(matrix_report / "results.csv", keep_default_na=False, na_values=[""])
    parameters = json.loads((matrix_report / "provenance.json").read_text())["parameters"]["study_parameters"]
    family = primary_comparisons(results, parameters["alpha"], parameters["min_effect"],
                                 SeedDesign.from_parameter(parameters["seeds"]))
    seed_level = family[family["system"].str.startswith("sequential")].reset_index(drop=True)
    cells = pd.read_csv(matrix_report / "transfer_matrix.csv")
    assert seed_level["gain"].round(9).tolist() == cells["gain"].round(9).tolist()
    if made_under_an_older_protocol(matrix_report):
        return  # its verdicts and selection follow that protocol's rules; its page says so (checked there)
    assert seed_level["verdict"].tolist() == cells["verdict"].tolist()
    estimates = pd.read_csv(matrix_report / "source_estimates.csv")
    recomputed = selection_table(estimates, cells[["target", "source", "gain"]], alpha=parameters["alpha"])
    committed = pd.read_csv(matrix_report / "selection.csv")
    pd.testing.assert_frame_equal(recomputed.reset_index(drop=True), committed[recomputed.columns], check_dtype=False,
                                  atol=1e-9)
    estimators = committed.set_index("estimator")
    for measure in ("regret@1", "ndcg@3"):  # beside them, the bootstrap intervals over seeds (seed_uncertainty)
        low, high = estimators[f"{measure}_low"].drop("random"), estimators[f"{measure}_high"].drop("random")
        assert (low <= high).all() and low.notna().all()


def test_the_matrix_page_names_the_family_its_intervals_are_simultaneous_over(matrix_report):
    """The rule on the page says how many comparisons share alpha; every interval drawn is that wide: the t quantile
    at alpha / (2 x that many) times the seed-level standard error."""
    from scipy import stats

    if made_under_an_older_protocol(matrix_report):
        return
    cells = pd.read_csv(matrix_report / "transfer_matrix.csv")
    families = pd.read_csv(matrix_report / "comparisons_families.csv")
    size = len(cells) + len(families)
    page = (matrix_report / "index.html").read_text()
    stated = f"its {len(cells)} cells and its {len(families)} fusion-over-all-sources comparisons together ({size})"
    assert stated in page
    results = pd.read_csv(matrix_report / "results.csv").set_index(["system", "target", "seed"])["accuracy"]
    alpha = json.loads((matrix_report / "provenance.json").read_text())["parameters"]["study_parameters"]["alpha"]
    for row in cells.itertuples():
        system = f"sequential ({row.source})"
        gains = 100 * (results[system, row.target] - results[f"{system}: no source", row.target])
        quantile = stats.t.ppf(1 - alpha / (2 * size), len(gains) - 1)
        assert row.ci_high - row.gain == pytest.approx(quantile * gains.std(ddof=1) / len(gains) ** 0.5, rel=1e-6)


def test_each_expert_of_the_matrix_was_trained_once_for_every_target(matrix_report):
    record = json.loads((matrix_report / "provenance.json").read_text())
    targets, seeds = record["parameters"]["targets"], record["parameters"]["study_parameters"]["seeds"]
    assert record["experts"] == {"distinct": len(targets) * len(seeds),
                                 "target_uses": len(targets) * (len(targets) - 1) * len(seeds)}


@pytest.mark.slow
def test_the_code_plans_exactly_the_runs_of_the_committed_matrix(matrix_report, data_dir):
    """As for the single-target report: every target's study, planned by today's code with the committed tuning
    choices, is exactly the committed runs, so regenerating the matrix from its stored runs trains nothing."""
    from fusionkit.study import StudyDesign, load_study_tasks, matrix_configs

    if made_under_an_older_protocol(matrix_report):
        return
    parameters = json.loads((matrix_report / "provenance.json").read_text())["parameters"]
    tuning = pd.read_csv(matrix_report / "tuning.csv")
    scores = dict(zip(tuning["run_id"], tuning["val_accuracy"]))
    planned_tuning, planned = set(), set()
    for config in matrix_configs(parameters["profile"], parameters["targets"], "unused", str(data_dir),
                                 parameters["overrides"]):
        design = StudyDesign(config, *load_study_tasks(config))
        planned_tuning |= {p.key for p in design.tuning_runs()}
        planned |= {p.key for p in design.final_runs(scores)}
    assert planned_tuning == set(tuning["run_id"])
    assert planned == set(pd.read_csv(matrix_report / "results.csv")["run_id"])
