"""A study in one file: the schema, its errors, the built-in profiles as study files, and the command line."""
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusionkit.cli import app
from fusionkit.errors import ConfigError
from fusionkit.study.profiles import PROFILE_FOLDER, PROFILES
from fusionkit.study.study_file import TEMPLATE, load_study_file

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_the_template_is_a_valid_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the files it names are (checked before any work)
    (tmp_path / "my_reviews.csv").write_text("sentence,y\ngood,pos\n")
    study = load_study_file(TEMPLATE)
    assert study["profile"] == "quick" and study["overrides"] == {"seeds": [0, 1, 2], "fusion_size": 128}
    assert study["target"] == {"path": "my_reviews.csv", "text_column": "sentence", "label_column": "y"}
    assert study["sources"][0] == "mr" and study["sources"][2] == {"features": ["lexicon_pos", "lexicon_neg"],
                                                                     "name": "lexicon"}
    assert study["executor"] == {"kind": "local"}  # no Ray option the local executor would refuse
    printed = CliRunner().invoke(app, ["study-template"])
    assert printed.exit_code == 0 and printed.output == TEMPLATE.read_text()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_builtin_profile_is_a_study_file_a_user_can_copy(name):
    study = load_study_file(PROFILE_FOLDER / f"{name}.yaml")
    assert study["profile"] == "" and study["overrides"] == PROFILES[name]  # complete without extends


@pytest.mark.parametrize("text, message", [
    ("extends: quick\ntraget: cr\n", "unknown field\\(s\\) \\['traget'\\].*target, targets, sources"),
    ("extends: quik\n", "field extends: unknown profile 'quik'; built-in profiles: smoke, quick, matrix, full"),
    ("extends: quick\nseeds: [-1]\n", "parameter seeds.0: Input should be greater than or equal to 0, got -1"),
    ("extends: quick\ntarget: cr\ntargets: [cr, mr, subj]\n", "either target .* or targets"),
    ("extends: quick\ntargets: [cr, mr]\n", "field targets: List should have at least 3 items"),
    ("extends: quick\ntarget: cr\nsources: [{model: }]\n", "source \\{'model': None\\} is not allowed"),
    ("extends: quick\ntarget: nosuch\n", "unknown task 'nosuch'; known tasks"),
    ("extends: quick\ntarget: cr\nsources: [cr]\n", "the target 'cr' is also among the sources"),
    ("extends: quick\nexecutor: {kind: slurm}\n", "field executor.kind: Input should be 'local' or 'ray'"),
    ("seeds: [0]\n", "parameter encoder: Field required"),  # without extends, every parameter is needed
    ("extends: quick\nseeds: [0, 1\n", "is not valid YAML"),
    ("- cr\n- mr\n", "must be a mapping of fields"),
])
def test_an_invalid_study_file_is_one_error_naming_the_file_field_and_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_study_file(path)
    assert str(path) in str(error.value)


def test_numbers_are_read_as_people_write_them(tmp_path):
    study = load_study_file(write(tmp_path, "extends: smoke\ntrain_knobs: {lr: 1e-3}\n"))
    assert study["overrides"]["train_knobs"]["lr"] == 0.001


@pytest.fixture
def captured(monkeypatch):
    """The arguments the report command hands to run_report (nothing runs)."""
    calls = []
    monkeypatch.setattr("fusionkit.report.run_report", lambda *args, **kwargs: calls.append((args, kwargs)))
    return calls


def test_command_line_options_override_the_study_file(tmp_path, captured):
    path = write(tmp_path, "extends: quick\ntarget: cr\nsources: [mr]\nseeds: [0, 1, 2]\n"
                           "executor: {kind: ray, workers: 2}\n")
    result = CliRunner().invoke(app, ["report", "--study", str(path), "--out", str(tmp_path / "out"),
                                      "--profile", "smoke", "-p", "seeds=[5]"])
    assert result.exit_code == 0, result.output
    (out, profile, target, sources, overrides, *_), options = captured[0]
    assert (profile, target, sources, overrides) == ("smoke", "cr", ["mr"], {"seeds": [5]})
    assert options["executor"] == {"kind": "ray", "workers": 2}  # gpu_fraction: RayExecutor's default


