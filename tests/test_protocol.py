"""The fair protocol: equal tuning budgets on validation, matched controls, per-seed experts, the seed-level verdict
with a declared minimum effect and its power statement, the shuffled-label control, the data overlap card,
distillation on unlabelled text."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.errors import ConfigError
from fusionkit.evaluation.stats import detectable_effect, paired_t_power, seeds_needed
from fusionkit.evaluation.verdicts import compare_pairs
from fusionkit.strategies import STRATEGIES, get_strategy
from fusionkit.study.design import CONTROL, FUSION, TUNED, StudyDesign, configurations
from fusionkit.study.profiles import PROFILES, study_config
from fusionkit.study.runner import Arm, StudyConfig


def design(profile, part, target, sources, **overrides):
    config = study_config(profile, part, target.name, [s.name for s in sources], "unused", overrides=overrides)
    return StudyDesign(config, target, sources)


# ---------------------------------------------------------------- equal tuning budget, on validation

@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
@pytest.mark.parametrize("part", ["baselines", "fusion"])
def test_every_tuned_system_tries_the_same_number_of_configurations(profile, part, toy_task, toy_source):
    planned = design(profile, part, toy_task, [toy_source], fusion_size=40).tuning_runs()
    per_system = pd.Series([(p.system, p.run["train_size"]) for p in planned]).value_counts()
    assert set(per_system) == {PROFILES[profile]["tuning_budget"]}
    assert {p.run["seed"] for p in planned} == {PROFILES[profile]["seeds"][0]}  # tuned on the first seed only
    # the configurations of one system differ, and each is recorded with its run
    for (system, _), group in pd.DataFrame([(p.system, p.run["train_size"], json.dumps(p.configuration))
                                            for p in planned]).groupby([0, 1]):
        assert group[2].is_unique, system


def test_a_search_space_smaller_than_the_budget_is_a_config_error_naming_the_arm():
    with pytest.raises(ConfigError, match=r"arm 'probe'.*1 configuration\(s\), fewer than the study's "
                                          r"tuning_budget 3"):
        configurations(Arm("probe", "linear_probe", search={"c": [1.0]}), 3)
    with pytest.raises(ConfigError, match=r"arm 'ft'.*unknown knob\(s\) \['lrr'\]"):
        configurations(Arm("ft", "finetune", search={"lrr": [1e-4, 2e-4]}), 2)


def test_every_strategy_declares_a_search_space_and_merging_searches_ilharcos_grid_without_its_control():
    for name, strategy in STRATEGIES.items():
        assert strategy.search_space, name
        assert set(strategy.search_space) <= strategy.Knobs.knob_names(), name
    scales = STRATEGIES["merge"].search_space["scale"]
    assert scales[0] == 0.05 and scales[-1] == 1.0 and len(scales) == 20  # scale 0 is the control, run anyway
    assert PROFILES["quick"]["fusion_arms"][3]["search"]["scale"] == scales


def test_the_configuration_with_the_best_validation_accuracy_runs_for_every_seed(toy_task, toy_source, tmp_path):
    from fusionkit.study.store import ResultsStore

    config = StudyConfig("toy", [], [Arm("ft", "finetune", search={"lr": [1e-4, 2e-4, 3e-4]})], seeds=[3, 4],
                         train_sizes=[40], tuning_budget=3)
    study = StudyDesign(config, toy_task, [])
    store = ResultsStore(tmp_path)
    scores = {1e-4: 0.6, 2e-4: 0.8, 3e-4: 0.7}  # validation accuracies, as the runner stores them
    for planned in study.tuning_runs():
        store.put(planned.key, planned.run, {"val_accuracy": scores[planned.configuration["lr"]]}, {},
                  [0, 1], [[0.5, 0.5], [0.5, 0.5]])
    final = study.final_runs(study.validation_scores(store))
    assert [(p.run["seed"], p.run["knobs"]["lr"]) for p in final] == [(3, 2e-4), (4, 2e-4)]
    table = study.tuning_table(study.validation_scores(store))
    assert table.loc[table["chosen"], "configuration"].tolist() == ['{"lr": 0.0002}']


# ---------------------------------------------------------------- matched controls

def test_every_fusion_system_has_one_matched_control_per_seed_with_its_configuration(toy_task, toy_source):
    planned = design("quick", "fusion", toy_task, [toy_source], fusion_size=40, tuning_budget=1).final_runs(None)
    fusion = {(p.system, p.run["seed"]): p for p in planned if p.role == FUSION}
    controls = [p for p in planned if p.role == CONTROL and p.primary]
    assert sorted((p.of, p.run["seed"]) for p in controls) == sorted(fusion)
    for control in controls:
        fused = fusion[(control.of, control.run["seed"])]
        shared = set(control.run["knobs"]) & set(fused.run["knobs"])
        assert {"lr", "epochs"} <= shared or {"c"} <= shared, control.system
        assert all(control.run["knobs"][k] == fused.run["knobs"][k] for k in shared
                   if k not in ("expert_labels", "teachers")), control.system
    strategies = {p.of.split(" (")[0]: p.run["strategy"] for p in controls}
    assert strategies == {"sequential": "finetune", "representation sum": "representation",
                          "representation pooled-attention": "representation", "merge task_arithmetic": "linear_probe"}
    assert all(p.run["sources"] == [] for p in controls)


def test_every_fusion_system_has_a_tuned_control_with_the_same_budget_and_its_own_choice(toy_task, toy_source,
                                                                                      tmp_path):
    from fusionkit.study.store import ResultsStore

    study = design("quick", "fusion", toy_task, [toy_source], fusion_size=40)
    tuning = [p for p in study.tuning_runs() if p.detail == TUNED]
    budget = PROFILES["quick"]["tuning_budget"]
    per_system = pd.Series([p.of for p in tuning]).value_counts()
    fusion_systems = {p.system for p in study.tuning_runs() if p.role == FUSION}
    assert set(per_system.index) == fusion_systems and set(per_system) == {budget}  # the same budget as the fused
    by_of = {of: [p.configuration for p in tuning if p.of == of] for of in fusion_systems}
    assert by_of["sequential (toysrc)"] == [{"epochs": 6, "lr": 5e-05}, {"epochs": 6, "lr": 0.0001}]  # its space
    merge = by_of["merge task_arithmetic"]  # the probe has no scale: it searches its own C
    assert [set(c) for c in merge] == [{"c"}, {"c"}] and len({c["c"] for c in merge}) == 2
    # the tuned control takes the configuration its own validation accuracy chose, not the fused system's
    store = ResultsStore(tmp_path)
    for planned in study.tuning_runs():
        best = planned.detail == TUNED and planned.configuration.get("lr") == 5e-05
        store.put(planned.key, planned.run, {"val_accuracy": 0.9 if best else 0.5}, {}, [0, 1], [[0.5, 0.5]] * 2)
    final = study.final_runs(study.validation_scores(store))
    tuned = [p for p in final if p.detail == TUNED and p.of == "sequential (toysrc)"]
    assert [p.run["seed"] for p in tuned] == PROFILES["quick"]["seeds"]
    assert {p.run["knobs"]["lr"] for p in tuned} == {5e-05} and {p.run["strategy"] for p in tuned} == {"finetune"}
    fused = [p for p in final if p.system == "sequential (toysrc)"]
    assert {p.run["knobs"]["lr"] for p in fused} == {5e-05}  # (the first configuration on a tie)


def test_the_verdict_table_says_when_a_system_beats_only_its_matched_control():
    from fusionkit.report.findings import both_controls_reading

    assert both_controls_reading("helps", "helps") == "helps against both controls"
    assert both_controls_reading("helps", "inconclusive").startswith("helps against its matched control only")
    assert both_controls_reading("inconclusive", float("nan")) == "no tuned control"


def test_further_controls_can_be_limited_to_the_first_sources_but_the_matched_control_always_runs(
        toy_task, toy_source):
    other = toy_source.subsample(40)
    other.name = "other"
    arms = [Arm("seq", "sequential", per_source=True, further_controls_for=1)]
    config = StudyConfig("toy", ["toysrc", "other"], arms, seeds=[0, 1], train_sizes=[30])
    controls = [(p.system, p.run["seed"]) for p in StudyDesign(config, toy_task, [toy_source, other]).final_runs(None)
                if p.role == CONTROL and p.detail != TUNED]
    assert sorted(controls) == sorted([(f"seq ({s}): no source", seed) for s in ("toysrc", "other") for seed in (0, 1)]
                                      + [("seq (toysrc): shuffled-label source", seed) for seed in (0, 1)])


def test_a_profile_cannot_drop_the_matched_control_or_name_an_unknown_one():
    arms = [{"system": "seq", "strategy": "sequential", "controls": ["shuffled labels"]}]
    with pytest.raises(ConfigError, match=r"arm 'seq': unknown control\(s\) \['shuffled labels'\]; sequential has "
                                          r"\['no source', 'shuffled-label source'\]"):
        study_config("smoke", "fusion", "cr", ["mr"], "w", overrides={"fusion_arms": arms})


def test_experts_are_retrained_for_every_seed(toy_task, toy_source, tmp_path):
    strategy = get_strategy("sequential", {"expert_train_size": 40}, encoder="tiny", workdir=tmp_path)
    keys = {seed: strategy.requirements(toy_task, [toy_source], seed)[0].key for seed in (0, 1)}
    assert keys[0] != keys[1]
    shared = get_strategy("sequential", {"expert_train_size": 40, "expert_seed": 0}, encoder="tiny", workdir=tmp_path)
    assert {shared.requirements(toy_task, [toy_source], seed)[0].key for seed in (0, 1)} == {keys[0]}


# ---------------------------------------------------------------- the verdict rule and its power statement

def seed_results(gains: dict[str, list[float]], base: float = 0.80) -> pd.DataFrame:
    """Per-seed accuracies: a control at ``base`` + seed noise, each system at control + its gain (in points)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(len(next(iter(gains.values())))):
        control = base + rng.normal(0, 0.02)
        rows.append({"system": "control", "seed": seed, "target": "t", "train_size": 100, "accuracy": control})
        rows += [{"system": system, "seed": seed, "target": "t", "train_size": 100,
                  "accuracy": control + values[seed] / 100} for system, values in gains.items()]
    return pd.DataFrame(rows)


