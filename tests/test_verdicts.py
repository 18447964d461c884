"""compare_to_baseline reaches the right verdict on clear cases and writes sentences that carry the numbers."""
import numpy as np
import pandas as pd
import pytest

from fusionkit.errors import InputError
from fusionkit.evaluation.verdicts import compare_to_baseline, methods_header, verdict_sentences


def run(strategy, sources, seed, accuracy, nll=0.5, target="cr", train_size=512):
    return dict(target=target, train_size=train_size, strategy=strategy, sources=sources, seed=seed,
                accuracy=accuracy, nll=nll)


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        base = 0.80 + rng.normal(0, 0.005)
        rows += [run("finetune", "", seed, base, nll=0.45),
                 run("attention", "mr,subj", seed, base + 0.03 + rng.normal(0, 0.003), nll=0.40),
                 run("concat", "trec", seed, base - 0.02 + rng.normal(0, 0.003)),
                 run("average", "mr", seed, base + rng.normal(0, 0.01))]
    return pd.DataFrame(rows)


def test_verdicts_on_clear_cases(results):
    table = compare_to_baseline(results, "finetune").set_index("strategy")
    assert table["verdict"].to_dict() == {"attention": "helps", "concat": "hurts (negative transfer)",
                                          "average": "inconclusive"}
    assert table.loc["attention", "gain"] == pytest.approx(100 * (
        results.query("strategy == 'attention'")["accuracy"].mean()
        - results.query("strategy == 'finetune'")["accuracy"].mean()))
    assert (table["test"] == "paired t-test").all() and (table["n_fused"] == 5).all()
    assert (table["p_adjusted"] >= table["p_value"]).all()
    # one interval: the verdict's, at alpha/3 each (Bonferroni over the 3 rows), wider than a 95% one
    assert table["confidence"].tolist() == pytest.approx([1 - 0.05 / 3] * 3) and (table["comparisons"] == 3).all()


def test_table_has_the_documented_columns(results):
    table = compare_to_baseline(results, "finetune")
    assert list(table.columns[:12]) == ["target", "train_size", "strategy", "sources", "baseline", "metric", "gain",
                                        "ci_low", "ci_high", "p_value", "p_adjusted", "verdict"]
    assert "sentence" in table.columns


def test_sentences_carry_the_numbers(results):
    table = compare_to_baseline(results, "finetune")
    sentences = verdict_sentences(table)
    row = table.set_index("strategy").loc["attention"]
    sentence = sentences[table["strategy"].tolist().index("attention")]
    assert sentence.startswith("attention (sources mr,subj) vs finetune on cr at n=512: ")
    assert (f"{row['gain']:+.1f} accuracy points [simultaneous 95% interval {row['ci_low']:.1f}, "
            f"{row['ci_high']:.1f}]") in sentence
    assert "adjusted over 3 comparisons (paired t-test, 5 paired seeds): helps" in sentence
    assert all(sentence.endswith(verdict) for sentence, verdict in zip(sentences, table["verdict"]))


def test_header_states_test_correction_and_thresholds(results):
    header = methods_header(compare_to_baseline(results, "finetune", alpha=0.01, min_effect=0.5))
    for phrase in ("paired t-test", "Welch", "Bonferroni", "simultaneous at 99% over the 3 comparisons",
                   "alpha 0.01/3", "|gain| >= 0.5 accuracy points", "inside +/-0.5", "below 0.01 exactly"):
        assert phrase in header


def test_min_effect_turns_a_small_significant_gain_inconclusive_or_equivalent(results):
    # every interval inside +/-5 points: each difference is too small to matter, a decided outcome
    assert (compare_to_baseline(results, "finetune", min_effect=5.0)["verdict"] == "equivalent").all()
    attention = compare_to_baseline(results, "finetune").set_index("strategy").loc["attention"]
    between = (attention["gain"] + attention["ci_high"]) / 2  # above the gain, inside its interval
    row = compare_to_baseline(results, "finetune", min_effect=between).set_index("strategy").loc["attention"]
    assert row["ci_low"] > 0 and row["verdict"] == "inconclusive"
    assert "the interval excludes 0, but the gain is below the declared minimum effect" in row["sentence"]


def test_lower_is_better_metric_reads_a_drop_as_help(results):
    noisy = results.assign(nll=results["nll"] + np.random.default_rng(1).normal(0, 0.002, len(results)))
    table = compare_to_baseline(noisy, "finetune", metric="nll").set_index("strategy")
    assert table.loc["attention", "verdict"] == "helps"
    assert "nll (lower is better)" in table.loc["attention", "sentence"]


