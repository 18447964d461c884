"""The transfer matrix: one study per task of a pool, sharing experts, judged by the single-target protocol."""
import json
from pathlib import Path

import pandas as pd
import pytest

from fusionkit.data.tasks import normalised
from fusionkit.errors import ConfigError
from fusionkit.report import matrix, matrix_run
from fusionkit.study import MATRIX_SYSTEMS, load_study_tasks, matrix_configs, run_studies

POOL = ["cr", "mr", "subj"]
# The smallest matrix that still has every system and a seed-level test: tiny encoder, two seeds, no tuning.
FAST = {"seeds": [0, 1], "tuning_budget": 1}


def test_every_task_is_a_target_with_the_others_as_sources_and_the_matrix_systems(data_dir, tmp_path):
    configs = matrix_configs("smoke", POOL, str(tmp_path), str(data_dir))
    assert [c.target for c in configs] == POOL
    assert [c.sources for c in configs] == [["mr", "subj"], ["cr", "subj"], ["cr", "mr"]]
    for config in configs:
        assert {arm.system for arm in config.arms} == set(MATRIX_SYSTEMS)
        assert all(arm.train_sizes == [60] for arm in config.arms)  # the smoke profile's fusion size
        assert config.workdir == str(tmp_path) and config.held_out_tasks == POOL


def test_a_source_has_the_same_data_for_every_target_and_none_of_any_targets_evaluation_texts(data_dir, tmp_path):
    """So each expert is trained once and serves every target, and no knowledge comes from a judged sentence."""
    fingerprints, evaluation = {}, {}
    for config in matrix_configs("smoke", POOL, str(tmp_path), str(data_dir)):
        target, sources = load_study_tasks(config)
        evaluation[target.name] = {normalised(t) for split in (target.validation, target.test) for t in split["text"]}
        for source in sources:
            fingerprints.setdefault(source.name, set()).add(source.fingerprint())
            evaluation.setdefault(f"{source.name} as source ({target.name})", source)
    assert all(len(found) == 1 for found in fingerprints.values()), fingerprints
    for key, source in [(k, v) for k, v in evaluation.items() if "as source" in k]:
        texts = {normalised(t) for t in source.train["text"]}
        for other in POOL:
            if other != source.name:
                assert not texts & evaluation[other], (key, other)


def test_a_pool_of_fewer_than_three_tasks_or_without_a_matrix_system_is_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="at least 3 distinct tasks"):
        matrix_configs("smoke", ["cr", "mr"], str(tmp_path))
    with pytest.raises(ConfigError, match="at least 3 distinct tasks"):
        matrix_configs("smoke", ["cr", "mr", "cr"], str(tmp_path))
    no_merge = {"fusion_arms": [{"system": "sequential", "strategy": "sequential", "per_source": True},
                                {"system": "representation pooled-attention", "strategy": "representation"}]}
    with pytest.raises(ConfigError, match=r"no arm for the matrix system\(s\) \['merge task_arithmetic'\]"):
        matrix_configs("smoke", POOL, str(tmp_path), overrides=no_merge)