def test_a_significant_gain_below_the_declared_minimum_effect_is_equivalent_or_inconclusive_and_says_why():
    results = seed_results({"small": [0.50, 0.52, 0.49, 0.51, 0.50], "large": [3.0, 3.1, 2.9, 3.0, 3.05],
                            "near": [0.9, 1.4, 0.5, 1.2, 0.7]})
    table = compare_pairs(results, [("small", "control"), ("large", "control"), ("near", "control")],
                          min_effect=1.0).set_index("system")
    assert (table["p_adjusted"] < 0.05).all() and (table["ci_low"] > 0).all()
    # small: the whole interval inside +/-1, too small to matter; near: excludes 0, mean below 1, reaches past 1
    assert table["verdict"].to_dict() == {"small": "equivalent", "large": "helps", "near": "inconclusive"}
    assert table.loc["near", "gain"] < 1.0 < table.loc["near", "ci_high"]
    assert ("the interval excludes 0, but the gain is below the declared minimum effect of 1 accuracy points"
            in table.loc["near", "sentence"])


def test_an_inconclusive_verdict_states_the_detectable_effect_and_the_seeds_needed():
    """Power before the fact: from the seed spread pooled over the table and the declared minimum effect, at the
    adjusted alpha (here 2 comparisons: 0.025), as statsmodels' TTestPower computes it; never from the observed gain."""
    from statsmodels.stats.power import TTestPower

    noisy, other = [2.0, -1.0, 1.5, 0.0, 0.5], [1.0, -2.0, 0.5, 2.5, -1.0]
    results = seed_results({"noisy": noisy, "other": other})
    table = compare_pairs(results, [("noisy", "control"), ("other", "control")], min_effect=1.0)
    row = table.iloc[0]
    pooled = float(np.sqrt((np.var(noisy, ddof=1) + np.var(other, ddof=1)) / 2))  # equal seeds: the mean variance
    assert row["verdict"] == "inconclusive"
    assert row["sd_difference"] == pytest.approx(float(np.std(noisy, ddof=1)))
    assert row["pooled_sd"] == pytest.approx(pooled)
    size = TTestPower().solve_power(nobs=5, alpha=0.05 / 2, power=0.8, alternative="two-sided")
    assert row["detectable_effect"] == pytest.approx(size * pooled, rel=1e-3)
    assert row["seeds_needed"] == seeds_needed(1.0, pooled, 0.05 / 2)
    assert TTestPower().power(1.0 / pooled, row["seeds_needed"], 0.05 / 2) >= 0.8
    assert TTestPower().power(1.0 / pooled, row["seeds_needed"] - 1, 0.05 / 2) < 0.8
    changed = compare_pairs(seed_results({"noisy": [x + 5 for x in noisy], "other": other}),
                            [("noisy", "control"), ("other", "control")], min_effect=1.0).iloc[0]
    assert changed["seeds_needed"] == row["seeds_needed"]  # a larger observed gain plans nothing differently
    assert f"detects a true effect of {row['detectable_effect']:.1f}" in row["sentence"]
    assert f"would need about {row['seeds_needed']:.0f} seeds" in row["sentence"]


