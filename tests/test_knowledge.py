"""Knowledge of every kind as a source: a given model, a peft LoRA adapter, knowledge features of the target's rows."""
import json
import random

import numpy as np
import pytest
import torch

from fusionkit.errors import ConfigError, DataError
from fusionkit.evaluation.verdicts import compare_pairs
from fusionkit.report.findings import role_pairs
from fusionkit.study.executors import run_study
from fusionkit.study.runner import Arm, StudyConfig, load_study_tasks
from fusionkit.study import source_scores

FILLER = ["the", "phone", "screen", "battery", "it", "was", "really", "quite", "very", "case", "box", "light"]


def featured_csv(path, n=1000, seed=0):
    """Texts that say nothing of the label; a ``signal`` column that carries it, a ``noise`` column that does not,
    and ``vec``, a two-number vector per row (JSON), also carrying it."""
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    rows, seen = [], set()
    for i in range(n):
        label = i % 2
        while True:
            text = " ".join(rng.sample(FILLER, 6))
            if text not in seen:
                break
        seen.add(text)
        rows.append({"sentence": text, "y": "pos" if label else "neg", "signal": label + np_rng.normal(0, 0.1),
                     "noise": np_rng.normal(), "vec": json.dumps([float(label), float(np_rng.normal())])})
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def features_study(csv, workdir, column, seeds=(0, 1, 2, 3, 4)):
    target = {"path": str(csv), "text_column": "sentence", "label_column": "y", "name": "mine"}
    arms = [Arm("representation sum", "representation",
                {"mode": "sum", "layers": "last", "lr": 3e-3, "epochs": 25, "patience": 25, "batch_size": 16})]
    return StudyConfig(target, [{"features": column, "name": "lexicon"}], arms, seeds=list(seeds),
                       train_sizes=[100], encoder="tiny", max_length=16, workdir=str(workdir), cka_examples=8)


def verdict(results):
    pairs = role_pairs(results, "control", primary=True)
    return compare_pairs(results, pairs, alpha=0.05, min_effect=1.0).iloc[0]


def test_knowledge_feature_that_carries_the_label_helps(tmp_path):
    results = run_study(features_study(featured_csv(tmp_path / "mine.csv"), tmp_path / "w", "signal"), progress=False)
    row = verdict(results)
    assert row["baseline"] == "representation sum: no source"  # the same head on the encoder alone
    assert row["verdict"] == "helps" and row["gain"] > 20, row["sentence"]


def test_pure_noise_feature_does_not_help(tmp_path):
    results = run_study(features_study(featured_csv(tmp_path / "mine.csv"), tmp_path / "w", "noise"), progress=False)
    row = verdict(results)
    assert row["verdict"] != "helps", row["sentence"]
    assert row["ci_low"] < 1.0  # not even the interval excludes a gain below min_effect


def test_a_vector_column_is_one_source_and_the_fitted_model_predicts_from_examples(tmp_path):
    config = features_study(featured_csv(tmp_path / "mine.csv"), tmp_path / "w", "vec", seeds=[0])
    results = run_study(config, progress=False)
    fused = results[results["system"] == "representation sum"].iloc[0]
    assert fused["accuracy"] > 0.9
    target, sources = load_study_tasks(config)
    assert target.knowledge("lexicon", "test").shape == (len(target.test), 2)
    table = source_scores.transferability_table(target, {"lexicon": sources[0]},
                                                __import__("fusionkit").load_encoder("tiny", max_length=16), 60)
    row = table.set_index("source").loc["lexicon"]
    assert row["logme"] > table.set_index("source").loc["none (base)", "logme"] and np.isnan(row["leep"])


def test_knowledge_features_only_fuse_through_representation(tmp_path):
    csv = featured_csv(tmp_path / "mine.csv")
    target = {"path": str(csv), "text_column": "sentence", "label_column": "y"}
    arms = [Arm("merge", "merge"), Arm("representation", "representation")]
    config = StudyConfig(target, [{"features": ["signal", "noise"], "name": "lex"}], arms, encoder="tiny")
    from fusionkit.study.design import StudyDesign

    with pytest.warns(UserWarning, match="arm 'merge' \\(merge\\) runs without lex \\(features\\)"):
        design = StudyDesign(config, *load_study_tasks(config))
    assert {system for _, system, _, _ in design.systems()} == {"representation"}