def test_the_pool_defaults_to_every_task_whose_files_are_present(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DATA", str(data_dir))
    run = matrix_run("smoke", None, str(tmp_path / "w"), str(tmp_path / "o"))
    assert run.targets == ["mr", "cr", "subj", "trec", "sst2"]  # mpqa and sst5 have no files here


@pytest.fixture(scope="module")
def tiny_matrix(data_dir, tmp_path_factory):
    """The smoke matrix over three real tasks, run once; then a second time, which must train nothing."""
    folder = tmp_path_factory.mktemp("matrix")
    run = matrix_run("smoke", POOL, str(folder / "work"), str(folder / "out"), str(data_dir), FAST)
    results = matrix.matrix_results(run)
    again = run.run_studies(progress=False)
    return run, results, again


def test_the_matrix_trains_each_expert_once_and_a_rerun_trains_nothing(tiny_matrix):
    run, results, again = tiny_matrix
    assert again.attrs["runs_trained"] == 0 and len(again) == len(results)
    assert sorted(results["target"].unique()) == sorted(POOL)
    experts = [json.loads(spec.read_text()) for spec in (run.workdir / "experts").glob("*/config.json")]
    identities = [(spec["target"], spec["seed"]) for spec in experts]
    assert len(identities) == len(set(identities))  # one folder per expert, whatever the targets it served
    assert {i for i in identities if "shuffled" not in i[0]} == {(t, s) for t in POOL for s in FAST["seeds"]}


def test_transfer_matrix_has_a_cell_per_ordered_pair_judged_against_its_matched_control(tiny_matrix):
    run, results, _ = tiny_matrix
    transfer = matrix.transfer_matrix(run, results)
    cells = transfer.cells
    assert len(cells) == len(POOL) * (len(POOL) - 1) and (cells["source"] != cells["target"]).all()
    assert set(cells["control"]) == {f"sequential ({s}): no source" for s in POOL}
    gains = transfer.pivot("gain")
    assert list(gains.index) == list(gains.columns) == sorted(POOL) and gains.isna().values.diagonal().all()
    assert set(cells["mark"]) <= {"", matrix.SEED_MARK, matrix.TEST_SET_MARK}
    # the cell is the mean over seeds of sequential minus its control, in points
    cell = cells.iloc[0]
    system = results[(results["target"] == cell["target"]) & (results["system"] == f"sequential ({cell['source']})")]
    control = results[(results["target"] == cell["target"]) & (results["system"] == cell["control"])]
    assert cell["gain"] == pytest.approx(100 * (system["accuracy"].mean() - control["accuracy"].mean()))
    assert (Path(run.out_dir) / "transfer_matrix.csv").is_file()


def test_across_targets_picks_the_sequential_source_on_validation_and_ranks_the_systems(tiny_matrix):
    run, results, _ = tiny_matrix
    grid = matrix.across_targets(run, results)
    assert list(grid.index) == sorted(POOL) and grid.shape[1] == 5
    for target, source in grid.attrs["sequential_source"].items():
        sequential = results[(results["target"] == target) & (results["strategy"] == "sequential")
                             & (results["role"] == "fusion")]
        assert source == sequential.groupby("sources")["val_accuracy"].mean().idxmax()
    ranking = matrix.ranking_across_targets(run, grid)
    assert ranking.n_datasets == len(POOL) and ranking.n_methods == 5
    assert "little power" in matrix.ranking_caveat(ranking)


def test_selection_and_findings_of_the_tiny_matrix(tiny_matrix):
    run, results, _ = tiny_matrix
    transfer = matrix.transfer_matrix(run, results)
    estimates = matrix.source_estimates(run)
    assert set(estimates["estimator"]) == {*matrix.ESTIMATORS, matrix.SOURCE_SIZE}
    assert len(estimates) == len(POOL) * (len(POOL) - 1) * 6
    selection = matrix.task_selection(run, estimates, transfer)
    assert "random" in set(selection["estimator"])
    families = matrix.families_against_controls(run, results)
    assert set(families["system"]) == {"representation pooled-attention", "merge task_arithmetic"}
    pairs, correlation = matrix.asymmetry(run, transfer)
    assert len(pairs) == 3 and correlation is not None
    card, after = matrix.overlap(run)
    assert set(after["source"]) == set(POOL) and (after["evaluation_texts_left"] == 0).all()
    assert {"shared_texts", "shared_letters", "shared_near"} <= set(card.columns)
    effects = matrix.source_effects(run, transfer)
    if effects is not None:  # (the tiny encoder may leave no spread to fit)
        assert set(effects["source"]) == set(POOL) and (effects["ci_low"] <= effects["effect"]).all()
    notes = matrix.write_matrix_findings(run, transfer, families, None, correlation, selection, (card, after), effects)
    assert matrix.source_effects_sentence(effects) in notes
    verdicts = json.loads((Path(run.out_dir) / "verdicts.json").read_text())
    assert verdicts["sections"][0]["sentences"] == notes and "Best source per target" in notes[0]  # first
    assert len(verdicts["sections"][1]["sentences"]) == len(transfer.cells)
    assert verdicts["notes"][0].startswith("Protocol")
    # the sentence on overlap is read from the tables: a planted leftover text is counted
    planted = after.assign(evaluation_texts_left=[3] + [0] * (len(after) - 1))
    assert "and 3 validation or test text(s)" in matrix.overlap_sentence(card, planted)
    assert "and 0 validation or test text(s)" in verdicts["notes"][0]
    attention = matrix.attention_by_source(results)
    assert set(attention["target"]) == set(POOL)
    assert all(set(group["source"]) == set(POOL) - {target} for target, group in attention.groupby("target"))


def test_the_single_target_report_and_the_matrix_report_run_their_own_notebooks():
    from fusionkit.report.build import MATRIX, _notebooks
    from fusionkit.report.notebook import notebooks_dir

    assert [path.stem for path in _notebooks(notebooks_dir(), MATRIX)] == ["06_matrix"]
    assert "06_matrix" not in [path.stem for path in _notebooks(notebooks_dir())]
    assert len(_notebooks(notebooks_dir())) == 5


@pytest.mark.slow
def test_no_source_of_the_shared_pool_holds_an_evaluation_text_of_any_pool_task(data_dir):
    """Under the letters-and-digits form, which SST-2's and MR's tokenisations of one Rotten Tomatoes sentence share,
    no validation or test text of any of the five shared tasks is left in any source's training data."""
    from fusionkit import load_task
    from fusionkit.data.overlap import letters_and_digits
    from fusionkit.data.tasks import Task
    from fusionkit.study.profiles import matrix_configs
    from fusionkit.study.runner import load_study_tasks

    pool = ["cr", "mr", "subj", "trec", "sst2"]
    held_out = {name: {letters_and_digits(text) for split in ("validation", "test")
                       for text in getattr(load_task(name, data_dir=data_dir), split)["text"][:]} - {""}
                for name in pool}
    config = matrix_configs("matrix", pool, "unused", str(data_dir))[0]  # every study holds out the whole pool
    _, sources = load_study_tasks(config)
    for source in (s for s in sources if isinstance(s, Task)):
        training = {letters_and_digits(text) for text in source.train["text"][:]}
        left = {other: len(training & texts) for other, texts in held_out.items() if other != source.name}
        assert set(left.values()) == {0}, (source.name, left)
