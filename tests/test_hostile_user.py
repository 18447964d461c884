"""What a hostile user tried after the last wave (issue 27), case by case: nothing deleted that fusionkit did not
write, the template and the README's promises kept, errors before the work they prevent, no input that costs
gigabytes, files that follow the umask, and a terminal that says what happened while the notebooks ran."""
import json
import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from fusionkit.cli import app
from fusionkit.errors import ConfigError, DataError, InputError
from fusionkit.strategies import get_strategy
from fusionkit.study.executors import run_study
from fusionkit.study.runner import Arm, StudyConfig
from test_knowledge import featured_csv, save_adapter, save_model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from fusionkit import load_task_from_files
    from conftest import write_toy_csv

    folder = tmp_path_factory.mktemp("toy")
    task = load_task_from_files(write_toy_csv(folder / "toy.csv", 120, seed=0), name="toy")
    strategy = get_strategy("finetune", {"epochs": 1, "batch_size": 16}, encoder="tiny", workdir=folder / "w",
                            max_length=16)
    return strategy.fit(task, train_size=40)


# ---------------------------------------------------------------- 1. export never deletes what it did not write

def test_export_refuses_a_folder_of_other_files_and_keeps_them(fitted, tmp_path):
    existing = tmp_path / "existing"
    (existing / "sub").mkdir(parents=True)
    (existing / "important.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files fusionkit did not export.*--overwrite"):
        fitted.export(existing)
    assert (existing / "important.txt").read_text() == "mine" and (existing / "sub").is_dir()
    fitted.export(existing, overwrite=True)  # asked for: replaced whole
    assert not (existing / "important.txt").exists() and (existing / "fusionkit_export.json").is_file()
    fitted.export(existing)  # a previous export is replaced without asking
    assert (existing / "fusionkit_export.json").is_file()


