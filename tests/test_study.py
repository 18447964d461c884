"""Study profiles and the study runner: settings, run plans, knobs, and a resumable end-to-end study."""
import pytest

from fusionkit.errors import ConfigError
from fusionkit.study.profiles import PROFILES, profile_parameters, study_config
from fusionkit.strategies import STRATEGIES
from fusionkit.study.executors import run_study
from fusionkit.study.design import StudyDesign
from fusionkit.study.runner import Arm, StudyConfig, arm_knobs


def planned_runs(config, target, sources):
    """The runs a study with a tuning budget of 1 trains, one per system, seed and size."""
    return [{**p.run, "system": p.system} for p in StudyDesign(config, target, sources).final_runs(None)]


def config(arms, **settings):
    return StudyConfig(target="toy", sources=["toysrc"], arms=arms, **settings)


# ---------------------------------------------------------------- profiles

def test_unknown_profile_lists_the_known_profiles():
    with pytest.raises(ConfigError, match="unknown profile 'nosuch'.*smoke, quick, matrix, full"):
        profile_parameters("nosuch")


def test_unknown_override_lists_the_known_parameters():
    with pytest.raises(ConfigError, match="unknown study parameter 'sedes'.*fusion_size.*seeds"):
        profile_parameters("smoke", {"sedes": [0]})


def test_overrides_replace_profile_values_and_leave_the_profile_intact():
    settings = profile_parameters("smoke", {"seeds": [7], "encoder": "minilm"})
    assert settings["seeds"] == [7] and settings["encoder"] == "minilm"
    assert settings["max_length"] == PROFILES["smoke"]["max_length"]
    assert PROFILES["smoke"]["seeds"] == [0, 1]


def test_baselines_part_has_the_profile_baseline_arms():
    study = study_config("smoke", "baselines", "cr", ["mr"], "w")
    expected = PROFILES["smoke"]["baseline_arms"]
    assert [(a.system, a.strategy, a.train_sizes) for a in study.arms] == [
        (a["system"], a["strategy"], a["train_sizes"]) for a in expected]
    assert study.seeds == PROFILES["smoke"]["seeds"] and study.encoder == "tiny"


def test_fusion_part_uses_fusion_size_and_the_profiles_arm_knobs():
    study = study_config("smoke", "fusion", "cr", ["mr", "subj"], "w", overrides={"fusion_size": 40})
    assert study.sources == ["mr", "subj"]
    assert all(arm.train_sizes == [40] for arm in study.arms)
    multitask = [arm for arm in study.arms if arm.system == "multitask"]
    assert len(multitask) == 1 and multitask[0].knobs == PROFILES["smoke"]["arm_knobs"]["multitask"]
    lora = study_config("smoke", "baselines", "cr", [], "w", overrides={"arm_knobs": {"lora": {"r": 4}}})
    assert [arm.knobs for arm in lora.arms if arm.system == "lora"] == [{"r": 4}]


def test_arm_knobs_for_a_system_the_profile_does_not_run_is_named():
    with pytest.raises(ConfigError, match=r"arm_knobs names system\(s\) \['lorra'\].*lora"):
        study_config("smoke", "baselines", "cr", [], "w", overrides={"arm_knobs": {"lorra": {"r": 4}}})


def test_bad_part_is_a_config_error():
    with pytest.raises(ConfigError, match="'baselines' or 'fusion'.*'evaluation'"):
        study_config("smoke", "evaluation", "cr", [], "w")


def test_unknown_strategy_in_an_arm_is_a_config_error():
    with pytest.raises(ConfigError, match="arm 'x': unknown strategy 'magic'.*finetune"):
        config([{"system": "x", "strategy": "magic"}])


# ---------------------------------------------------------------- planned runs and knobs