def test_the_detectable_effect_has_its_stated_power_on_simulated_studies():
    """Studies with a known effect (the one said detectable) and spread: the t-test rejects in ~80% of them."""
    rng = np.random.default_rng(1)
    spread, n_seeds = 1.5, 5
    effect = detectable_effect(spread, n_seeds)
    differences = rng.normal(effect, spread, size=(20_000, n_seeds))
    rejected = scipy.stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=0.012)
    # and a smaller effect than that is detected less often than the stated power
    weaker = scipy.stats.ttest_1samp(rng.normal(effect / 2, spread, size=(20_000, n_seeds)), 0.0, axis=1).pvalue
    assert (weaker < 0.05).mean() < 0.5


def test_seeds_needed_is_the_smallest_seed_count_with_the_power():
    rng = np.random.default_rng(2)
    effect, spread = 1.0, 2.0
    needed = int(seeds_needed(effect, spread))
    assert paired_t_power(effect / spread, needed) >= 0.8 > paired_t_power(effect / spread, needed - 1)
    simulated = scipy.stats.ttest_1samp(rng.normal(effect, spread, size=(20_000, needed)), 0.0, axis=1).pvalue
    assert (simulated < 0.05).mean() == pytest.approx(paired_t_power(effect / spread, needed), abs=0.012)
    assert seeds_needed(0.0, 1.0) == np.inf and seeds_needed(1e-4, 1.0) == np.inf