def test_export_refuses_the_current_folder_its_parents_and_a_file(fitted, tmp_path, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    (here / "report.html").write_text("keep")
    monkeypatch.chdir(here)
    for target in (".", "..", str(here)):
        with pytest.raises(ConfigError, match="current folder or holds it"):
            fitted.export(target)
    (here / "afile.txt").write_text("x")
    with pytest.raises(ConfigError, match="'afile.txt': it is a file"):
        fitted.export("afile.txt")
    assert sorted(p.name for p in here.iterdir()) == ["afile.txt", "report.html"]


def test_the_export_command_checks_its_folder_before_any_refit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    result = CliRunner().invoke(app, ["export", "abc123", "--to", ".", "--report", "no-such-report"])
    assert result.exit_code == 1 and "cannot export to '.'" in result.output, result.output
    assert (tmp_path / "notes.txt").read_text() == "keep"


# ---------------------------------------------------------------- 2. the study template runs as printed

def template_files(folder):
    """The files `fusionkit study-template` names, made in ``folder``: the target file with its knowledge columns,
    and a fine-tuned model of the smoke profile's encoder architecture."""
    import pandas as pd

    frame = pd.read_csv(featured_csv(folder / "features.csv", n=300))
    frame["lexicon_pos"], frame["lexicon_neg"] = frame["signal"], frame["noise"]
    frame.drop(columns=["vec", "signal", "noise"]).to_csv(folder / "my_reviews.csv", index=False)
    save_model(folder / "models" / "mr-finetuned", hidden=32)


def test_the_template_names_no_option_its_executor_does_not_take():
    from fusionkit.study.study_file import TEMPLATE, ExecutorSettings

    assert "gpu_fraction" not in ExecutorSettings.model_validate({"kind": "local"}).model_dump(exclude_none=True)
    with pytest.raises(ValueError, match="local executor takes no options.*gpu_fraction"):
        ExecutorSettings.model_validate({"kind": "local", "gpu_fraction": 0.5})
    assert "executor: {kind: local}" in TEMPLATE.read_text()


@pytest.mark.slow
def test_the_study_template_runs_exactly_as_printed(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONKIT_DATA", str(data_dir))
    template_files(tmp_path)
    printed = CliRunner().invoke(app, ["study-template"])
    (tmp_path / "my_study.yaml").write_text(printed.output)
    result = CliRunner().invoke(app, ["report", "--study", "my_study.yaml", "--out", "reports/mine",
                                      "--profile", "smoke"])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "reports" / "mine" / "index.html").read_text()
    assert "mr-model" in index and "lexicon" in index
    # what happened is on the page: the template's fusion size is cut to the smoke profile's cap, with a warning
    assert "What happened during this run" in index and "larger than task_train_cap" in index


# ---------------------------------------------------------------- 3. a task beside a LoRA adapter merges

def test_a_task_expert_and_a_lora_adapter_merge_together(toy_csv, tmp_path):
    from fusionkit import load_encoder
    from fusionkit.strategies import task_vectors

    source = str(toy_csv(tmp_path / "src.csv", 100, seed=3))
    config = StudyConfig(str(toy_csv(tmp_path / "toy.csv", 120, seed=0)),
                         [source, {"adapter": save_adapter(tmp_path / "lora"), "name": "mylora"}],
                         [Arm("merge ties", "merge", {"method": "ties", "scale": 1.0}),
                          Arm("merge task_arithmetic", "merge", {"scale": 0.5})],
                         seeds=[0], train_sizes=[60], encoder="tiny", max_length=16, workdir=str(tmp_path / "w"),
                         cka_examples=8, expert_knobs={"expert_train_size": 40, "expert_epochs": 1})
    results = run_study(config, progress=False)
    assert {"merge ties", "merge task_arithmetic"} <= set(results["system"])
    # the adapter moves only the modules it adapts: zero elsewhere, and its own delta where it has one
    base = load_encoder("tiny").model.state_dict()
    partial = {"encoder.layer.0.attention.self.query.weight": torch.ones(32, 32)}
    full = task_vectors.complete([partial], base)[0]
    assert torch.equal(full["encoder.layer.0.attention.self.query.weight"], torch.ones(32, 32))
    assert float(full["embeddings.word_embeddings.weight"].abs().sum()) == 0
    assert set(full) == {key for key, value in base.items() if value.is_floating_point()}
    with pytest.raises(InputError, match="has key 'nope' that pretrained lacks"):
        task_vectors.complete([{"nope": torch.ones(1)}], base)


# ---------------------------------------------------------------- 5. sources checked before notebook 01

def smoke_run(tmp_path, toy_csv, sources, target=None):
    from fusionkit.report import notebook_run

    target = target or str(toy_csv(tmp_path / "toy.csv", 120, seed=0))
    return notebook_run("smoke", target, sources, str(tmp_path / "w"), str(tmp_path / "out"))


def test_a_model_folder_of_pickles_is_refused_before_any_work(toy_csv, tmp_path):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "pickled"  # config.json and a pickle, as older checkpoints ship
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="only pytorch_model.bin, weights stored as Python pickles"):
        smoke_run(tmp_path, toy_csv, [{"model": str(folder)}])
    assert not (tmp_path / "w" / "results").exists()


def test_an_adapter_without_safetensors_and_missing_paths_are_refused_before_any_work(toy_csv, tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="only adapter_model.bin.*needs adapter_model.safetensors"):
        smoke_run(tmp_path, toy_csv, [{"adapter": str(adapter)}])
    with pytest.raises(ConfigError, match="model source './no/such/folder': no such folder .*not a Hub id"):
        smoke_run(tmp_path, toy_csv, [{"model": "./no/such/folder"}])
    with pytest.raises(ConfigError, match="as a Hub id it is not in the local Hub cache while offline"):
        smoke_run(tmp_path, toy_csv, [{"model": "models/mr-finetuned"}])
    with pytest.raises(ConfigError, match="task 'missing': file 'missing.csv' not found"):
        smoke_run(tmp_path, toy_csv, ["mr"], target="missing.csv")


def test_a_model_of_another_architecture_is_refused_where_an_arm_needs_the_encoders(toy_csv, tmp_path):
    wide = save_model(tmp_path / "wide", hidden=48)
    with pytest.raises(ConfigError, match="'wide'.*another architecture.*hidden_size 48 \\(the encoder's 32\\).*"
                                          "sequential"):
        smoke_run(tmp_path, toy_csv, [{"model": wide}])
    from fusionkit.report import notebook_run

    only_representation = {"fusion_arms": [{"system": "r", "strategy": "representation"}]}
    run = notebook_run("smoke", str(tmp_path / "toy.csv"), [{"model": wide}], str(tmp_path / "w"),
                       str(tmp_path / "out"), overrides=only_representation)
    assert run.source_names == ["wide"]  # representation fusion takes any architecture