def test_features_on_a_registered_task_are_refused_before_work():
    config = StudyConfig("cr", [{"features": "signal"}], [Arm("r", "representation")])
    with pytest.raises(ConfigError, match="columns of the target's own file.*registered task"):
        load_study_tasks(config)


def test_bad_knowledge_values_name_file_line_and_column(tmp_path):
    csv = featured_csv(tmp_path / "mine.csv")
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    broken = lines[5].split(",")
    broken[header.index("signal")] = "high"
    lines[5] = ",".join(broken)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    target = {"path": str(tmp_path / "bad.csv"), "text_column": "sentence", "label_column": "y"}
    config = StudyConfig(target, [{"features": "signal"}], [Arm("r", "representation")], encoder="tiny")
    with pytest.raises(DataError, match="bad.csv', line 6: knowledge column 'signal' is not a number \\('high'\\)"):
        load_study_tasks(config)


def test_source_entries_are_validated_with_what_is_allowed():
    with pytest.raises(ConfigError, match="source \\{'modle': 'x'\\} is not allowed.*\\{model: ...\\}"):
        StudyConfig("cr", [{"modle": "x"}], [])
    with pytest.raises(ConfigError, match="two sources are named \\['mr'\\]"):
        StudyConfig("cr", ["mr", "mr"], [])
    with pytest.raises(ConfigError, match="need a name"):
        StudyConfig("cr", [{"features": ["a", "b"]}], [])


# ---------------------------------------------------------------- given models and adapters