def test_the_power_function_agrees_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    for size, n in [(0.3, 10), (1.0, 5), (2.0, 3), (0.8, 20)]:
        assert paired_t_power(size, n) == pytest.approx(TTestPower().power(size, n, 0.05), abs=1e-9)


def test_the_best_target_only_baseline_is_chosen_on_validation_not_on_test():
    from fusionkit.report.findings import best_baseline

    results = pd.DataFrame({"system": ["probe", "probe", "finetune", "finetune", "sequential (mr)"],
                            "role": ["baseline", "baseline", "baseline", "baseline", "fusion"],
                            "train_size": [128] * 5, "seed": [0, 1, 0, 1, 0],
                            "accuracy": [0.90, 0.90, 0.80, 0.80, 0.95], "val_accuracy": [0.70, 0.72, 0.80, 0.78, 0.99]})
    assert best_baseline(results, 128) == "finetune"
    assert best_baseline(results, 64) is None


def test_the_per_example_test_never_changes_a_verdict():
    from fusionkit.report.findings import Comparisons

    knowledge = compare_pairs(seed_results({"sys": [-2.0, 1.0, -1.5, 0.5, -1.0]}), [("sys", "control")],
                              min_effect=1.0)
    on_test_set = knowledge.assign(verdict="hurts (negative transfer)", p_adjusted=0.001)
    empty = knowledge.iloc[0:0]
    comparisons = Comparisons(knowledge, on_test_set, empty, empty, empty, empty, empty)
    assert knowledge["verdict"].tolist() == ["inconclusive"]
    assert comparisons.negative_transfer().empty