# ---------------------------------------------------------------- 6. seeds that numpy takes

def test_seeds_beyond_what_numpy_takes_are_refused():
    from fusionkit.study.profiles import profile_parameters

    with pytest.raises(ConfigError, match="parameter seeds.0: .*less than or equal to 4294967295"):
        profile_parameters("smoke", {"seeds": [99999999999999999999999]})
    assert profile_parameters("smoke", {"seeds": [2**32 - 1]})["seeds"] == [2**32 - 1]


# ---------------------------------------------------------------- 7. deduplication that would empty a split

def test_a_validation_file_whose_texts_all_reappear_in_test_is_a_data_error(tmp_path):
    from fusionkit import load_task_from_files

    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"train text {i},{i % 2}\n" for i in range(20)))
    (tmp_path / "val.csv").write_text("text,label\nsame one,0\nsame two,1\n")
    (tmp_path / "test.csv").write_text("text,label\nSame  one,0\nsame two,1\nother,0\n")
    with pytest.raises(DataError, match="every one of the 2 validation rows \\(file 'val.csv'\\) repeats a text of "
                                        "the test split"):
        load_task_from_files(tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "test.csv")


def test_a_source_emptied_by_the_targets_evaluation_texts_is_a_data_error(tmp_path):
    from fusionkit import load_task_from_files
    from fusionkit.data.overlap import EvaluationIndex

    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(20)))
    source = load_task_from_files(tmp_path / "train.csv", name="src")
    with pytest.raises(DataError, match="task 'src'.*leaves examples of one class only"):
        source.without_matches(EvaluationIndex(f"text {i}" for i in range(0, 20, 2)), "in the target's test split")


# ---------------------------------------------------------------- 8. study files that cost memory

