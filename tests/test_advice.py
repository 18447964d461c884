"""The advice paragraph says only what the report's tables hold: each number is read back from them here."""
import pandas as pd

from fusionkit.report.findings import advice


def tables(verdicts: list[str]):
    systems = ["sequential (mr)", "representation sum", "merge ties"]
    verdict_table = pd.DataFrame({"system": systems, "train_size": 128, "gain": [3.24, 2.0, 0.1],
                                  "ci_low": [1.02, 0.5, -0.6], "ci_high": [5.46, 3.5, 0.8], "verdict": verdicts,
                                  "seeds": 5, "seeds_needed": [12.0, 30.0, float("nan")],
                                  "vs_tuned_verdict": ["helps", "inconclusive", "inconclusive"]})
    cost = pd.DataFrame({"system": [*systems, "finetune", "linear_probe"], "train_size": 128,
                         "train_seconds_with_experts": [95.2, 40.4, 12.0, 14.5, 2.0],
                         "infer_ms_per_example": [3.5, 12.25, 3.4, 3.5, 0.8],
                         "encoders_at_inference": [1, 4, 1, 1, 1]})
    results = pd.DataFrame({"system": [*systems, "finetune", "linear_probe"], "train_size": 128,
                            "role": ["fusion"] * 3 + ["baseline"] * 2,
                            "val_accuracy": [0.85, 0.86, 0.80, 0.82, 0.84]})
    return verdict_table, cost, results


def test_advice_names_the_system_that_helps_with_its_numbers_and_cost():
    verdict_table, cost, results = tables(["helps", "helps", "equivalent"])
    words = advice(verdict_table, cost, results, 128, 1.0)
    # both help; the one that also helps against its tuned control wins, though the other is ahead on validation
    assert words[0] == ("Use sequential (mr): it helps against its matched control by +3.2 points [+1.0, +5.5], the "
                        "interval the verdict read; against its tuned control: helps. It costs 95 s of training per "
                        "run with its experts, 3.5 ms per test example with 1 encoder(s) at inference (finetune: "
                        "14 s, 3.5 ms).")
    assert words[1].startswith("Equivalent to their matched controls (within +/-1 points): merge ties")
    assert len(words) == 2  # nothing undecided


def test_when_nothing_helps_the_baseline_chosen_on_validation_is_advised_and_the_seeds_needed_said():
    verdict_table, cost, results = tables(["inconclusive", "inconclusive", "equivalent"])
    words = advice(verdict_table, cost, results, 128, 1.0)
    assert words[0] == ("Nothing fused helps at this study's error rate: use linear_probe, the target-only baseline "
                        "most accurate on validation (mean validation accuracy 0.840); it costs 2.0 s of training "
                        "per run with its experts, 0.8 ms per test example with 1 encoder(s) at inference "
                        "(finetune: 14 s, 3.5 ms).")
    assert words[2].startswith("Undecided: sequential (mr), representation sum. To decide a true effect of the "
                               "minimum 1 points, the design needs about 12 seeds (for sequential (mr); 5 ran)")
