"""What the report says must be true of its study: the systems it names are the ones it runs, a deterministic run
is one run, learning curves are compared over shared sizes, and a fusion system's cost includes its experts."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.evaluation.metrics import score_all
from fusionkit.evaluation.verdicts import compare_pairs
from fusionkit.report import tables
from fusionkit.strategies import STRATEGIES
from fusionkit.study.design import CONTROL, StudyDesign, results_frame
from fusionkit.study.profiles import PROFILES, study_config
from fusionkit.study.runner import Arm, StudyConfig
from fusionkit.study.store import ResultsStore


# ---------------------------------------------------------------- the systems the prose names

def profile_systems(profile: str) -> set[str]:
    return {arm["system"] for arm in [*PROFILES[profile]["baseline_arms"], *PROFILES[profile]["fusion_arms"]]}


def test_the_arm_description_is_the_profiles_own_systems():
    for part in ("baselines", "fusion"):
        described = tables.study_arms(study_config("quick", part, "cr", ["mr", "subj", "trec"], "unused"))
        text = described.to_string()
        assert "merge ties" not in text and "multitask" not in text and "distill" not in text
        arms = PROFILES["quick"]["baseline_arms" if part == "baselines" else "fusion_arms"]
        assert [s.removesuffix(" (each source)") for s in described["system"]] == [arm["system"] for arm in arms]
    fusion = tables.study_arms(study_config("quick", "fusion", "cr", ["mr", "subj", "trec"], "unused"))
    assert set(fusion["fuses"]) == {"mr, subj, trec, one system each", "mr, subj, trec"}
    assert (fusion["train_sizes"] == str(PROFILES["quick"]["fusion_size"])).all()
    merge = fusion.set_index("system").loc["merge task_arithmetic"]
    assert merge["what"].startswith("merge: weight-space fusion")
    assert json.loads(merge["search"])["scale"][:2] == [0.05, 0.1]
    probe = tables.study_arms(study_config("quick", "baselines", "cr", ["mr"], "unused")).set_index("system")
    assert probe.loc["linear_probe", "train_sizes"] == "32, 128, 512, whole split"
    assert "whole split: seed 0 only" in probe.loc["linear_probe", "seeds"]
    assert "only" not in probe.loc["finetune", "seeds"]


def test_no_notebook_prose_names_a_system_that_some_profile_does_not_run():
    """Notebooks 01-05 run under smoke, quick and full; their markdown may name only what all three run."""
    everywhere = set.intersection(*({*profile_systems(p), *(a["strategy"] for a in [*PROFILES[p]["baseline_arms"],
                                                                                    *PROFILES[p]["fusion_arms"]])}
                                    for p in ("smoke", "quick", "full")))
    named_somewhere = {*STRATEGIES, *(s for p in PROFILES for s in profile_systems(p))} - everywhere
    assert {"merge ties", "multitask", "distill", "lora", "scratch"} <= named_somewhere
    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("0[1-5]_*.ipynb")):
        prose = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
                          if cell["cell_type"] == "markdown")
        named = {name for name in named_somewhere if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", prose)}
        assert not named, f"{path.name} names {sorted(named)}, which some profile does not run"


# ---------------------------------------------------------------- a deterministic run is one run

PROBE = Arm("probe", "linear_probe", train_sizes=[40, None])
MERGE = Arm("merge", "merge", knobs={"expert_train_size": 40, "expert_epochs": 1}, train_sizes=[None])


def test_a_seed_free_run_is_planned_once_and_the_other_runs_keep_their_keys(toy_task, toy_source, monkeypatch):
    config = StudyConfig("toy", [toy_source.name], [PROBE, MERGE], seeds=[0, 1, 2], encoder="tiny")
    design = StudyDesign(config, toy_task, [toy_source])
    whole = len(toy_task.train)
    planned = design.final_runs(None)
    assert STRATEGIES["linear_probe"].seed_free(whole_train_split=True)
    assert not STRATEGIES["linear_probe"].seed_free(whole_train_split=False)
    # a strategy that fuses sources trains them with the seed (merge's probe head included)
    assert not any(s.seed_free(whole_train_split=True) for s in STRATEGIES.values() if s.needs_sources)
    probe = [(p.run["train_size"], p.run["seed"], p.seed_free) for p in planned if p.system == "probe"]
    assert probe == [(40, 0, False), (40, 1, False), (40, 2, False), (whole, 0, True)]
    # the merge control is the probe on the base encoder: seed-free on the whole split, so once; merge itself is not
    assert [(p.run["seed"], p.seed_free) for p in planned if p.role == CONTROL and p.primary] == [(0, True)]
    assert [(p.run["seed"], p.seed_free) for p in planned if p.detail == "tuned control"] == [(0, True)]
    # its random-expert control merges experts trained with each seed: every seed
    assert [(p.run["seed"], p.seed_free) for p in planned if p.detail == "shuffled-label source"] == [
        (0, False), (1, False), (2, False)]
    assert [p.run["seed"] for p in planned if p.system == "merge"] == [0, 1, 2]
    # every run still planned is the run (the same key) a plan of every seed made; only the whole-split probe's
    # seeds 1 and 2 are gone (the merge control is that same run)
    monkeypatch.setattr(STRATEGIES["linear_probe"], "seed_free", classmethod(lambda cls, whole_train_split: False))
    every_seed, kept = {p.key: p.run for p in design.final_runs(None)}, {p.key for p in planned}
    assert kept < set(every_seed)
    dropped = sorted((run["strategy"], run["train_size"], run["seed"]) for key, run in every_seed.items()
                     if key not in kept)
    assert dropped == [("linear_probe", whole, 1), ("linear_probe", whole, 2)]


def test_the_probe_on_the_whole_split_gives_the_same_model_for_every_seed(toy_task, tmp_path):
    probe = STRATEGIES["linear_probe"]({}, encoder="tiny", workdir=tmp_path, device="cpu")
    first, second = (probe.fit(toy_task, seed=seed) for seed in (0, 1))
    assert np.array_equal(first.probabilities["test"], second.probabilities["test"])
    subsampled = [probe.fit(toy_task, seed=seed, train_size=40).probabilities["test"] for seed in (0, 1)]
    assert not np.array_equal(*subsampled)  # below the whole split the seed draws the subsample


def test_a_seed_free_run_appears_once_with_no_interval(toy_task, tmp_path):
    design = StudyDesign(StudyConfig("toy", [], [PROBE], seeds=[0, 1, 2], encoder="tiny"), toy_task, [])
    planned = design.final_runs(None)
    store = ResultsStore(tmp_path)
    labels = np.array([0, 1, 1, 0])
    for index, p in enumerate(planned):
        probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.4 + 0.05 * index, 0.6 - 0.05 * index], [0.6, 0.4]])
        store.put(p.key, p.run, {**score_all(labels, probs), "val_accuracy": 0.5},
                  {"trainable_params": 10, "train_seconds": 1.0, "infer_ms_per_example": 0.1}, labels, probs)
    results = results_frame(store, planned)
    results.attrs = {"tuning": pd.DataFrame({"run_id": ["x"]})}  # as a study's results carry
    table = tables.results_table(results).set_index("train_size")
    whole = len(toy_task.train)
    assert table.loc[whole, "n_seeds"] == 1 and table.loc[whole, "seed_free"]
    assert np.isnan(table.loc[whole, "ci_low"]) and np.isnan(table.loc[whole, "ci_high"])
    assert table.loc[40, "n_seeds"] == 3 and not table.loc[40, "seed_free"]


def test_a_seed_free_reference_is_compared_with_every_seed_of_the_other_side():
    fused = [0.80, 0.83, 0.81, 0.84]
    results = pd.DataFrame({"target": "t", "train_size": 100, "system": ["fused"] * 4 + ["probe"],
                            "seed": [0, 1, 2, 3, 0], "accuracy": [*fused, 0.78],
                            "seed_free": [False] * 4 + [True]})
    results.attrs = {"tuning": pd.DataFrame({"run_id": ["x"]})}  # as a study's results carry
    row = compare_pairs(results, [("fused", "probe")]).iloc[0]
    expected = scipy.stats.ttest_1samp(np.array(fused) * 100, 78.0)
    assert row["n_fused"] == row["n_baseline"] == 4
    assert row["gain"] == pytest.approx(np.mean(fused) * 100 - 78.0)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    # without the mark, one run is one seed: untested, as before
    untested = compare_pairs(results.drop(columns="seed_free"), [("fused", "probe")]).iloc[0]
    assert np.isnan(untested["p_value"])


# ---------------------------------------------------------------- a fusion system costs its experts too

def save_artefact(workdir, folder, name, spec, seconds, val_metric, artefacts=()):
    path = workdir / folder / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**spec, "artefacts": list(artefacts), "train_seconds": seconds,
                                                  "history": {"val_metric": val_metric, "best_epoch": 0}}))


def expert_record(task, seed, val_accuracy, strategy="finetune", sources=()):
    return {"strategy": strategy, "task": task, "sources": list(sources), "seed": seed, "train_size": 400,
            "val_accuracy": val_accuracy}


def test_the_cost_table_adds_each_runs_experts_and_shares_them_among_the_runs_using_them(tmp_path):
    mr, subj = expert_record("mr", 0, 0.7), expert_record("subj", 0, 0.9)
    for record, seconds in ((mr, 30.0), (subj, 50.0)):
        save_artefact(tmp_path, "experts", f"finetune-{record['task']}-s0", {
            "strategy": "finetune", "target": record["task"], "sources": [], "seed": 0, "train_size": 400},
            seconds, [record["val_accuracy"]])
    # an expert of another seed with the same task: told apart by its seed
    save_artefact(tmp_path, "experts", "finetune-mr-s1", {"strategy": "finetune", "target": "mr", "sources": [],
                                                          "seed": 1, "train_size": 400}, 999.0, [0.7])
    teacher = expert_record("cr", 0, 0.8, strategy="sequential", sources=["mr"])
    save_artefact(tmp_path, "models", "sequential-cr-mr-s0", {"strategy": "sequential", "target": "cr",
                                                              "sources": ["mr"], "seed": 0, "train_size": 400},
                  20.0, [0.8], artefacts=[mr])
    given = {"strategy": "pretrained model", "task": "sst2-model", "sources": [], "seed": None, "train_size": None,
             "val_accuracy": None}
    runs = {"finetune": [], "merge": [mr, subj], "sequential (mr)": [mr], "distill": [teacher], "given": [given]}
    results = pd.DataFrame([{"run_id": f"r{i}", "target": "cr", "system": system, "role": "fusion", "seed": 0,
                             "train_size": 128, "trainable_params": 10, "train_seconds": 10.0 * (i + 1),
                             "details": json.dumps({"artefacts": artefacts})}
                            for i, (system, artefacts) in enumerate(runs.items())])
    costs = tables.run_costs(results, tmp_path).set_index("system")
    assert costs["expert_seconds"].to_dict() == {"finetune": 0.0, "merge": 80.0, "sequential (mr)": 30.0,
                                                 "distill": 50.0, "given": 0.0}  # the teacher and its expert
    assert costs.loc["merge", "train_seconds_with_experts"] == 20.0 + 80.0
    # mr's expert serves merge, sequential (mr) and distill's teacher: a third of its 30 s each
    assert costs.loc["merge", "train_seconds_amortised"] == pytest.approx(20.0 + 30.0 / 3 + 50.0)
    assert costs.loc["distill", "train_seconds_amortised"] == pytest.approx(40.0 + 30.0 / 3 + 20.0)
    # every expert second is counted once over the runs
    assert costs["train_seconds_amortised"].sum() == pytest.approx(costs["train_seconds"].sum() + 30 + 50 + 20)
    costs.attrs = {"tuning": pd.DataFrame({"run_id": ["x"]})}  # as a study's results carry
    table = tables.cost_table(costs.reset_index())
    assert list(table.columns) == ["target", "system", "train_size", "role", "runs", "trainable_params",
                                   *tables.SECONDS_COLUMNS]
    assert table["train_seconds_with_experts"].is_monotonic_decreasing


def test_a_run_whose_expert_is_missing_has_no_expert_cost_and_a_warning(tmp_path):
    from fusionkit.errors import FusionkitWarning

    results = pd.DataFrame([{"run_id": "r0", "system": "merge", "train_seconds": 5.0,
                             "details": json.dumps({"artefacts": [expert_record("mr", 3, 0.7)]})}])
    with pytest.warns(FusionkitWarning, match=r"finetune on mr \(seed 3\)"):
        costs = tables.run_costs(results, tmp_path)
    assert np.isnan(costs.loc[0, "expert_seconds"]) and np.isnan(costs.loc[0, "train_seconds_with_experts"])
    assert costs.loc[0, "train_seconds"] == 5.0