# ---------------------------------------------------------------- the shuffled-label control

def test_shuffled_labels_keep_texts_and_label_counts_but_not_their_pairing(toy_task):
    shuffled = toy_task.with_shuffled_labels(seed=0)
    assert shuffled.name == "toy-shuffled" and shuffled.fingerprint() != toy_task.fingerprint()
    assert list(shuffled.train["text"]) == list(toy_task.train["text"])
    before, after = np.asarray(toy_task.train["label"]), np.asarray(shuffled.train["label"])
    assert np.array_equal(np.bincount(before), np.bincount(after)) and (before != after).mean() > 0.3
    assert list(shuffled.test["label"]) == list(toy_task.test["label"])  # judged on its true labels


def test_the_shuffled_label_control_runs_through_an_expert_trained_on_shuffled_labels(data_dir, tmp_path):
    from fusionkit.study.executors import run_study

    arms = [{"system": "sequential", "strategy": "sequential", "per_source": True}]
    overrides = {"fusion_arms": arms, "seeds": [0], "tuning_budget": 1, "task_train_cap": 60, "validation_cap": 20,
                 "test_cap": 30, "fusion_size": 30, "train_knobs": {"epochs": 1, "progress": False}}
    results = run_study(study_config("smoke", "fusion", "cr", ["mr"], str(tmp_path), str(data_dir),
                                     overrides=overrides), progress=False)
    assert sorted(results["system"]) == ["sequential (mr)", "sequential (mr): no source",
                                         "sequential (mr): shuffled-label source", "sequential (mr): tuned control"]
    shuffled = results[results["system"] == "sequential (mr): shuffled-label source"].iloc[0]
    assert shuffled["strategy"] == "sequential" and json.loads(shuffled["knobs"])["expert_labels"] == "shuffled"
    experts = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "experts").iterdir())
    assert experts == ["finetune-mr-s0", "finetune-mr-shuffled-s0"]
    used = json.loads(shuffled["details"])["artefacts"]
    assert [a["task"] for a in used] == ["mr-shuffled"]


# ---------------------------------------------------------------- the data overlap card

def test_the_overlap_card_counts_a_planted_overlap_exactly(tmp_path, toy_csv):
    from fusionkit import load_task_from_files
    from fusionkit.data import overlap_card

    target = load_task_from_files(toy_csv(tmp_path / "target.csv", 100, seed=3), name="target")
    planted = list(target.test["text"])[:3]
    source_file = toy_csv(tmp_path / "source.csv", 60, seed=4)
    # the same sentences, with other spacing and case: normalised, they are the same text
    lines = source_file.read_text().splitlines() + [f"  {text.upper()} ,pos" for text in planted]
    source_file.write_text("\n".join(lines) + "\n")
    source = load_task_from_files(source_file, name="source")
    card = overlap_card([target, source]).set_index(["task", "split", "other_task", "other_split"])
    found = card.loc[("target", "test", "source", slice(None)), "shared_texts"].sum()
    assert found == 3
    assert card["shared_texts"].sum() == 2 * 3  # each shared text counted once from each side, nowhere else
    assert card.loc[("target", "test", "source", "train"), "share_of_split"] == pytest.approx(
        card.loc[("target", "test", "source", "train"), "shared_texts"] / len(set(target.test["text"])))


