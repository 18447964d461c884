"""The report page in a real browser (headless Chromium, driven by Playwright): every image loads, the console stays
clean, the headline has one row per system of the study, the verdict table says what the comparisons CSVs and
verdicts.json say, and nothing scrolls sideways in a 1280 px window; the same for the single-file page (which
loads nothing but itself) and for the transfer-matrix page. The pages are written from copies of the committed
reports, so nothing is trained."""
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fusionkit.cli import app
from fusionkit.report import page
from fusionkit.report.provenance import command_line, relative_paths

REPO = Path(__file__).resolve().parent.parent
REPORTS = {"target": REPO / "reports" / "quick-cr", "matrix": REPO / "reports" / "matrix"}
WIDTH, HEIGHT = 1280, 900


@functools.cache
def missing_browser() -> str | None:
    """Why no browser can be driven here, or None: Playwright, and the system's Chromium or Playwright's own."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if page.find_chromium():
        return None
    with sync_playwright() as playwright:
        if Path(playwright.chromium.executable_path).is_file():
            return None
    return "no Chromium found (apt-get install chromium, or set FUSIONKIT_CHROMIUM to a Chromium executable)"


def playwright_or_skip():
    """Playwright's entry point; without it or a Chromium the test is skipped, except in CI, where it fails."""
    reason = missing_browser()
    if reason is None:
        from playwright.sync_api import sync_playwright

        return sync_playwright
    if os.environ.get("CI"):
        pytest.fail(f"CI must test the report page in a browser: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    sync_playwright = playwright_or_skip()
    with sync_playwright() as playwright:
        chromium = page.launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Copies of the committed reports with the page written again: index.html and the single file."""
    copies = {}
    for kind, committed in REPORTS.items():
        copy = tmp_path_factory.mktemp(kind) / committed.name
        shutil.copytree(committed, copy)
        page.rewrite_index(copy)
        page.write_single_file(copy)
        copies[kind] = copy
    return copies


class Opened:
    """A page loaded in a 1280 x 900 window, with the console errors and every URL it requested."""

    def __init__(self, browser, path: Path):
        self.window = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        self.errors, self.requests = [], []
        self.window.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.window.on("pageerror", lambda error: self.errors.append(str(error)))
        self.window.on("request", lambda request: self.requests.append(request.url))
        self.window.goto(path.resolve().as_uri(), wait_until="load")

    def rows(self, table: str, *attributes: str) -> list[tuple]:
        """The data attributes of each body row of the table named ``table``."""
        return [tuple(row) for row in self.window.eval_on_selector_all(
            f"table[data-table='{table}'] tbody tr",
            f"rows => rows.map(r => {json.dumps(list(attributes))}.map(a => r.getAttribute(a)))")]

    def cells(self, table: str) -> list[list[str]]:
        return self.window.eval_on_selector_all(
            f"table[data-table='{table}'] tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


@pytest.fixture(scope="module", params=[(kind, single) for kind in REPORTS for single in (False, True)],
                ids=lambda p: f"{p[0]}-{'single-file' if p[1] else 'index'}")
def opened(request, browser, folders):
    kind, single = request.param
    folder = folders[kind]
    shown = Opened(browser, folder / (f"{folder.name}.html" if single else "index.html"))
    yield kind, single, folder, shown
    shown.window.close()


def test_every_image_loads_and_the_console_is_clean(opened):
    _, single, folder, shown = opened
    images = shown.window.eval_on_selector_all("img", "images => images.map(i => [i.alt, i.complete, i.naturalWidth])")
    captions = json.loads((folder / "figures" / "figures.json").read_text())
    assert len(images) == len(captions)
    assert [alt for alt, complete, width in images if not (complete and width > 0)] == []
    assert shown.errors == []
    if single:  # self-contained: the browser fetches nothing but the page itself
        assert [url for url in shown.requests if not url.startswith("data:")] == [shown.window.url]


def test_nothing_scrolls_sideways_at_1280_px(opened):
    shown = opened[3]
    width, client = shown.window.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= client == WIDTH
    # wide tables scroll inside their own box; no image is wider than the text
    assert shown.window.evaluate("[...document.images].every(i => i.getBoundingClientRect().right <= innerWidth)")


def test_the_headline_has_one_row_per_system_of_the_study_most_accurate_first(opened):
    kind, _, folder, shown = opened
    if kind == "matrix":
        cells = pd.read_csv(folder / "transfer_matrix.csv")
        validation = cells.set_index(["target", "source"])["val_accuracy"]
        rows = shown.cells("best-sources")
        assert sorted(row[0] for row in rows) == sorted(cells["target"].unique())
        for target, source, *_ in rows:  # the source best on validation (two may tie), never the best on test
            assert validation[target, source.rstrip(" †")] == validation[target].max()
        return
    results = pd.read_csv(folder / "results.csv")
    fusion_size = json.loads((folder / "provenance.json").read_text())["parameters"]["study_parameters"]["fusion_size"]
    study = results[results["role"].isin(["fusion", "baseline"]) & (results["train_size"] == fusion_size)]
    rows = [system for (system,) in shown.rows("headline", "data-system")]
    assert len(rows) == len(set(rows)) and set(rows) == set(study["system"])
    assert rows == study.groupby("system")["accuracy"].mean().sort_values(ascending=False).index.tolist()
    classes = shown.window.eval_on_selector_all("table[data-table='headline'] tbody tr", "rows => rows.map(r => r.className)")
    assert classes[0] == "best" and set(classes[1:]) == {""}
    headline = pd.read_csv(folder / "headline.csv")
    assert headline["system"].tolist() == rows


def test_the_verdict_table_says_what_the_comparisons_and_verdicts_json_say(opened):
    kind, _, folder, shown = opened
    sentences = [s for section in json.loads((folder / "verdicts.json").read_text())["sections"]
                 for s in section["sentences"]]
    if kind == "matrix":
        cells = pd.read_csv(folder / "transfer_matrix.csv")
        expected = [(f"{r.source}->{r.target}", r.verdict) for r in cells.itertuples()]
        assert shown.rows("verdicts", "data-system", "data-verdict") == expected
        for r in cells.itertuples():
            said = [s for s in sentences if s.startswith(f"sequential ({r.source}) vs {r.control} on {r.target} at")]
            assert said and all(s.endswith(f": {r.verdict}") or f": {r.verdict} (" in s for s in said)
        return
    knowledge = pd.read_csv(folder / "comparisons_knowledge.csv")
    on_test_set = pd.read_csv(folder / "comparisons_on_test_set.csv").set_index("system")
    tuned_path = folder / "comparisons_tuned_control.csv"
    tuned = pd.read_csv(tuned_path).set_index("system") if tuned_path.is_file() else None
    assert shown.rows("verdicts", "data-system", "data-verdict") == list(zip(knowledge["system"], knowledge["verdict"]))
    for row, cells in zip(knowledge.itertuples(), shown.cells("verdicts")):
        assert cells[2].startswith(f"{row.gain:+.1f} [") and cells[4].endswith(row.verdict)
        if tuned is not None:  # the gain over the tuned control comes next, then the secondary test
            assert cells[5].startswith(f"{tuned.loc[row.system, 'gain']:+.1f} [")
            assert cells[7].endswith(tuned.loc[row.system, "verdict"])
            cells = cells[:5] + cells[8:]
        secondary = on_test_set.loc[row.system]
        assert cells[5].startswith(f"{secondary.gain:+.1f} [") and cells[7].endswith(secondary.verdict)
        said = [s for s in sentences if s.startswith(f"{row.system} vs {row.baseline} on ")]
        assert said and all(f": {row.verdict}" in s or f": {secondary.verdict}" in s for s in said)
    # the rule is written once, above the table, and the sentences stay in verdicts.json
    assert shown.window.locator("p.rule").count() == 1
    assert shown.window.locator("text=sequential (mr) vs sequential (mr): no source on").count() == 0


def test_the_forest_plot_or_heatmap_comes_right_after_the_verdicts(opened):
    kind, _, _, shown = opened
    first = page.HEATMAP if kind == "matrix" else page.FOREST
    order = shown.window.evaluate(
        "[...document.querySelectorAll('h2, figure')].map(e => e.tagName === 'H2' ? e.innerText : e.id)")
    verdicts = order.index("Verdicts")
    assert order[verdicts + 1] == first and order.index("Figures") > verdicts + 1


def test_the_single_file_links_nothing_of_the_folder(folders):
    for folder in folders.values():
        single = (folder / f"{folder.name}.html").read_text(encoding="utf-8")
        assert "src='figures/" not in single and "href='" not in single
        assert "data:image/png;base64," in single


def test_no_folder_of_the_machine_is_on_the_page(folders):
    for folder in folders.values():
        for name in ("index.html", f"{folder.name}.html"):
            text = (folder / name).read_text(encoding="utf-8")
            assert str(REPO) not in text and str(folder.parent) not in text


def test_provenance_writes_paths_relative_to_the_folder_the_report_was_made_from(tmp_path):
    here = Path.cwd()
    assert command_line(["/opt/venv/bin/fusionkit", "report", "--out", str(here / "reports/x"),
                         f"--study={here / 'study.yaml'}", "-p", "seeds=[0,1]"]) == (
        "fusionkit report --out reports/x --study=study.yaml -p 'seeds=[0,1]'")
    assert relative_paths({"target": {"path": str(here / "data" / "t.csv")}, "sources": ["mr", str(here / "m")],
                           "seeds": [0, 1], "cap": None}) == {"target": {"path": "data/t.csv"},
                                                              "sources": ["mr", "m"], "seeds": [0, 1], "cap": None}


def test_a_deterministic_system_or_a_single_run_shows_no_interval():
    runs = pd.DataFrame({"system": ["finetune"] * 3 + ["linear_probe"] * 3 + ["sequential (mr)"],
                         "role": ["baseline"] * 6 + ["fusion"], "target": "cr", "train_size": 128,
                         "seed": [0, 1, 2, 0, 1, 2, 0], "accuracy": [0.80, 0.82, 0.84, 0.75, 0.75, 0.75, 0.9],
                         "macro_f1": 0.7, "ece": 0.05, "trainable_params": 770, "train_seconds": 1.0})
    table = page.headline_table(runs, 128, {"linear_probe": ("worse", "finetune")}).set_index("system")
    assert table["best"].idxmax() == "sequential (mr)" and table.loc["linear_probe", "verdict"] == "worse"
    assert table.loc["linear_probe", "gain_vs_finetune"] == pytest.approx(-7.0)
    shown = dict(zip(table.index, ("".join(cells) for cells in page._headline_rows(table.reset_index()))))
    assert "75.0 (deterministic)" in shown["linear_probe"] and "82.0 [" in shown["finetune"]
    assert "90.0 (one run)" in shown["sequential (mr)"] and "+8.0 (one run)" in shown["sequential (mr)"]


def test_the_page_command_rewrites_a_report_its_single_file_and_a_screenshot(tmp_path):
    """In its own process: Playwright's sync API will not start inside the browser fixture's."""
    playwright_or_skip()
    copy, png = tmp_path / "quick-cr", tmp_path / "preview.png"
    shutil.copytree(REPORTS["target"], copy, ignore=shutil.ignore_patterns("notebooks", "index.html"))
    command = [sys.executable, "-c", "from fusionkit.cli import app; app()", "page", str(copy), "--single-file",
               "--screenshot", str(png)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy / "index.html").is_file() and (copy / "quick-cr.html").is_file() and (copy / "headline.csv").is_file()
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (WIDTH, HEIGHT)


def test_the_page_command_names_a_folder_that_is_no_report(tmp_path):
    result = CliRunner().invoke(app, ["page", str(tmp_path)])
    assert result.exit_code == 1 and "no provenance.json" in result.output


def test_the_report_command_passes_single_file_on(monkeypatch, tmp_path):
    import fusionkit.report

    given = {}
    monkeypatch.setattr(fusionkit.report, "run_report", lambda *args, **kwargs: given.update(kwargs))
    for options, expected in (([], False), (["--single-file"], True)):
        result = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--profile", "smoke", *options])
        assert result.exit_code == 0, result.output
        assert given["single_file"] is expected