def test_planned_run_count_is_sizes_times_seeds_times_sources(toy_task, toy_source):
    other = toy_source.subsample(40)
    other.name = "other"
    arms = [Arm("probe", "linear_probe", train_sizes=[20, 40, None]),
            Arm("seq", "sequential", per_source=True, controls=[]),
            Arm("multi", "multitask", controls=[])]
    study = StudyConfig("toy", ["toysrc", "other"], arms, seeds=[0, 1], train_sizes=[30])
    runs = planned_runs(study, toy_task, [toy_source, other])
    # each fusion system also runs its matched control (finetune for both: one run per seed and configuration) and
    # its tuned control (at a tuning budget of 1, the matched control's run under a second name); the probe on the
    # whole split is the same for every seed: one run
    assert len(runs) == (2 * 2 + 1) + 1 * 2 * 2 + 1 * 2 + 3 * 2 + 3 * 2
    assert len({tuple(sorted(r["sources"])) + (r["system"], r["seed"], r["train_size"]) for r in runs}) == len(runs)
    assert {tuple(r["sources"]) for r in runs if r["system"] == "multi"} == {("toysrc", "other")}
    assert {r["strategy"] for r in runs if r["system"].endswith(": no source")} == {"finetune"}
    assert all(r["sources"] == [] for r in runs if r["strategy"] == "linear_probe")


def test_train_size_none_becomes_the_train_split_length(toy_task):
    runs = planned_runs(config([Arm("probe", "linear_probe", train_sizes=[None, 10_000])], seeds=[0]), toy_task, [])
    assert [r["train_size"] for r in runs] == [len(toy_task.train)]  # both sizes mean the whole split: one run


def test_per_source_labels_name_the_source(toy_task, toy_source):
    runs = planned_runs(config([Arm("sequential", "sequential", per_source=True)], seeds=[0]), toy_task, [toy_source])
    assert [r["system"] for r in runs] == ["sequential (toysrc)", "sequential (toysrc): no source",
                                           "sequential (toysrc): shuffled-label source",
                                           "sequential (toysrc): tuned control"]
    assert runs[0]["sources"] == ["toysrc"]


def test_shared_knobs_apply_only_where_the_strategy_has_them():
    study = config([], train_knobs={"epochs": 3, "batch_size": 8}, expert_knobs={"expert_epochs": 1})
    probe, finetune = arm_knobs(Arm("p", "linear_probe"), study), arm_knobs(Arm("f", "finetune"), study)
    sequential = arm_knobs(Arm("s", "sequential"), study)
    assert "epochs" not in probe and "expert_epochs" not in finetune
    assert (finetune["epochs"], finetune["batch_size"]) == (3, 8)
    assert (sequential["epochs"], sequential["batch_size"], sequential["expert_epochs"]) == (3, 8, 1)


def test_arm_knobs_spell_out_defaults_so_a_changed_default_changes_the_run_key():
    knobs = arm_knobs(Arm("l", "lora"), config([]))
    assert knobs["lr"] == STRATEGIES["lora"].Knobs().to_dict()["lr"] and "progress" not in knobs


def test_arm_knobs_win_over_shared_knobs():
    study = config([], train_knobs={"epochs": 3, "batch_size": 8})
    knobs = arm_knobs(Arm("s", "scratch", knobs={"epochs": 1}), study)
    assert (knobs["epochs"], knobs["batch_size"]) == (1, 8)


# ---------------------------------------------------------------- end to end (tiny encoder, real data)

SMALL = {"seeds": [0, 1], "task_train_cap": 60, "validation_cap": 20, "test_cap": 30, "cka_examples": 8,
         "train_knobs": {"epochs": 1, "batch_size": 16, "progress": False},
         "baseline_arms": [{"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [30, None],
                            "knobs": {"c": 1.0}},
                           {"system": "finetune", "strategy": "finetune", "train_sizes": [30]}]}


@pytest.fixture(scope="module")
def small_study(data_dir, tmp_path_factory):
    study = study_config("smoke", "baselines", "cr", [], str(tmp_path_factory.mktemp("study")), str(data_dir),
                         overrides=SMALL)
    return study, run_study(study, progress=False)


