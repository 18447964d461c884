"""Reports: notebook parameters, figure saving, papermill execution into index.html, provenance, the CLI."""
import json
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from fusionkit.report import provenance
from fusionkit.cli import app, parse_parameters
from fusionkit.errors import ConfigError
from fusionkit.report import ReportError, notebook_run, run_report

COMMIT = re.compile(r"[0-9a-f]{40}(\+dirty)?")


@pytest.fixture
def no_env(monkeypatch):
    for name in ("FUSIONKIT_PROFILE", "FUSIONKIT_WORKDIR", "FUSIONKIT_OUT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def small_figure():
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    return figure


# ---------------------------------------------------------------- notebook_run

def test_profile_falls_back_to_the_environment_then_quick(no_env, tmp_path):
    assert notebook_run(workdir=str(tmp_path)).profile == "quick"
    no_env.setenv("FUSIONKIT_PROFILE", "smoke")
    assert notebook_run(workdir=str(tmp_path)).profile == "smoke"
    assert notebook_run("full", workdir=str(tmp_path)).profile == "full"


def test_work_and_output_folders_fall_back_to_the_environment(no_env, tmp_path):
    no_env.setenv("FUSIONKIT_WORKDIR", str(tmp_path / "work"))
    run = notebook_run("smoke")
    assert run.workdir == tmp_path / "work" and run.out_dir == tmp_path / "work" / "report"
    assert (run.out_dir / "figures").is_dir()
    no_env.setenv("FUSIONKIT_OUT", str(tmp_path / "out"))
    assert notebook_run("smoke").out_dir == tmp_path / "out"
    assert notebook_run("smoke", out_dir=str(tmp_path / "given")).out_dir == tmp_path / "given"


def test_sources_given_as_text_become_a_list(no_env, tmp_path):
    run = notebook_run("smoke", sources="mr, subj,", workdir=str(tmp_path))
    assert run.sources == ["mr", "subj"]
    assert run.study("fusion").sources == ["mr", "subj"]


def test_unknown_profile_or_parameter_fails_before_creating_folders(no_env, tmp_path):
    with pytest.raises(ConfigError, match="nosuch.*smoke, quick, matrix, full"):
        notebook_run("nosuch", workdir=str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="'epochz'"):
        notebook_run("smoke", workdir=str(tmp_path / "w"), overrides={"epochz": 1})
    assert not (tmp_path / "w").exists()


def test_save_writes_png_and_svg_and_records_captions(no_env, tmp_path):
    run = notebook_run("smoke", workdir=str(tmp_path), out_dir=str(tmp_path / "out"))
    figure = small_figure()
    assert run.save(figure, "first", "The first figure") is figure
    run.save(small_figure(), "second", "The second figure")
    folder = tmp_path / "out" / "figures"
    assert (folder / "first.png").read_bytes().startswith(b"\x89PNG")
    assert "<svg" in (folder / "first.svg").read_text()
    assert json.loads((folder / "figures.json").read_text()) == {"first": "The first figure",
                                                                 "second": "The second figure"}


# ---------------------------------------------------------------- run_report

PARAMETERS = ('profile = None\ntarget = "cr"\nsources = ["mr", "subj", "trec"]\nworkdir = None\nout_dir = None\n'
              'data_dir = None\noverrides = {}')
SETUP = ("from matplotlib.figure import Figure\nfrom fusionkit.report import notebook_run\nfrom fusionkit.report.build import write_verdicts\n"
         "run = notebook_run(profile, target, sources, workdir, out_dir, data_dir, overrides)\n"
         "assert run.profile == 'smoke' and run.sources == ['mr'], (run.profile, run.sources)\n"
         "figure = Figure(figsize=(2, 2))\nfigure.subplots().plot([0, 1], [1, 0])\n")
VERDICTS = ["sequential (mr) helps cr by 2.0 points", "multitask hurts cr by 1.0 points"]


def write_notebook(path: Path, *cells: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    write_notebook(folder / "01_figure.ipynb", SETUP + "run.save(figure, 'falling', 'A falling line')")
    write_notebook(folder / "02_verdicts.ipynb",
                   SETUP + "run.save(figure, 'again', 'The same line again')",
                   f"write_verdicts(run.out_dir, 'Does fusion help cr?', "
                   f"[('Across seeds', 'paired t-test', {VERDICTS!r})], ['n'])")
    (folder / "notes.ipynb").write_text("not a numbered notebook: ignored")
    out, work = tmp_path_factory.mktemp("report"), tmp_path_factory.mktemp("work")
    index = run_report(out, profile="smoke", target="cr", sources="mr", workdir=str(work), data_dir="/data/x",
                       notebooks_folder=folder, progress=False)
    return out, index


def test_index_puts_the_verdicts_before_the_figures(report):
    out, index = report
    assert index == out / "index.html"
    page = index.read_text()
    figures = page.index("<h2>Figures")
    for sentence in VERDICTS:
        assert -1 < page.index(sentence) < figures
    assert page.index("A falling line") > figures and "The same line again" in page


def test_every_image_and_link_of_the_index_exists(report):
    out, index = report
    page = index.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert sorted(images) == ["figures/again.png", "figures/falling.png"]
    for target in images + re.findall(r"<a href='([^']+)'", page):
        assert (out / target).is_file(), target


def test_each_notebook_is_executed_and_converted_to_html(report):
    out, _ = report
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == [
        "01_figure.html", "01_figure.ipynb", "02_verdicts.html", "02_verdicts.ipynb"]
    executed = nbformat.read(out / "notebooks" / "01_figure.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "profile = \"smoke\"" in injected[0].source


def test_provenance_records_code_versions_hardware_and_profile(report):
    out, _ = report
    record = json.loads((out / "provenance.json").read_text())
    assert COMMIT.fullmatch(record["git_commit"])
    assert record["versions"]["torch"] != "not installed" and record["versions"]["transformers"] != "not installed"
    assert "logical CPUs" in record["hardware"]
    assert record["profile"] == "smoke"
    assert record["parameters"]["sources"] == ["mr"]
    # paths relative to the folder the report was made from: no folder of this machine is named
    assert record["parameters"]["data_dir"] == os.path.relpath("/data/x")
    assert not any(str(value).startswith("/") for value in record["parameters"].values())
    assert set(record["notebook_seconds"]) == {"01_figure", "02_verdicts"}
    assert (record["runs_found_stored"], record["runs_trained"]) == (0, 0)  # these notebooks run no study


def test_a_failing_notebook_names_its_file_and_cell_and_keeps_the_partial_run(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_broken.ipynb", "x = 1", "raise ValueError('boom')", "y = 2")
    with pytest.raises(ReportError, match=r"01_broken\.ipynb failed in cell (\d+) \(ValueError: boom\)") as error:
        run_report(tmp_path / "out", profile="smoke", workdir=str(tmp_path / "work"), notebooks_folder=folder,
                   progress=False)
    cell = int(re.search(r"cell (\d+)", str(error.value)).group(1))
    partial = nbformat.read(tmp_path / "out" / "notebooks" / "01_broken.ipynb", as_version=4)
    failed = [c for c in partial.cells if c.cell_type == "code" and c.execution_count == cell]
    assert [c.source for c in failed] == ["raise ValueError('boom')"]  # the number the user sees in the notebook
    assert not (tmp_path / "out" / "index.html").exists()


def test_a_folder_without_numbered_notebooks_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no numbered notebooks"):
        run_report(tmp_path / "out", profile="smoke", workdir=str(tmp_path), notebooks_folder=tmp_path, progress=False)


# ---------------------------------------------------------------- provenance

def test_git_commit_inside_the_repository_and_outside_git(tmp_path):
    assert COMMIT.fullmatch(provenance.git_commit())
    assert provenance.git_commit(tmp_path) == "unknown"


def test_a_rewritten_report_does_not_make_the_code_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "index.html").write_text("old")
    (tmp_path / "code.py").write_text("x = 1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    (tmp_path / "reports" / "index.html").write_text("regenerated")
    assert not provenance.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2")
    assert provenance.git_commit(tmp_path).endswith("+dirty")


# ---------------------------------------------------------------- cli

def test_parse_parameters_reads_values_as_yaml():
    assert parse_parameters(["seeds=[0,1]", "encoder=tiny", "test_cap=30"]) == {
        "seeds": [0, 1], "encoder": "tiny", "test_cap": 30}
    for bad in ("novalue", "=3", "seeds=[0,1"):
        with pytest.raises(ConfigError, match=re.escape(bad.partition("=")[0] or bad)):
            parse_parameters([bad])


def test_tasks_command_says_where_each_task_comes_from(data_dir):
    result = CliRunner().invoke(app, ["tasks", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"data folder: {data_dir}"
    where = {lines[i].split()[0]: lines[i + 1].strip() for i in range(1, len(lines), 2)}
    assert set(where) == {"mr", "cr", "subj", "mpqa", "trec", "sst2", "sst5"}
    assert {name for name, text in where.items() if text.startswith("local:")} == {"mr", "cr", "subj", "trec", "sst2"}
    assert where["mpqa"].startswith("hub: SetFit/mpqa") and "mpqa.all not found" in where["mpqa"]
    assert where["sst5"].startswith("hub: SetFit/sst5")


def test_report_command_with_unknown_profile_exits_1_naming_the_profiles(tmp_path):
    result = CliRunner().invoke(app, ["report", "--profile", "nosuch", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "unknown profile 'nosuch'" in result.output and "smoke, quick, matrix, full" in result.output
    assert not (tmp_path / "x").exists()


def test_report_command_with_a_malformed_parameter_exits_1(tmp_path):
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "x"), "-p", "novalue"])
    assert result.exit_code == 1 and "'novalue' is not key=value" in result.output



@pytest.mark.parametrize("arguments, message", [
    (["-p", "seeds=[]"], "parameter seeds: List should have at least 1 item after validation, not 0, got []"),
    (["-p", "seeds=abc"], "parameter seeds: Input should be a valid list, got 'abc'"),
    (["-p", "seeds=[-1]"], "parameter seeds.0: Input should be greater than or equal to 0, got -1"),
    (["-p", "max_length=0"], "parameter max_length: Input should be greater than or equal to 8, got 0"),
    (["-p", "max_length=4096"], "parameter max_length: encoder 'tiny' reads at most 128 tokens, got 4096"),
    (["-p", "fusion_size=0"], "parameter fusion_size: Input should be greater than 0, got 0"),
    (["-p", "validation_cap=ten"], "parameter validation_cap: Input should be a valid integer, got 'ten'"),
    (["-p", "workdir=elsewhere"], "unknown study parameter 'workdir'"),
    (["-p", "train_knobs={epochs: 1.5}"], "arm 'finetune' (finetune): knob 'epochs' must be int, got 1.5"),
    (["--sources", ""], "parameter sources is empty, but the fusion arms"),
    (["--sources", "mr,sbuj"], "unknown task 'sbuj'"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None)
def test_bad_parameters_fail_in_one_line_before_any_work(tmp_path, no_env, arguments, message):
    result = CliRunner().invoke(app, ["report", "--profile", "smoke", "--out", str(tmp_path / "x"),
                                      "--workdir", str(tmp_path / "w"), *arguments])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output  # one line
    assert message in result.output, result.output
    assert not (tmp_path / "w").exists()


def test_an_out_that_is_a_file_or_an_unwritable_work_folder_fails_at_once(tmp_path, no_env):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["report", "--profile", "smoke", "--out", str(tmp_path / "file")])
    assert result.exit_code == 1 and f"--out '{tmp_path / 'file'}' is a file" in result.output
    result = CliRunner().invoke(app, ["report", "--profile", "smoke", "--out", str(tmp_path / "x"),
                                      "--workdir", str(tmp_path / "file" / "w")])
    assert result.exit_code == 1 and f"work folder '{tmp_path / 'file' / 'w'}' cannot be created or written" in \
        result.output