LONG = ("the film is a gorgeously shot , slow and quietly devastating portrait of a family that never quite learns "
        "to talk about what it lost")
VARIANTS = [  # (a text of the target's test split, how a source writes the same sentence, the level that finds it)
    ("Moore's best film since the nineties", "moore 's best film since the nineties", "letters"),
    ("a (mostly) charming comedy", "a -lrb- mostly -rrb- charming comedy", "letters"),
    ("Tom & Jerry doesn't disappoint", "tom &amp; jerry does n't disappoint", "letters"),
    ("Café society is smart", "cafe society is smart", "letters"),
    ("  IT WAS GREAT  ", "it was great", "exact"),
    (LONG, LONG.replace("quietly", "utterly"), "near"),
]


def test_tokenisation_variants_and_near_duplicates_of_evaluation_texts_are_found():
    from fusionkit.data.overlap import EvaluationIndex, jaccard, letters_and_digits, shingles

    index = EvaluationIndex([held_out for held_out, _, _ in VARIANTS])
    levels = index.match([variant for _, variant, _ in VARIANTS]
                         + ["what is the capital of spain ?", "a charming comedy", "", "!!!"])
    assert list(levels) == [level for *_, level in VARIANTS] + ["", "", "", ""]
    assert letters_and_digits("Moore 's -LRB- new -RRB- film &amp; more") == "mooresnewfilmmore"
    near = jaccard(shingles(letters_and_digits(LONG)), shingles(letters_and_digits(VARIANTS[-1][1])))
    assert 0.8 <= near < 1.0  # the planted near-duplicate is one, by the documented threshold


def test_a_study_drops_tokenisation_variants_of_the_targets_evaluation_texts_from_its_sources(tmp_path, toy_csv):
    from fusionkit import load_task_from_files
    from fusionkit.study.runner import load_study_tasks

    target_file = toy_csv(tmp_path / "target.csv", 100, seed=3)
    target = load_task_from_files(target_file, name="target")
    held_out = list(target.test["text"])[:4]
    rows = [f"{text.replace(' ', '  ').upper()} !!,pos" for text in held_out]  # the same letters, other tokens
    source_file = toy_csv(tmp_path / "source.csv", 60, seed=4)
    source_file.write_text(source_file.read_text() + "\n".join(rows) + "\n")
    config = StudyConfig(str(target_file), [str(source_file)], [Arm("merge", "merge")], encoder="tiny")
    _, (source,) = load_study_tasks(config)
    from fusionkit.data.overlap import letters_and_digits

    kept = {letters_and_digits(text) for split in source.splits.values() for text in split["text"][:]}
    assert not kept & {letters_and_digits(text) for text in held_out}
    counted = [int(n) for note in source.notes for n in re.findall(r"(\d+) letters", note)]
    assert sum(counted) == 4, source.notes  # each recorded as a tokenisation variant, wherever it fell


def test_the_overlap_card_counts_each_level(tmp_path, toy_csv):
    from fusionkit import load_task_from_files
    from fusionkit.data import overlap_card

    target = load_task_from_files(toy_csv(tmp_path / "target.csv", 100, seed=3), name="target")
    held_out = list(target.test["text"])[:3]
    source_file = toy_csv(tmp_path / "source.csv", 60, seed=4)
    rows = [f"{held_out[0]},pos", f'"{held_out[1].replace(" ", " , ")}",pos']  # one exact, one tokenisation variant
    source_file.write_text(source_file.read_text() + "\n".join(rows) + "\n")
    source = load_task_from_files(source_file, name="source")
    card = overlap_card([target, source]).set_index(["task", "split", "other_task", "other_split"])
    row = card.loc[("target", "test", "source", slice(None))].sum()  # wherever the source's split put them
    assert (row["shared_texts"], row["shared_letters"], row["shared_near"]) == (1, 2, 2)