def test_a_target_file_takes_its_column_names_on_the_command_line(tmp_path, captured):
    result = CliRunner().invoke(app, ["report", "--target", "data/my.csv", "--text-column", "sentence",
                                      "--label-column", "y", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (out, profile, target, sources, *_), _ = captured[0]
    assert target == {"path": "data/my.csv", "text_column": "sentence", "label_column": "y"}
    assert profile == "quick" and sources is None  # run_report's defaults: the sources mr, subj, trec
    result = CliRunner().invoke(app, ["report", "--text-column", "sentence", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "name the columns of a --target file" in result.output


def test_a_file_target_with_its_columns_loads_in_a_study(tmp_path, toy_csv):
    from fusionkit.study.runner import StudyConfig, load_study_tasks

    lines = toy_csv(tmp_path / "reviews.csv", 120, seed=0).read_text().replace("text,label", "sentence,y")
    (tmp_path / "reviews.csv").write_text(lines)
    target = {"path": str(tmp_path / "reviews.csv"), "text_column": "sentence", "label_column": "y"}
    config = StudyConfig(target, [], [])
    assert config.target == "reviews" and config.task_files["reviews"]["text_column"] == "sentence"
    task, _ = load_study_tasks(config)
    assert task.name == "reviews" and sum(len(split) for split in task.splits.values()) == 120


# ---------------------------------------------------------------- the README's walk-through, as written

def readme_walkthrough() -> tuple[list[str], str, str]:
    """The python blocks, the study file and the report command of the README's walk-through, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your own data, your own knowledge")[1].split("\n## ")[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    python = [code for language, code in blocks if language == "python"]
    [study] = [code for language, code in blocks if language == "yaml"]
    [command] = [code for language, code in blocks if language == "bash"]
    return python, study, command


def test_the_readme_study_file_is_the_template():
    _, study, _ = readme_walkthrough()
    assert study == TEMPLATE.read_text()


def test_the_readme_walkthrough_runs_as_written_on_the_smoke_settings(tmp_path, monkeypatch, data_dir):
    """The README's steps in a fresh folder: make the data, fine-tune and export a model, write the study file,
    run the report. Only the sizes change: the smoke profile, and its tiny encoder for the exported model too (the
    study's sequential and merge need the model to have the study encoder's architecture)."""
    import json

    from fusionkit.report import run_report

    python, study, command = readme_walkthrough()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONKIT_DATA", str(data_dir))
    namespace = {}  # one session: a later block uses what an earlier one imported
    for code in python:
        exec(compile(code.replace('encoder="minilm"', 'encoder="tiny"'), "README.md", "exec"), namespace)
    assert (tmp_path / "models" / "mr-finetuned" / "classifier.safetensors").is_file()
    (tmp_path / "my_study.yaml").write_text(study)
    assert command.split()[:4] == ["fusionkit", "report", "--study", "my_study.yaml"]
    given = load_study_file("my_study.yaml")
    overrides = {**given["overrides"], "seeds": PROFILES["smoke"]["seeds"],
                 "fusion_size": PROFILES["smoke"]["fusion_size"]}
    run_report("reports/mine", "smoke", given["target"], given["sources"], overrides, progress=False)
    verdicts = json.loads((tmp_path / "reports" / "mine" / "verdicts.json").read_text())
    text = json.dumps(verdicts)
    for system in ("sequential (mr-model)", "representation sum", "merge task_arithmetic"):
        assert system in text
    sources = json.loads((tmp_path / "reports" / "mine" / "provenance.json").read_text())["parameters"]["sources"]
    assert sources == given["sources"]
    transferability = (tmp_path / "reports" / "mine" / "transferability.csv").read_text()
    assert "lexicon" in transferability and "mr-model" in transferability
