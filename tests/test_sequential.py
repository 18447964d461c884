"""Decided verdicts at a declared error rate: one interval and four outcomes, boundaries against published tables,
seeds in stages calibrated by simulation, and a staged study that gives seeds only to undecided systems."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.gains import EQUIVALENT, HELPS, HURTS, INCONCLUSIVE
from fusionkit.evaluation.sequential import (SeedDesign, fixed_seeds_for_power, obrien_fleming_boundaries,
                                             obrien_fleming_spending, simulate_design)
from fusionkit.evaluation.verdicts import compare_pairs
from fusionkit.report import plots


# ---------------------------------------------------------------- boundaries

def test_obrien_fleming_boundaries_match_published_gsdesign_tables():
    # gsDesign(k=4, test.type=2, alpha=0.025, sfu=sfLDOF) and k=5: the symmetric two-sided bounds at total 0.05
    four = obrien_fleming_boundaries((0.25, 0.5, 0.75, 1.0), 0.05)
    assert np.round(four, 2).tolist() == [4.33, 2.96, 2.36, 2.01]
    five = obrien_fleming_boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.05)
    assert np.round(five, 3).tolist() == [4.877, 3.357, 2.680, 2.290, 2.031]
    # one look is the fixed design: the two-sided normal quantile
    assert obrien_fleming_boundaries((1.0,), 0.05)[0] == pytest.approx(scipy.stats.norm.isf(0.025))


def test_the_boundaries_spend_exactly_the_declared_alpha_under_the_null():
    fractions = (0.15, 0.45, 0.7, 1.0)
    bounds = np.array(obrien_fleming_boundaries(fractions, 0.01))
    rng = np.random.default_rng(0)
    increments = rng.normal(size=(400_000, 4)) * np.sqrt(np.diff((0,) + fractions))
    z = np.cumsum(increments, axis=1) / np.sqrt(fractions)  # the Brownian motion of a group-sequential statistic
    crossed = (np.abs(z) >= bounds).any(axis=1).mean()
    assert crossed == pytest.approx(0.01, abs=4 * np.sqrt(0.01 * 0.99 / 400_000))
    assert obrien_fleming_spending(1.0, 0.01) == pytest.approx(0.01)


def test_seed_schedules_and_bad_designs():
    assert SeedDesign.staged(3, 20, 4).looks == (3, 9, 14, 20)
    assert SeedDesign.from_parameter([0, 1, 2, 3, 4]).looks == (5,)
    fixed = SeedDesign.from_parameter([0, 1, 2])
    assert fixed.nominal_level(3, 0.05, 6) == pytest.approx(0.05 / 6)  # Bonferroni over the family
    staged = SeedDesign.staged(3, 20, 4)
    levels = [staged.nominal_level(n, 0.05, 6) for n in staged.looks]
    assert levels == sorted(levels) and levels[-1] < 0.05 / 6  # early looks strict; the last near Bonferroni
    assert staged.look_of(10) == 1 and staged.look_of(20) == 3
    with pytest.raises(InputError, match="first <= max"):
        SeedDesign.staged(5, 3, 2)


# ---------------------------------------------------------------- four outcomes, one interval

def seed_results(gains: dict, spread: float = 0.3, seeds: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(seeds):
        control = 0.8 + rng.normal(0, 0.02)
        rows.append({"system": "control", "seed": seed, "target": "t", "train_size": 100, "accuracy": control})
        rows += [{"system": system, "seed": seed, "target": "t", "train_size": 100,
                  "accuracy": control + (gain + rng.normal(0, spread)) / 100} for system, gain in gains.items()]
    return pd.DataFrame(rows)


def test_four_outcomes_on_constructed_cases_with_figure_and_table_agreeing():
    cases = {"helps": 4.0, "hurts": -4.0, "equivalent": 0.0, "inconclusive": 1.0}
    results = seed_results(cases)
    noisy = results["system"] == "inconclusive"  # its interval spans 0 and the margin
    results.loc[noisy, "accuracy"] += np.random.default_rng(9).normal(0, 0.03, noisy.sum())
    table = compare_pairs(results, [(system, "control") for system in cases], min_effect=1.0)
    assert dict(zip(table["system"], table["verdict"])) == {
        "helps": HELPS, "hurts": HURTS, "equivalent": EQUIVALENT, "inconclusive": INCONCLUSIVE}
    # the interval is simultaneous: each at alpha/4, so wider than the 95% one of the same seeds
    assert table["confidence"].tolist() == pytest.approx([1 - 0.05 / 4] * 4)
    # a t-interval at that level, and the adjusted p below alpha exactly when it excludes 0
    assert ((table["p_adjusted"] < 0.05) == ((table["ci_low"] > 0) | (table["ci_high"] < 0))).all()
    # the figure draws exactly those intervals and says those words
    figure = plots.gain_forest(table)
    axes = figure.axes[0]
    drawn = sorted((round(seg[0][0], 9), round(seg[1][0], 9)) for collection in axes.collections
                   for seg in collection.get_segments())
    assert drawn == sorted((round(lo, 9), round(hi, 9)) for lo, hi in zip(table["ci_low"], table["ci_high"]))
    words = {text.get_text() for text in axes.texts}
    assert set(table["verdict"]) <= words
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert any("simultaneous 95% (Bonferroni over 4)" in label for label in legend)


def test_equivalent_is_two_one_sided_tests_as_statsmodels_computes_them():
    from statsmodels.stats.weightstats import ttost_paired

    results = seed_results({"same": 0.1, "near": 0.8}, spread=0.4)
    table = compare_pairs(results, [("same", "control"), ("near", "control")], min_effect=1.0).set_index("system")
    control = results[results["system"] == "control"].sort_values("seed")["accuracy"].to_numpy() * 100
    for system, row in table.iterrows():
        fused = results[results["system"] == system].sort_values("seed")["accuracy"].to_numpy() * 100
        p_tost = ttost_paired(fused, control, -1.0, 1.0)[0]
        level = 1 - row["confidence"]
        assert (row["verdict"] == EQUIVALENT) == (p_tost < level / 2)


def test_a_gain_that_rounds_onto_the_minimum_effect_is_shown_to_two_decimals():
    results = seed_results({"just_below": 0.96}, spread=0.001)
    row = compare_pairs(results, [("just_below", "control")], min_effect=1.0).iloc[0]
    assert f"{row['gain']:+.2f} accuracy points" in row["sentence"] and "+1.0 accuracy" not in row["sentence"]


# ---------------------------------------------------------------- seeds in stages, by simulation

DESIGN = SeedDesign.staged(3, 20, 4)
N_STUDIES = 1500


def test_under_the_null_the_family_error_rate_stays_at_alpha():
    """1,500 simulated studies of 6 comparisons with no effect, looked at 4 times: the share with any false helps or
    hurts is at most alpha (within 2 Monte-Carlo standard errors)."""
    result = simulate_design(DESIGN, [0.0] * 6, sd=2.0, alpha=0.05, min_effect=1.0, n_studies=N_STUDIES, seed=1)
    assert result["family_error"] <= 0.05 + 2 * result["family_error_se"]
    # and peeking with the fixed-design critical value at every look would not have held it
    naive = SeedDesign((20,))
    rng = np.random.default_rng(1)
    differences = rng.normal(0.0, 2.0, size=(N_STUDIES, 20, 6))
    level = naive.nominal_level(20, 0.05, 6)
    false = np.zeros((N_STUDIES, 6), dtype=bool)
    for n in DESIGN.looks:
        t = differences[:, :n].mean(axis=1) / (differences[:, :n].std(axis=1, ddof=1) / np.sqrt(n))
        false |= np.abs(t) > scipy.stats.t.isf(level / 2, n - 1)
    assert false.any(axis=1).mean() > result["family_error"]


def test_a_true_gain_of_min_effect_plus_one_is_decided_with_fewer_seeds_than_a_fixed_design():
    """A true gain of min_effect + 1 point at a seed SD of 2 points (one of 6 comparisons): decided "helps" in at
    least 80% of studies within 20 seeds, spending fewer seeds on average than the fixed design of the same power."""
    result = simulate_design(DESIGN, [2.0] + [0.0] * 5, sd=2.0, alpha=0.05, min_effect=1.0, n_studies=N_STUDIES,
                             seed=2)
    power = float((result["outcomes"][:, 0] == HELPS).mean())
    assert power >= 0.80 and result["seeds"][:, 0].max() <= 20
    fixed = fixed_seeds_for_power(2.0, 2.0, 0.05, 6, power)
    assert result["seeds"][:, 0].mean() < fixed


# ---------------------------------------------------------------- a staged study

def test_a_staged_study_gives_more_seeds_only_to_undecided_systems(toy_task, toy_source):
    from fusionkit.study.design import StudyDesign
    from fusionkit.study.runner import Arm, StudyConfig

    other = toy_source.subsample(40)
    other.name = "other"
    arms = [Arm("probe", "linear_probe"), Arm("seq", "sequential", per_source=True, controls=[])]
    study = StudyConfig("toy", ["toysrc", "other"], arms, seeds={"first": 2, "max": 6, "looks": 3}, train_sizes=[30])
    assert study.seeds == list(range(6)) and study.seed_design.looks == (2, 4, 6)
    design = StudyDesign(study, toy_task, [toy_source, other])
    planned = design.final_runs(None, seeds=4, stopped={"seq (toysrc)": 2})
    seeds = {}
    for run in planned:
        seeds.setdefault(run.of or run.system, set()).add(run.run["seed"])
    assert seeds == {"probe": {0, 1}, "seq (toysrc)": {0, 1}, "seq (other)": {0, 1, 2, 3}}
    assert {p.system for p in planned if p.of == "seq (other)" and p.run["seed"] == 3} == {
        "seq (other): no source", "seq (other): tuned control"}  # its controls follow it


@pytest.mark.slow
def test_a_staged_study_runs_its_looks_and_resumes_without_training(data_dir, tmp_path, monkeypatch):
    """End to end on the tiny encoder: after the first look (2 seeds) the systems the primary comparisons decide
    stop; the others and their controls get the third seed. Run again over the full store, it trains nothing."""
    import fusionkit.study.runner
    from fusionkit.study.design import primary_comparisons
    from fusionkit.study.executors import run_study
    from fusionkit.study.profiles import study_config

    overrides = {"seeds": {"first": 2, "max": 3, "looks": 2}, "tuning_budget": 1, "task_train_cap": 60,
                 "validation_cap": 20, "test_cap": 40, "cka_examples": 8, "fusion_size": 30,
                 "expert_knobs": {"expert_train_size": 40, "expert_epochs": 1, "expert_validation_size": 20},
                 "train_knobs": {"epochs": 1, "batch_size": 16},
                 "fusion_arms": [{"system": "sequential", "strategy": "sequential", "per_source": True,
                                  "controls": []},
                                 {"system": "merge", "strategy": "merge", "controls": []}]}
    study = study_config("smoke", "fusion", "cr", ["mr", "subj"], str(tmp_path), str(data_dir), overrides)
    results = run_study(study, progress=False)
    first_look = primary_comparisons(results[results["seed"] < 2], study.alpha, study.min_effect, study.seed_design)
    decided = set(first_look.loc[first_look["verdict"] != INCONCLUSIVE, "system"])
    for system in results.loc[results["role"] == "fusion", "system"].unique():
        own = results[(results["system"] == system) | (results["of"] == system)]
        expected = {0, 1} if system in decided else {0, 1, 2}
        assert set(own["seed"]) == expected, system
    final = primary_comparisons(results, study.alpha, study.min_effect, study.seed_design)
    assert set(final.loc[final["system"].isin(decided), "look"]) <= {1}
    assert set(final.loc[~final["system"].isin(decided), "look"]) <= {2}

    def no_training(*args, **kwargs):
        raise AssertionError("a run was fitted although every run is stored")

    monkeypatch.setattr(fusionkit.study.runner.StudyRunner, "run", no_training)
    again = run_study(study, progress=False)
    assert sorted(again["run_id"]) == sorted(results["run_id"])


# ---------------------------------------------------------------- small-n rank statistics

def test_small_n_rank_correlations_have_exact_p_values():
    from fusionkit.evaluation.transferability import rank_correlation

    perfect = rank_correlation([0.1, 0.5, 0.9], [1.0, 2.0, 3.0])
    assert perfect["spearman_p"] == pytest.approx(2 / 6) and perfect["kendall_p"] == pytest.approx(2 / 6)
    # 5 pairs, one swap: Kendall tau 0.8; orderings with |tau| >= 0.8 are 2 x (1 + 4) of 120
    swapped = rank_correlation([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert swapped["kendall_tau"] == pytest.approx(0.8) and swapped["kendall_p"] == pytest.approx(10 / 120)
    assert swapped["p_method"].startswith("exact")
    assert rank_correlation(np.arange(10), np.arange(10) ** 2)["p_method"] == "asymptotic"


# ---------------------------------------------------------------- the matrix's statistics

def test_the_best_source_is_chosen_on_validation_with_ties_and_thin_choices_named():
    from fusionkit.report.matrix import best_source_on_validation

    cells = pd.DataFrame({"target": ["sst2"] * 3 + ["subj"] * 3 + ["cr"] * 3,
                          "source": ["cr", "mr", "trec"] * 2 + ["mr", "subj", "trec"],
                          "gain": [7.25, 7.25, 1.0, 3.0, 1.0, -2.0, 5.0, 0.5, 9.0],  # test gains
                          "val_accuracy": [0.80, 0.80, 0.70, 0.70, 0.7025, 0.60, 0.90, 0.80, 0.85]})
    chosen = best_source_on_validation(cells, {"sst2": 200, "subj": 400, "cr": 200})
    best = chosen[chosen["chosen"]].set_index("target")
    assert best["source"].to_dict() == {"sst2": "cr", "subj": "mr", "cr": "mr"}  # never trec's 9.0 on cr's test
    assert best.loc["sst2", "choice"].startswith("tie on validation with mr")
    assert best.loc["subj", "choice"].startswith("thin: ahead of cr by 1.0 validation example")
    assert best.loc["cr", "choice"] == "ahead by 10.0 validation examples on average"
    assert chosen.groupby("target")["chosen"].sum().eq(1).all()


def test_the_asymmetry_test_permutes_task_labels_and_holds_its_level():
    from fusionkit.evaluation.stats import asymmetry_test

    symmetric = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], dtype=float)
    result = asymmetry_test(symmetric)
    assert result["spearman_rho"] == pytest.approx(1.0) and result["n_pairs"] == 6 and result["method"] == "exact"
    rng = np.random.default_rng(0)
    p_values = [asymmetry_test(rng.normal(size=(4, 4)))["p_value"] for _ in range(300)]
    assert np.mean(np.array(p_values) <= 0.1) <= 0.1 + 2 * np.sqrt(0.1 * 0.9 / 300)
    with pytest.raises(InputError, match="both directions"):
        asymmetry_test(np.where(np.eye(4, k=1) > 0, np.nan, symmetric))


# ---------------------------------------------------------------- where the variance comes from

def test_the_variance_split_recovers_known_components_and_agrees_with_statsmodels_anova():
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    from fusionkit.evaluation.stats import crossed_variance_components

    rng = np.random.default_rng(4)
    truth = {"data": 4.0, "seed": 1.0, "interaction": 0.5}
    estimates = []
    for _ in range(3000):  # simulated studies, 4 data seeds x 4 seeds each
        grid = (rng.normal(0, np.sqrt(truth["data"]), (4, 1)) + rng.normal(0, np.sqrt(truth["seed"]), (1, 4))
                + rng.normal(0, np.sqrt(truth["interaction"]), (4, 4)))
        estimates.append(crossed_variance_components(grid))
    for name, value in truth.items():  # floored at 0, so unbiased up to a small upward push
        assert np.mean([e[name] for e in estimates]) == pytest.approx(value, rel=0.1)
    one = crossed_variance_components(grid)
    frame = pd.DataFrame([(i, j, grid[i, j]) for i in range(4) for j in range(4)], columns=["data", "seed", "y"])
    table = sm.stats.anova_lm(smf.ols("y ~ C(data) + C(seed)", frame).fit())
    mean_squares = table["sum_sq"] / table["df"]
    assert one["ms_data"] == pytest.approx(mean_squares["C(data)"])
    assert one["ms_seed"] == pytest.approx(mean_squares["C(seed)"])
    assert one["ms_residual"] == pytest.approx(mean_squares["Residual"])
    assert one["share_data"] + one["share_seed"] + one["share_interaction"] == pytest.approx(1.0)


def test_a_variance_split_plans_the_seed_grid_for_both_sides_and_the_table_reads_it(toy_task, toy_source):
    from fusionkit.evaluation.stats import crossed_variance_components
    from fusionkit.report.tables import variance_split_table
    from fusionkit.study.design import VARIANCE, StudyDesign
    from fusionkit.study.runner import Arm, StudyConfig

    arms = [Arm("probe", "linear_probe"), Arm("seq", "sequential", per_source=True, controls=[])]
    study = StudyConfig("toy", ["toysrc"], arms, seeds=[0, 1, 2], train_sizes=[30], variance_split=2)
    planned = StudyDesign(study, toy_task, [toy_source]).final_runs(None)
    grid = [p for p in planned if p.role == VARIANCE]
    # seeds 0 and 1 each with the other's data seed, for the fusion system and for its matched control
    assert sorted((p.system, p.run["seed"], p.run["data_seed"]) for p in grid) == sorted(
        (name, seed, 1 - seed) for name in ("seq (toysrc): crossed seeds", "seq (toysrc): no source, crossed seeds")
        for seed in (0, 1))
    assert all("data_seed" not in p.run for p in planned if p.role != VARIANCE)  # the study's own runs keep their ids
    # a planted gain grid: gain[data seed, seed] in points
    planted = np.array([[3.0, 1.0], [5.0, 2.0]])
    rows = []
    for p in planned:
        data_seed = p.run.get("data_seed", p.run["seed"])
        fused = p.system in ("seq (toysrc)", "seq (toysrc): crossed seeds")
        gain = planted[data_seed, p.run["seed"]] if data_seed < 2 and p.run["seed"] < 2 else 0.0
        rows.append({"system": p.system, "role": p.role, "of": p.of, "detail": p.detail,
                     "primary_control": p.primary, "seed": p.run["seed"], "train_size": 30,
                     "data_seed": p.run.get("data_seed", np.nan), "accuracy": 0.7 + (gain / 100 if fused else 0)})
    table = variance_split_table(pd.DataFrame(rows)).iloc[0]
    expected = crossed_variance_components(planted)
    assert table["system"] == "seq (toysrc)" and (table["data_seeds"], table["seeds"]) == (2, 2)
    for name in ("data", "seed", "interaction", "share_data"):
        assert table[name] == pytest.approx(expected[name])


@pytest.mark.slow
def test_a_variance_split_runs_end_to_end_with_the_data_seed_drawing_the_training_examples(data_dir, tmp_path):
    from fusionkit.report.tables import variance_split_table
    from fusionkit.study.executors import run_study
    from fusionkit.study.profiles import study_config

    overrides = {"variance_split": 2, "tuning_budget": 1, "task_train_cap": 60, "validation_cap": 20,
                 "test_cap": 40, "cka_examples": 8, "fusion_size": 30, "train_knobs": {"epochs": 1, "batch_size": 16},
                 "expert_knobs": {"expert_train_size": 40, "expert_epochs": 1, "expert_validation_size": 20},
                 "fusion_arms": [{"system": "sequential", "strategy": "sequential", "per_source": True,
                                  "controls": []}]}
    study = study_config("smoke", "fusion", "cr", ["mr"], str(tmp_path), str(data_dir), overrides)
    results = run_study(study, progress=False)
    crossed = results[results["role"] == "variance"]
    assert len(crossed) == 4 and set(crossed["data_seed"]) == {0, 1}
    # the data seed draws the training examples: seed 0 on data seed 1 saw seed 1's sample, not seed 0's
    from fusionkit.study.runner import load_study_tasks
    target, _ = load_study_tasks(study)
    assert target.subsample(30, 1).fingerprint() != target.subsample(30, 0).fingerprint()
    table = variance_split_table(results)
    assert table["system"].tolist() == ["sequential (mr)"] and (table[["data", "seed", "interaction"]] >= 0).all().all()


def test_a_bad_seed_design_is_named_before_any_work():
    from fusionkit.errors import ConfigError
    from fusionkit.study.profiles import profile_parameters

    with pytest.raises(ConfigError, match=r"parameter seeds: first \(5\) must be at most max \(3\)"):
        profile_parameters("smoke", {"seeds": {"first": 5, "max": 3, "looks": 2}})
    with pytest.raises(ConfigError, match="parameter seeds.looks: Field required"):
        profile_parameters("smoke", {"seeds": {"first": 2, "max": 6}})
    with pytest.raises(ConfigError, match="parameter seeds.0: Input should be greater than or equal to 0, got -1$"):
        profile_parameters("smoke", {"seeds": [-1]})
    with pytest.raises(ConfigError, match="parameter variance_split: 3 seeds crossed with 3 data seeds need at least"):
        profile_parameters("smoke", {"variance_split": 3})


def test_the_pooled_mixed_model_recovers_each_sources_effect_over_the_matrix():
    from fusionkit.evaluation.stats import pooled_source_effects

    rng = np.random.default_rng(5)
    effects = {"a": 2.0, "b": 0.0, "c": -1.0, "d": 0.5, "e": 1.0}
    estimates, covered = {s: [] for s in effects}, {s: [] for s in effects}
    for _ in range(60):  # simulated 5-task matrices, 3 seeds per cell, target and cell effects shared by seeds
        rows = []
        for target in effects:
            shift = rng.normal(0, 1.0)
            for source in effects:
                if source != target:
                    cell = rng.normal(0, 0.5)
                    rows += [{"target": target, "source": source, "seed": seed,
                              "gain": effects[source] + shift + cell + rng.normal(0, 1.5)} for seed in range(3)]
        table = pooled_source_effects(pd.DataFrame(rows)).set_index("source")
        for source, effect in effects.items():
            estimates[source].append(table.loc[source, "effect"])
            covered[source].append(table.loc[source, "ci_low"] <= effect <= table.loc[source, "ci_high"])
    for source, effect in effects.items():
        assert np.mean(estimates[source]) == pytest.approx(effect, abs=0.35)
    assert np.mean([np.mean(c) for c in covered.values()]) >= 0.85  # Wald intervals over 5 targets: near 95%
    with pytest.raises(InputError, match="at least 3 targets"):
        pooled_source_effects(pd.DataFrame(rows[:12]))