def test_yaml_aliases_and_repeated_keys_are_refused_and_errors_stay_short(tmp_path):
    from fusionkit.study.study_file import load_study_file

    bomb = "a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}]\n" for i in range(1, 7)) + "extends: smoke\ntarget: cr\nseeds: *a6\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="alias \\*a0 is not allowed") as error:
        load_study_file(tmp_path / "bomb.yaml")
    assert len(str(error.value)) < 1000
    (tmp_path / "twice.yaml").write_text("extends: smoke\ntarget: cr\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(ConfigError, match="key 'seeds' is given twice in one mapping \\(first line 3\\)"):
        load_study_file(tmp_path / "twice.yaml")
    (tmp_path / "long.yaml").write_text("extends: smoke\ntarget: cr\nseeds: [" + ", ".join(["-1"] * 20000) + "]\n")
    with pytest.raises(ConfigError) as error:
        load_study_file(tmp_path / "long.yaml")
    assert len(str(error.value)) < 1000 and "; and 19995 more" in str(error.value)
    (tmp_path / "huge.yaml").write_text("extends: smoke\ntarget: cr\nmax_length: '" + "x" * 100000 + "'\n")
    with pytest.raises(ConfigError) as error:
        load_study_file(tmp_path / "huge.yaml")
    assert len(str(error.value)) < 1000 and "... (100002 characters)" in str(error.value)


def test_a_features_source_named_by_its_column_follows_the_name_rules():
    from fusionkit.study.sources import source_name

    with pytest.raises(ConfigError, match="the name of knowledge features.*'a/b' is not allowed"):
        source_name({"features": "a/b"})
    assert source_name({"features": "a/b", "name": "ab"}) == "ab"


# ---------------------------------------------------------------- 9. files follow the umask

def test_saved_and_exported_weights_follow_the_umask(fitted, tmp_path):
    previous = os.umask(0o022)
    try:
        saved, exported = fitted.save(tmp_path / "saved"), fitted.export(tmp_path / "exported")
    finally:
        os.umask(previous)
    for path in [saved / "model.safetensors", exported / "model.safetensors", exported / "classifier.safetensors",
                 exported / "config.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(saved.stat().st_mode) == 0o755


# ---------------------------------------------------------------- 10, 11. what the terminal and the page say

WARNS = ("import warnings\nfrom fusionkit.errors import FusionkitWarning\nfrom fusionkit.report import setup_notebook\n"
         "from fusionkit.study.progress import Progress\n"
         "run = setup_notebook(profile, target, sources, workdir, out_dir, data_dir, overrides)\n"
         "warnings.warn(\"'runs/x.json' is damaged (truncated): moved to 'runs/damaged/x.json.1' and rebuilt\", "
         "FusionkitWarning)\n"
         "counter = Progress('cr', 'tuning on validation', 1, 2)\n"
         "counter.step('experts'); counter.step('runs'); counter.step('runs')\n")


def test_warnings_and_progress_from_the_notebooks_reach_the_terminal_and_the_page(tmp_path, capsys):
    from fusionkit.report import run_report
    from test_report import write_notebook

    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_damage.ipynb", WARNS)
    write_notebook(folder / "02_again.ipynb", WARNS)  # the same warning again: said once
    index = run_report(tmp_path / "out", profile="smoke", target="cr", sources="mr", workdir=str(tmp_path / "w"),
                       notebooks_folder=folder)
    printed = capsys.readouterr().out
    assert printed.count("warning (01_damage): 'runs/x.json' is damaged (truncated)") == 1
    assert "02_again): 'runs/x.json'" not in printed
    assert "study cr, tuning on validation: experts and teachers 1/1, runs 2/2" in printed and "done" in printed
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert [w["notebook"] for w in record["warnings"]] == ["01_damage"]
    page = index.read_text()
    assert "What happened during this run" in page and "is damaged (truncated)" in page
    assert not list((tmp_path / "out").glob(".events-*"))


def test_random_bytes_in_an_npz_are_not_called_a_pickle(tmp_path):
    from fusionkit._io import read_arrays

    (tmp_path / "r.npz").write_bytes(bytes(range(7, 107)))
    with pytest.raises(DataError, match="neither a .npy nor a .npz file: it starts with bytes 07 08 09") as error:
        read_arrays(tmp_path / "r.npz", ("a",))
    assert "pickle" not in str(error.value)


def test_progress_lines_count_runs_and_time_left(tmp_path, monkeypatch):
    from fusionkit.study import progress

    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.EVENTS_VARIABLE, str(events))
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    counter = progress.Progress("cr", "final runs", 0, 4)
    for _ in range(2):
        counter.step("runs")
    lines = [json.loads(line)["text"] for line in events.read_text().splitlines()]
    assert lines[0].startswith("study cr, final runs: runs 0/4, 0s elapsed, time left known after the first")
    assert lines[-1].startswith("study cr, final runs: runs 2/4,") and "left" in lines[-1]
    assert progress.duration(3725) == "1h02m" and progress.duration(185) == "3m05s"
    monkeypatch.delenv(progress.EVENTS_VARIABLE)
    progress.emit("progress", "nowhere")  # without the variable nothing is written
    assert len(events.read_text().splitlines()) == len(lines)


# ---------------------------------------------------------------- 12. Ray ends quietly

@pytest.mark.slow
def test_a_study_on_ray_shuts_down_the_ray_it_started_and_prints_no_stack_dump(data_dir, tmp_path):
    import subprocess
    import sys

    script = ("import sys, ray\nfrom fusionkit.study import RayExecutor, run_study, study_config\n"
              "arms = [{'system': 'merge', 'strategy': 'merge', 'knobs': {'method': 'task_arithmetic'}, 'controls': []}]\n"
              "config = study_config('smoke', 'fusion', 'cr', ['mr'], sys.argv[1], sys.argv[2], overrides={"
              "'seeds': [0], 'tuning_budget': 1, 'fusion_arms': arms, 'task_train_cap': 80, 'test_cap': 40})\n"
              "run_study(config, progress=False, executor=RayExecutor(workers=1))\n"
              "print('ray still up:', ray.is_initialized())\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(data_dir)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "ray still up: False" in done.stdout
    assert "SIGTERM" not in done.stderr and "logging.cc" not in done.stderr, done.stderr[-2000:]