def test_unpaired_seeds_use_welch_and_single_runs_stay_untested(results):
    shifted = results.assign(seed=np.where(results["strategy"] == "attention", results["seed"] + 100, results["seed"]))
    extra = pd.DataFrame([run("single", "mr", 0, 0.95)])
    table = compare_to_baseline(pd.concat([shifted, extra]), "finetune").set_index("strategy")
    assert table.loc["attention", "test"] == "Welch's t-test"
    assert np.isnan(table.loc["single", "p_adjusted"]) and table.loc["single", "verdict"] == "inconclusive"
    assert "not tested (fewer than 2 seeds) (1 vs 5 seeds)" in table.loc["single", "sentence"]


def test_the_same_difference_on_every_seed_is_not_evidence(results):
    # t would be infinite and p zero; the comparison is reported, untested, instead.
    baseline = results[results["strategy"] == "finetune"]
    constant = baseline.assign(strategy="distill", sources="mr", accuracy=baseline["accuracy"] + 0.005)
    row = compare_to_baseline(pd.concat([baseline, constant]), "finetune").iloc[0]
    assert np.isnan(row["p_adjusted"]) and row["verdict"] == "inconclusive"
    assert row["gain"] == pytest.approx(0.5) and "the same difference on every seed" in row["sentence"]


def test_a_target_only_baseline_is_better_or_worse_not_transfer(results):
    baseline = results[results["strategy"] == "finetune"]
    rng = np.random.default_rng(3)
    worse = baseline.assign(strategy="scratch", accuracy=baseline["accuracy"] - 0.2 + rng.normal(0, 0.003, 5))
    row = compare_to_baseline(pd.concat([baseline, worse]), "finetune").iloc[0]
    assert row["verdict"] == "worse" and "negative transfer" not in row["sentence"]


def test_distinguish_by_splits_one_strategy_into_systems(results):
    second_arm = results[results["strategy"] == "attention"].assign(label="attention, lr 1e-4",
                                                                   accuracy=lambda runs: runs["accuracy"] - 0.05)
    table = compare_to_baseline(pd.concat([results.assign(label="main"), second_arm]), "finetune",
                                distinguish_by=["label"])
    attention = table[table["strategy"] == "attention"].set_index("label")
    assert attention["verdict"].to_dict() == {"main": "helps", "attention, lr 1e-4": "hurts (negative transfer)"}
    assert attention.loc["main", "system"] == "attention (sources mr,subj), label=main"


def test_bad_tables_raise_clear_errors(results):
    with pytest.raises(InputError, match="baseline 'lora' has no runs"):
        compare_to_baseline(results, "lora")
    with pytest.raises(InputError, match="no 'finetune' runs at target=mr, train_size=512 to compare strategy="):
        compare_to_baseline(pd.concat([results, pd.DataFrame([run("attention", "cr", 0, 0.7, target="mr")])]),
                            "finetune")
    with pytest.raises(InputError, match="runs of target=cr, .*, sources=mr,subj include several with seed 0"):
        compare_to_baseline(pd.concat([results, results.head(2)]), "finetune")
    with pytest.raises(InputError, match="results lacks column\\(s\\) \\['macro_f1'\\]"):
        compare_to_baseline(results, "finetune", metric="macro_f1")


def test_example_level_comparison_reads_the_stored_predictions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    stored, rows = {}, []
    for seed in range(2):
        for strategy, accuracy in (("finetune", 0.75), ("sequential", 0.85)):
            pred = np.where(rng.random(500) < accuracy, y, 1 - y)
            run_id = f"{strategy}-{seed}"
            stored[run_id] = (y, np.eye(2)[pred] * 0.8 + 0.1)
            rows.append({**run(strategy, "mr" if strategy == "sequential" else "", seed, (pred == y).mean()),
                         "run_id": run_id})
    table = compare_to_baseline(pd.DataFrame(rows), "finetune", predictions=stored.__getitem__)
    row = table.iloc[0]
    assert row["verdict"] == "helps" and row["test"] == "paired permutation test over test examples"
    assert row["gain"] == pytest.approx(100 * np.mean([rows[1]["accuracy"] - rows[0]["accuracy"],
                                                       rows[3]["accuracy"] - rows[2]["accuracy"]]))
    assert "averaged over 2 shared seeds" in row["sentence"]
    assert "permutation test over test examples" in methods_header(table)