def test_a_study_drops_the_targets_held_out_texts_from_its_sources(tmp_path, toy_csv):
    from fusionkit.study.runner import load_study_tasks

    target_file = toy_csv(tmp_path / "target.csv", 100, seed=3)
    source_file = toy_csv(tmp_path / "source.csv", 60, seed=4)
    from fusionkit import load_task_from_files

    target = load_task_from_files(target_file, name="target")
    held_out = list(target.validation["text"])[:2] + list(target.test["text"])[:2]
    source_file.write_text(source_file.read_text() + "".join(f"{t},neg\n" for t in held_out))
    config = StudyConfig(str(target_file), [str(source_file)], [])
    _, (source,) = load_study_tasks(config)
    texts = {t for split in source.splits.values() for t in split["text"]}
    assert not texts & set(held_out)
    counted = [int(n) for note in source.notes for n in re.findall(r"(\d+) exact", note)]
    assert sum(counted) == 4, source.notes


# ---------------------------------------------------------------- distillation on unlabelled target text

def test_a_subsample_keeps_the_rest_of_the_training_texts_as_unlabelled(toy_task):
    sample = toy_task.subsample(20, seed=0)
    assert len(sample.train) == 20
    assert sorted(sample.unlabelled + list(sample.train["text"])) == sorted(toy_task.train["text"])
    assert sample.fingerprint() != toy_task.subsample(20, seed=1).fingerprint()


def test_distillation_trains_on_the_labels_and_the_teachers_soft_labels_of_unlabelled_texts(toy_task, tmp_path):
    knobs = {"epochs": 1, "progress": False, "teachers": "finetune", "unlabelled_size": 30}
    fitted = get_strategy("distill", knobs, encoder="tiny", workdir=tmp_path, max_length=16).fit(
        toy_task, seed=0, train_size=20)
    arch = fitted.spec["arch"]
    assert (arch["labelled_texts"], arch["unlabelled_texts"]) == (20, 30)
    assert fitted.spec["train_size"] == 20  # n counts labels
    assert fitted.history.steps == 4  # (20 + 30) texts in batches of 16
    with pytest.raises(ConfigError, match="teachers='finetune' uses the target only"):
        get_strategy("distill", knobs, encoder="tiny", workdir=tmp_path).fit(toy_task, [toy_task], train_size=20)


# ---------------------------------------------------------------- controls that are a strategy without its sources

def test_merging_at_scale_zero_is_its_control_the_probe_on_the_base_encoder(toy_task, toy_source, tmp_path):
    expert = {"expert_train_size": 40, "expert_epochs": 1}
    merged = get_strategy("merge", {**expert, "scale": 0.0, "c": 1.0}, encoder="tiny", workdir=tmp_path,
                          max_length=16).fit(toy_task, [toy_source], seed=0, train_size=40)
    probe = get_strategy("linear_probe", {"c": 1.0}, encoder="tiny", workdir=tmp_path, max_length=16).fit(
        toy_task, seed=0, train_size=40)
    texts = list(toy_task.test["text"])
    assert np.allclose(merged.predict_proba(texts), probe.predict_proba(texts), atol=1e-6)


@pytest.mark.parametrize("mode", ["sum", "attention"])
def test_representation_without_sources_is_the_same_head_on_the_base_encoder(mode, toy_task, tmp_path):
    fitted = get_strategy("representation", {"mode": mode, "epochs": 2, "progress": False}, encoder="tiny",
                          workdir=tmp_path, max_length=16).fit(toy_task, [], seed=0, train_size=40)
    texts = list(toy_task.test["text"])
    assert fitted.spec["arch"]["num_sources"] == 0
    assert np.allclose(fitted.probabilities["test"], fitted.predict_proba(texts), atol=1e-5)


