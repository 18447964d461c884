"""Gains, negative-transfer verdicts, forgetting, learning curves and cost records give the numbers a report needs."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fusionkit.evaluation import gains as transfer
from fusionkit.evaluation.gains import EXAMPLE_TEST, example_gain
from fusionkit.errors import InputError

BASELINE = np.array([0.80, 0.82, 0.79, 0.81, 0.80])


def test_paired_gain_is_the_mean_difference_with_the_paired_t_interval():
    fused = BASELINE + [0.02, 0.03, 0.025, 0.015, 0.02]
    gain = transfer.transfer_gain(fused, BASELINE)
    reference = scipy.stats.ttest_rel(fused, BASELINE)
    assert gain.absolute == pytest.approx(0.022)
    assert gain.relative == pytest.approx(0.022 / BASELINE.mean())
    assert (gain.ci_low, gain.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert gain.p_value == pytest.approx(reference.pvalue)
    assert (gain.test, gain.method, gain.n_fused) == ("paired t-test", "t", 5)


def test_unpaired_gain_uses_welch_and_accepts_different_seed_counts():
    fused = np.array([0.83, 0.85, 0.84])
    gain = transfer.transfer_gain(fused, BASELINE, paired=False)
    reference = scipy.stats.ttest_ind(fused, BASELINE, equal_var=False)
    assert gain.test == "Welch's t-test"
    assert (gain.ci_low, gain.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)))


def test_bootstrap_interval_is_reproducible_and_brackets_the_gain():
    fused = BASELINE + [0.02, 0.03, 0.025, 0.015, 0.02]
    first = transfer.transfer_gain(fused, BASELINE, method="bootstrap", seed=3)
    assert first == transfer.transfer_gain(fused, BASELINE, method="bootstrap", seed=3)
    assert first.ci_low <= first.absolute <= first.ci_high
    assert first.method == "bootstrap"


def test_paired_gain_needs_one_score_per_seed_on_both_sides():
    with pytest.raises(InputError, match="length mismatch: fused_scores has 3, baseline_scores has 5 seeds"):
        transfer.transfer_gain([0.8, 0.81, 0.82], BASELINE)
    with pytest.raises(InputError, match="method must be one of"):
        transfer.transfer_gain(BASELINE, BASELINE, method="jackknife")


def test_negative_transfer_flags_only_the_significantly_worse_system():
    systems = {"mr": BASELINE + 0.03 + [0.001, -0.002, 0.0, 0.002, -0.001],
               "trec": BASELINE - 0.02 + [0.001, -0.001, 0.002, 0.0, -0.002],
               "subj": BASELINE + [0.01, -0.01, 0.005, -0.005, 0.0]}
    gains = [transfer.transfer_gain(scores, BASELINE) for scores in systems.values()]
    table = transfer.judge_gains(gains, alpha=0.05, min_effect=0.005).assign(system=list(systems))
    assert table.set_index("system")["verdict"].to_dict() == {
        "mr": transfer.HELPS, "trec": transfer.HURTS, "subj": transfer.INCONCLUSIVE}
    assert transfer.negative_transfer(table)["system"].tolist() == ["trec"]
    assert table["p_adjusted"].tolist() == pytest.approx(table["p_value"].tolist())  # 95% intervals judged at alpha 0.05: as they are
    strict = transfer.judge_gains(gains, min_effect=0.05)
    assert transfer.negative_transfer(strict).empty


def test_four_outcomes_read_one_interval():
    assert transfer.outcome(2.0, 0.5, 3.5, min_effect=1.0) == transfer.HELPS
    assert transfer.outcome(-2.0, -3.5, -0.5, min_effect=1.0) == transfer.HURTS
    assert transfer.outcome(0.1, -0.8, 0.9, min_effect=1.0) == transfer.EQUIVALENT
    assert transfer.outcome(0.1, -1.2, 1.4, min_effect=1.0) == transfer.INCONCLUSIVE
    assert transfer.outcome(0.8, 0.2, 1.4, min_effect=1.0) == transfer.INCONCLUSIVE  # excludes 0, below the minimum
    assert transfer.outcome(0.1, -0.8, 0.9, min_effect=0.0) == transfer.INCONCLUSIVE  # no margin: never equivalent
    assert transfer.outcome(-0.1, -0.15, -0.05, higher_is_better=False) == transfer.HELPS
    assert transfer.outcome(-0.1, float("nan"), float("nan")) == transfer.INCONCLUSIVE


def test_forgetting_is_the_drop_in_the_source_score():
    assert transfer.forgetting(0.90, 0.85) == pytest.approx(0.05)
    assert transfer.forgetting(0.85, 0.90) == pytest.approx(-0.05)


def test_aulc_normalises_by_the_x_range():
    assert transfer.aulc([64, 128, 256, 512], [0.7] * 4) == pytest.approx(0.7)
    # Linear in log2(size) from 0 to 1: the mean height is 0.5.
    assert transfer.aulc([8, 2, 4], [1.0, 0.0, 0.5]) == pytest.approx(0.5)
    # Trapezoids on the raw axis: (0 + 1) / 2 * 1 + (1 + 1) / 2 * 2 = 2.5 over a range of 3.
    assert transfer.aulc([1, 2, 4], [0.0, 1.0, 1.0], log_x=False) == pytest.approx(2.5 / 3)


def test_aulc_rejects_repeated_sizes():
    with pytest.raises(InputError, match="average seeds first"):
        transfer.aulc([64, 64, 128], [0.7, 0.72, 0.8])


def test_learning_curve_averages_seeds_per_train_size():
    runs = pd.DataFrame({"target": "cr", "strategy": "finetune", "sources": "",
                         "train_size": [64, 64, 64, 128], "seed": [0, 1, 2, 0],
                         "accuracy": [0.70, 0.72, 0.74, 0.80]})
    curve = transfer.learning_curve(runs, "accuracy").set_index("train_size")
    assert curve.loc[64, "mean"] == pytest.approx(0.72)
    half_width = scipy.stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3)
    assert (curve.loc[64, "ci_low"], curve.loc[64, "ci_high"]) == pytest.approx((0.72 - half_width, 0.72 + half_width))
    assert curve.loc[128, "n_seeds"] == 1 and np.isnan(curve.loc[128, "ci_low"])


def test_cost_is_stored_as_a_plain_dict_and_checked():
    cost = transfer.Cost(trainable_params=1_000, train_seconds=12.5, infer_ms_per_example=0.3, model_flops=2e12,
                         inference_params=4_000, encoders_at_inference=2)
    assert cost.as_dict() == {"trainable_params": 1_000, "train_seconds": 12.5, "infer_ms_per_example": 0.3,
                              "model_flops": 2e12, "inference_params": 4_000, "encoders_at_inference": 2}
    with pytest.raises(InputError, match="train_seconds must be a finite number >= 0, got -1"):
        transfer.Cost(trainable_params=1, train_seconds=-1, infer_ms_per_example=0.1)


def one_hot(predictions, k=2):
    return np.eye(k)[np.asarray(predictions)] * 0.8 + 0.1


def test_example_gain_on_a_hand_case():
    y = np.array([0, 1, 0, 1])
    fused, baseline = one_hot([0, 1, 0, 1]), one_hot([0, 1, 1, 0])
    gain = example_gain(y, [fused], [baseline])
    assert gain.absolute == pytest.approx(0.5)
    # Only the two differing examples matter: their signs agree under half of all flips.
    assert 0.45 < gain.p_value < 0.55
    assert gain.test == EXAMPLE_TEST and gain.relative == pytest.approx(1.0)


def test_example_gain_averages_each_example_over_seeds_and_detects_a_real_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    seeds_better = [one_hot(np.where(rng.random(600) < 0.85, y, 1 - y)) for _ in range(3)]
    seeds_worse = [one_hot(np.where(rng.random(600) < 0.75, y, 1 - y)) for _ in range(3)]
    gain = example_gain(y, seeds_better, seeds_worse)
    assert gain.ci_low > 0 and gain.p_value < 0.001 and gain.n_fused == 3
    assert example_gain(y, seeds_worse, seeds_better).absolute == pytest.approx(-gain.absolute)


@pytest.mark.parametrize("call, message", [
    (lambda y, p: example_gain(y, [p], [p], metric="mcc"), "per-example metric"),
    (lambda y, p: example_gain(y, [p, p], [p]), "same number"),
    (lambda y, p: example_gain(y, [], []), "same number"),
])
def test_example_gain_rejects_bad_input(call, message):
    with pytest.raises(InputError, match=message):
        call(np.array([0, 1]), one_hot([0, 1]))


# ---------------------------------------------------------------- failed runs (Dodge et al. 2020)

def test_a_collapsed_run_and_one_far_below_the_probe_are_failed():
    val = np.array([0.50, 0.62, 0.79, 0.81, 0.70])
    flags = transfer.failed_runs(val, majority_rate=0.50, probe_val_accuracy=0.75)
    assert flags.tolist() == [True, True, False, False, False]  # at the majority rate; 13 points below the probe
    assert transfer.failed_runs(val, 0.50).tolist() == [True, False, False, False, False]  # no probe: majority only
    with pytest.raises(InputError, match="majority_rate"):
        transfer.failed_runs(val, 1.5)


def test_failed_runs_are_counted_per_system_and_kept_in_the_means():
    from fusionkit.report import tables
    from fusionkit.report.page import system_summary

    rows = [{"target": "cr", "system": system, "role": "baseline", "train_size": 128, "seed": seed,
             "val_accuracy": val, "accuracy": val, "macro_f1": val, "ece": 0.1, "trainable_params": 1,
             "train_seconds": 1.0}
            for system, vals in {"linear_probe": [0.80, 0.80, 0.80], "finetune": [0.85, 0.60, 0.84]}.items()
            for seed, val in enumerate(vals)]
    rows.append({**rows[-1], "seed": 3, "val_accuracy": 0.63, "accuracy": 0.63})  # the planted collapse: majority
    flagged = tables.flag_failed_runs(pd.DataFrame(rows), {"cr": 0.63})
    assert flagged.groupby("system")["failed"].sum().to_dict() == {"finetune": 2, "linear_probe": 0}
    summary = system_summary(flagged).set_index("system")
    assert summary.loc["finetune", "failed_runs"] == 2
    assert summary.loc["finetune", "accuracy"] == pytest.approx(np.mean([0.85, 0.60, 0.84, 0.63]))  # kept
    assert "finetune 2 of 4" in tables.failed_runs_sentence(flagged, {"cr": 0.63})
