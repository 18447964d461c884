"""Source experts of a study and their transferability scores, on the tiny encoder and the real data folder."""
import numpy as np
import pytest

from fusionkit import load_encoder
from fusionkit.study import source_scores as sources
from fusionkit.study.profiles import study_config
from fusionkit.study.runner import load_study_tasks

SMALL = {"seeds": [0], "task_train_cap": 60, "validation_cap": 20, "test_cap": 20,
         "expert_knobs": {"expert_train_size": 30, "expert_epochs": 1, "expert_seed": 0}}


@pytest.fixture
def study(tmp_path, data_dir):
    return study_config("smoke", "fusion", "cr", ["mr", "trec"], str(tmp_path), str(data_dir), SMALL)


def test_transferability_table_scores_every_source_and_the_base(study):
    target, source_tasks = load_study_tasks(study)
    base = load_encoder(study.encoder, max_length=study.max_length)
    experts = sources.source_experts(study, source_tasks, base)
    table = sources.transferability_table(target, experts, base, n_examples=40,
                                          sources={task.name: task for task in source_tasks})
    assert table.loc[1:, "textemb"].between(-1, 1).all()
    assert table["source"].tolist() == ["none (base)", "mr", "trec"]
    assert np.isfinite(table[["logme", "hscore"]].to_numpy()).all()
    assert np.isfinite(table.loc[1:, ["leep", "nce"]].to_numpy()).all() and table.loc[0, ["leep", "nce"]].isna().all()
    assert table.attrs["n_examples"] == 40
    assert table.loc[0, "textemb"] != table.loc[0, "textemb"]  # the base has no text of its own: NaN
    experts_again = sources.source_experts(study, source_tasks, base)
    assert experts_again["mr"].train_seconds == experts["mr"].train_seconds  # loaded, not retrained
    summary = sources.expert_table(experts)
    assert summary["train_size"].tolist() == [30, 30] and summary["source_val_accuracy"].between(0, 1).all()


def test_study_transferability_is_kept_and_reused_until_its_inputs_change(study, monkeypatch):
    first = sources.study_transferability(study, 40)

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed a stored transferability table")

    monkeypatch.setattr(sources, "transferability_table", must_not_run)
    assert sources.study_transferability(study, 40).equals(first)
    study.expert_knobs = {**study.expert_knobs, "expert_epochs": 2}
    with pytest.raises(AssertionError, match="recomputed"):
        sources.study_transferability(study, 40)


def test_each_expert_is_judged_on_its_own_test_split_against_probes_of_the_base_encoder(study):
    quality = sources.expert_quality(study).set_index("source")
    _, source_tasks = load_study_tasks(study)
    mr = next(task for task in source_tasks if task.name == "mr")
    expert = sources.study_experts(study)["mr"]
    assert quality.loc["mr", "source_test_accuracy"] == pytest.approx(
        float((expert.predict(mr.test) == np.asarray(mr.test["label"][:])).mean()))
    columns = ["source_test_accuracy", "probe_same_examples_test_accuracy", "probe_whole_split_test_accuracy"]
    assert quality[columns].stack().between(0, 1).all()
    assert quality.loc["mr", "probe_whole_split_train_size"] == len(mr.train) == 60  # the study's cap
    assert quality["clears_probe"].tolist() == (quality["source_test_accuracy"]
                                                > quality["probe_same_examples_test_accuracy"]).tolist()