def test_multitask_ends_with_a_target_phase_like_fine_tuning(toy_task, toy_source, tmp_path):
    knobs = {"epochs": 1, "progress": False, "source_train_size": 40, "batches_per_epoch": 3}
    fitted = get_strategy("multitask", knobs, encoder="tiny", workdir=tmp_path, max_length=16).fit(
        toy_task, [toy_source], seed=0, train_size=32)
    assert fitted.spec["arch"]["joint_phase"]["steps"] == 3
    assert fitted.history.steps == 3 + 2  # then 32 target examples in batches of 16


def test_representation_and_merge_get_a_random_expert_control_where_every_source_is_a_task(toy_task, toy_source,
                                                                                            tmp_path):
    arms = [Arm("rep", "representation"), Arm("merge", "merge")]
    planned = StudyDesign(StudyConfig("toy", ["toysrc"], arms, seeds=[0, 1], train_sizes=[30]), toy_task,
                          [toy_source]).final_runs(None)
    shuffled = [p for p in planned if p.detail == "shuffled-label source"]
    assert sorted((p.of, p.run["seed"]) for p in shuffled) == [("merge", 0), ("merge", 1), ("rep", 0), ("rep", 1)]
    assert all(p.run["knobs"]["expert_labels"] == "shuffled" and p.run["sources"] == ["toysrc"] for p in shuffled)
    assert {p.run["strategy"] for p in shuffled if p.of == "merge"} == {"merge"}  # random experts, merged alike
    from fusionkit.strategies.knowledge import PretrainedModel

    from test_knowledge import save_model

    folder = save_model(tmp_path / "given")
    given = PretrainedModel("given", folder)  # a given model has no labels to shuffle: no such control
    planned = StudyDesign(StudyConfig("toy", [{"model": folder, "name": "given"}], arms, seeds=[0],
                                      train_sizes=[30]), toy_task, [given]).final_runs(None)
    assert not [p for p in planned if p.detail == "shuffled-label source"]


def test_a_knob_added_later_leaves_stored_runs_keys_alone_until_it_is_changed():
    from fusionkit.study.runner import resolved_knobs

    stored = resolved_knobs("merge", {"method": "task_arithmetic", "scale": 0.3})
    assert not {"statistics_examples", "off_diagonal", "coefficients", "search_steps", "search_folds"} & set(stored)
    assert get_strategy("merge", stored).knobs.coefficients == "shared"  # the run still gets the default
    searched = resolved_knobs("merge", {"method": "task_arithmetic", "coefficients": "searched"})
    assert searched["coefficients"] == "searched" and "search_steps" not in searched
    assert resolved_knobs("merge", {"search_steps": 40})["search_steps"] == 40


def test_a_tuning_run_two_systems_share_is_chosen_only_for_the_system_that_chose_it(toy_task, tmp_path):
    from fusionkit.study.store import ResultsStore

    arms = [Arm("probe a", "linear_probe", search={"c": [0.1, 1.0]}, train_sizes=[40]),
            Arm("probe b", "linear_probe", search={"c": [1.0, 10.0]}, train_sizes=[40])]
    study = StudyDesign(StudyConfig("toy", [], arms, seeds=[0], tuning_budget=2), toy_task, [])
    scores = {0.1: 0.9, 1.0: 0.8, 10.0: 0.7}
    store = ResultsStore(tmp_path)
    for planned in study.tuning_runs():
        store.put(planned.key, planned.run, {"val_accuracy": scores[planned.configuration["c"]]}, {}, [0, 1],
                  [[0.5, 0.5], [0.5, 0.5]])
    table = study.tuning_table(study.validation_scores(store))
    chosen = table[table["chosen"]].set_index("system")["configuration"].to_dict()
    assert chosen == {"probe a": '{"c": 0.1}', "probe b": '{"c": 1.0}'}  # c=1.0 is shared; only b chose it