def save_model(folder, hidden=32, head=True, seed=1):
    """A small BERT saved as a transformers folder (safetensors, minilm's tokenizer), as a user would have one."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from fusionkit.modeling.encoders import TINY_CONFIG, load_tokenizer

    tokenizer = load_tokenizer("tiny")
    config = BertConfig(vocab_size=tokenizer.vocab_size, **{**TINY_CONFIG, "hidden_size": hidden},
                        id2label={0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if head else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_adapter(folder, seed=2):
    """A peft LoRA adapter on the tiny base encoder, with non-zero deltas."""
    from peft import LoraConfig, get_peft_model

    from fusionkit import load_encoder

    base = load_encoder("tiny")
    model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(folder)
    return str(folder)


def model_study(toy_csv, tmp_path, sources, arms, seeds=(0,)):
    return StudyConfig(str(toy_csv(tmp_path / "toy.csv", 120, seed=0)), sources, arms, seeds=list(seeds),
                       train_sizes=[60], encoder="tiny", max_length=16, workdir=str(tmp_path / "w"), cka_examples=8,
                       expert_knobs={"expert_train_size": 40, "expert_epochs": 1})


def test_given_model_of_another_width_fuses_by_representation_and_its_head_gives_leep(toy_csv, tmp_path):
    wide = save_model(tmp_path / "wide", hidden=48)
    config = model_study(toy_csv, tmp_path, [{"model": wide, "name": "wide"}],
                         [Arm("representation", "representation", {"mode": "sum", "epochs": 3})])
    results = run_study(config, progress=False)
    assert set(results["system"]) == {"representation", "representation: no source", "representation: tuned control"}
    row = results[results["system"] == "representation"].iloc[0]
    assert row["trainable_params"] > 48 * 32  # the learned projection from 48 to the base's 32 dimensions
    table = source_scores.study_transferability(config, 40)
    assert np.isfinite(table.set_index("source").loc["wide", ["logme", "leep", "nce"]].astype(float)).all()


def test_merging_or_sequential_with_another_architecture_is_a_clear_error(toy_csv, tmp_path):
    wide = save_model(tmp_path / "wide", hidden=48)
    for strategy in ("merge", "sequential"):
        config = model_study(toy_csv, tmp_path, [{"model": wide, "name": "wide"}], [Arm(strategy, strategy)])
        with pytest.raises(ConfigError, match="needs the study encoder's architecture \\('tiny'\\); source 'wide'"):
            run_study(config, progress=False)


def test_given_model_of_the_same_architecture_serves_sequential_and_merge_untrained(toy_csv, tmp_path):
    same = save_model(tmp_path / "same", hidden=32)
    arms = [Arm("sequential", "sequential", {"epochs": 1}, per_source=True),
            Arm("merge", "merge", {"scale": 0.5})]
    results = run_study(model_study(toy_csv, tmp_path, [{"model": same}], arms), progress=False)
    assert {"sequential (same)", "merge"} <= set(results["system"])
    assert not (tmp_path / "w" / "experts").exists()  # nothing was trained for the source


def test_lora_adapter_is_an_expert_whose_delta_is_merged(toy_csv, tmp_path):
    from fusionkit import load_encoder
    from fusionkit.strategies.experts import expert_backbone, expert_task_vector
    from fusionkit.strategies.knowledge import LoraAdapter

    adapter = LoraAdapter("mylora", save_adapter(tmp_path / "lora"))
    expert = adapter.expert({"encoder": "tiny", "pooling": "mean", "max_length": 16})
    base = load_encoder("tiny")
    base_state = base.model.state_dict()
    vector = expert_task_vector(expert, base_state)
    dense = expert_backbone(expert).state_dict()
    for key, delta in vector.items():  # the low-rank delta is exactly what peft merges into the weights
        torch.testing.assert_close(base_state[key] + delta, dense[key])
    arms = [Arm("merge", "merge", {"scale": 1.0}), Arm("representation", "representation", {"epochs": 2})]
    results = run_study(model_study(toy_csv, tmp_path, [{"adapter": adapter.path, "name": "mylora"}], arms),
                        progress=False)
    assert {"merge", "representation"} <= set(results["system"])


def test_adapter_folder_without_safetensors_is_refused(tmp_path):
    from fusionkit.strategies.knowledge import LoraAdapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ConfigError, match="holds no weights \\(needs adapter_model.safetensors\\)"):
        LoraAdapter("x", str(tmp_path)).expert({"encoder": "tiny", "pooling": "mean", "max_length": 16})


def test_changed_weights_at_the_same_path_change_the_runs_key(tmp_path):
    from fusionkit.strategies.knowledge import PretrainedModel

    path = save_model(tmp_path / "m", seed=1)
    before = PretrainedModel("m", path).fingerprint()
    save_model(tmp_path / "m", seed=2)
    assert PretrainedModel("m", path).fingerprint() != before


def test_a_matrix_of_file_tasks_fuses_knowledge_beside_the_pool_into_every_target(toy_csv, tmp_path):
    """Every kind works in the matrix too: a given model beside three file tasks is a source of every target and
    a row of the transfer matrix, and its label head gives it LEEP and NCE."""
    from fusionkit.report import matrix, matrix_run

    pool = [str(toy_csv(tmp_path / f"{name}.csv", 100, seed=seed)) for seed, name in enumerate(("ta", "tb", "tc"))]
    model = save_model(tmp_path / "given", hidden=32)
    run = matrix_run("smoke", pool, str(tmp_path / "w"), str(tmp_path / "out"), None,
                     {"seeds": [0, 1], "tuning_budget": 1}, sources=[{"model": model, "name": "given"}])
    assert run.target_names == ["ta", "tb", "tc"]
    results = matrix.matrix_results(run)
    cells = matrix.transfer_matrix(run, results).cells
    assert set(cells[cells["source"] == "given"]["target"]) == {"ta", "tb", "tc"}
    assert len(cells) == 3 * 2 + 3  # every ordered pair of the pool, and the given model into each target
    estimates = matrix.source_estimates(run)
    given = estimates[(estimates["source"] == "given") & estimates["estimator"].isin(["leep", "nce"])]
    assert len(given) == 6 and np.isfinite(given["score"]).all()