def test_study_returns_one_scored_row_per_planned_run(small_study):
    study, results = small_study
    assert len(results) == 3 * 2 - 1 and results["run_id"].is_unique  # the whole-split probe is seed-free: one run
    assert sorted(results["train_size"].unique()) == [30, 60]
    assert set(results["system"]) == {"linear_probe", "finetune"}
    for column in ("accuracy", "ece", "nll", "trainable_params", "train_seconds", "infer_ms_per_example"):
        assert results[column].notna().all(), column
    assert results["accuracy"].between(0, 1).all()
    # the probe keeps the encoder frozen: fewer trainable parameters than full fine-tuning
    params = results.groupby("system")["trainable_params"].first()
    assert params["linear_probe"] < params["finetune"]


def test_cka_shows_the_probe_encoder_unchanged_and_finetuning_as_a_layer_matrix(small_study):
    import json

    import numpy as np

    _, results = small_study
    cka = {label: np.asarray(json.loads(d)["cka_base_vs_adapted"])
           for label, d in zip(results["system"], results["details"])}
    assert np.allclose(np.diag(cka["linear_probe"]), 1.0)  # frozen encoder: every layer equals itself
    assert cka["finetune"].shape == cka["linear_probe"].shape == (3, 3)  # tiny: embeddings + 2 layers
    assert ((cka["finetune"] >= 0) & (cka["finetune"] <= 1 + 1e-6)).all()


def test_a_second_study_call_reuses_stored_runs(small_study, monkeypatch):
    import fusionkit.study.runner

    study, first = small_study

    def no_training(*args, **kwargs):
        raise AssertionError("a run was fitted although every run is stored")

    monkeypatch.setattr(fusionkit.study.runner.StudyRunner, "run", no_training)
    again = run_study(study, progress=False)
    assert again[["run_id", "created_at", "accuracy"]].equals(first[["run_id", "created_at", "accuracy"]])


def test_a_run_key_changes_with_the_data_caps(toy_task, toy_source):
    from fusionkit.study.store import run_key

    study = config([Arm("f", "finetune", train_sizes=[20])], seeds=[0])
    capped = toy_task.capped("validation", 5)
    keys = {run_key(run) for task in (toy_task, capped) for run in planned_runs(study, task, [toy_source])}
    assert len(keys) == 2


def test_a_run_that_another_run_needs_is_trained_once(data_dir, tmp_path):
    """distill's teachers are the study's own sequential runs (same knobs, data and seed), and its control's
    target-only teacher is sequential's no-source control (fine-tuning, same knobs): one fit serves both, and the
    study never names a strategy to know it. Experts follow the seed: one per seed."""
    arms = [{"system": "sequential", "strategy": "sequential", "per_source": True, "controls": []},
            {"system": "distill", "strategy": "distill"}]
    study = study_config("smoke", "fusion", "cr", ["mr"], str(tmp_path), str(data_dir),
                         overrides={**SMALL, "fusion_arms": arms, "task_train_cap": 60, "fusion_size": 30,
                                    "tuning_budget": 1})
    results = run_study(study, progress=False)
    assert sorted(set(results["system"])) == ["distill", "distill: target-only teacher", "distill: tuned control",
                                              "sequential (mr)", "sequential (mr): no source",
                                              "sequential (mr): tuned control"]
    assert (results.groupby("system")["seed"].nunique() == 2).all()
    teachers = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "models").iterdir())
    assert teachers == ["finetune-cr-s0", "finetune-cr-s1", "sequential-cr-mr-s0", "sequential-cr-mr-s1"]
    teacher_runs = results[results["system"].isin(["sequential (mr)", "sequential (mr): no source"])]
    assert teacher_runs["run_id"].nunique() == 4 and results.attrs["runs_trained"] == 8
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "experts").iterdir()) == [
        "finetune-mr-s0", "finetune-mr-s1"]
