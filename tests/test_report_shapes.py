"""Whole smoke reports over the study shapes users try, and two reports sharing one work folder.

A figure or statistic a study's shape cannot support is skipped with a sentence saying why; the report is
complete whatever the shape. These run the real command (the tiny encoder on the real data, smoke profile).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

FUSIONKIT = str(Path(sys.executable).parent / "fusionkit")
ONE_SIZE = ('baseline_arms=[{system: linear_probe, strategy: linear_probe, train_sizes: [60]}, '
            '{system: finetune, strategy: finetune, train_sizes: [60]}]')


def report_command(out: Path, workdir: Path, target: str, sources: str, *parameters: str) -> list[str]:
    command = [FUSIONKIT, "report", "--profile", "smoke", "--target", target, "--sources", sources,
               "--out", str(out), "--workdir", str(workdir)]
    for parameter in parameters:
        command += ["-p", parameter]
    return command


def environment(data_dir: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FUSIONKIT_")}, "FUSIONKIT_DATA": str(data_dir)}


def assert_complete(out: Path) -> None:
    """index.html, the five executed notebooks with no error output, verdicts, and every listed figure."""
    page = (out / "index.html").read_text(encoding="utf-8")
    notebooks = sorted((out / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 5
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            assert not [o for o in cell.get("outputs", []) if o.get("output_type") == "error"], path.name
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["sections"] and verdicts["notes"]
    captions = json.loads((out / "figures" / "figures.json").read_text())
    assert len(captions) >= 6 and all((out / "figures" / f"{name}.png").is_file() for name in captions)
    # every fusion system is judged against its matched control, which ran for the same seeds
    results, table = pd.read_csv(out / "results.csv"), pd.read_csv(out / "verdict_table.csv")
    fusion = set(results.loc[results["role"] == "fusion", "system"])
    assert "verdicts.json" in page and all(system in page for system in fusion)  # the table; sentences in the json
    assert set(table["system"]) == fusion and table["control"].notna().all()
    seeds = results.groupby("system")["seed"].apply(frozenset)
    assert all(seeds[row.system] == seeds[row.control] for row in table.itertuples())


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["6-class target, one source, one seed", "user CSV target, two sources, one size"])
def test_every_study_shape_gets_a_complete_report(shape, tmp_path, data_dir, toy_csv):
    if shape.startswith("6-class"):
        command = report_command(tmp_path / "out", tmp_path / "work", "trec", "mr", "seeds=[0]")
    else:
        target = toy_csv(tmp_path / "mine.csv", 120, seed=3)
        command = report_command(tmp_path / "out", tmp_path / "work", str(target), "mr,subj", ONE_SIZE,
                                 "fusion_size=60")
    result = subprocess.run(command, env=environment(data_dir), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_complete(tmp_path / "out")
    notes = " ".join(json.loads((tmp_path / "out" / "verdicts.json").read_text())["notes"])
    assert "a rank correlation needs at least 3" in notes  # one or two sources: said, not failed


@pytest.mark.slow
def test_two_reports_on_one_work_folder_train_each_run_once(tmp_path, data_dir):
    commands = [report_command(tmp_path / name, tmp_path / "work", "cr", "mr", "seeds=[0]") for name in "ab"]
    processes = [subprocess.Popen(command, env=environment(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for command in commands]
    outputs = [process.communicate(timeout=900)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    for name in "ab":
        assert_complete(tmp_path / name)
    records = [json.loads((tmp_path / name / "provenance.json").read_text()) for name in "ab"]
    def runs(name: str) -> set:  # every run a report stands on: the results and the configurations tried
        return {run_id for table in ("results.csv", "tuning.csv")
                for run_id in pd.read_csv(tmp_path / name / table)["run_id"]}

    assert runs("a") == runs("b")
    runs = runs("a")
    assert sum(record["runs_trained"] for record in records) == len(runs)
    assert all(record["runs_trained"] + record["runs_found_stored"] == len(runs) for record in records)
    # both say when the study they share was trained, whichever of them trained it
    assert records[0]["runs_created_between"] == records[1]["runs_created_between"]
