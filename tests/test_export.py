"""Exported models load without fusionkit (transformers, sentence-transformers, peft) and predict what fusionkit
predicts; a report's run is refitted from its record and exported (tiny encoder)."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
from typer.testing import CliRunner

from fusionkit.cli import app
from fusionkit.errors import ConfigError, DataError, FusionkitWarning
from fusionkit.modeling.training import History
from fusionkit.strategies import FittedModel, get_strategy
from fusionkit.study.executors import run_study
from fusionkit.study.export_run import export_run, report_study_configs
from fusionkit.study.runner import load_study_tasks
from fusionkit.study.store import ResultsStore

FAST = {"epochs": 1, "batch_size": 16}
EXPERT = {"expert_train_size": 40, "expert_epochs": 1}
KNOBS = {"finetune": FAST, "lora": FAST, "sequential": {**FAST, **EXPERT}, "merge": {**EXPERT, "method": "ties"},
         "multitask": {**FAST, "source_train_size": 40}, "distill": {**FAST, **EXPERT},
         "representation": {**EXPERT, "epochs": 2, "layers": "all"}}
ATOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def fit(name, task, source, workdir, pooling="mean"):
    strategy = get_strategy(name, KNOBS[name], encoder="tiny", workdir=workdir, max_length=16, pooling=pooling)
    return strategy.fit(task, [source] if strategy.needs_sources else [], train_size=40)


def pooled_vectors(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def encode(encoder, tokenizer, texts, manifest) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=manifest["max_length"], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.eval()(**batch).last_hidden_state
    return pooled_vectors(hidden, batch["attention_mask"], manifest["pooling"])


def standard_predictions(folder, texts) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, pooled vectors) from the exported folder with transformers, safetensors and torch only."""
    manifest = json.loads((folder / "fusionkit_export.json").read_text())
    pooled = encode(AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), texts, manifest)
    head = load_file(folder / "classifier.safetensors")
    probabilities = torch.softmax(pooled @ head["weight"].T + head["bias"], dim=1)
    return probabilities.numpy(), pooled.numpy()


@pytest.mark.parametrize("name,pooling", [("finetune", "mean"), ("finetune", "cls"), ("sequential", "mean"),
                                          ("merge", "mean"), ("multitask", "mean"), ("distill", "mean")])
def test_transformers_and_sentence_transformers_reproduce_the_fitted_model(name, pooling, toy_task, toy_source,
                                                                           workdir, tmp_path):
    from sentence_transformers import SentenceTransformer

    fitted = fit(name, toy_task, toy_source, workdir, pooling)
    folder = fitted.export(tmp_path / "export")
    texts = list(toy_task.test["text"][:]) + ["a text longer than max_length, cut to it " * 4]
    probabilities, pooled = standard_predictions(folder, texts)
    np.testing.assert_allclose(probabilities, fitted.predict_proba(texts), atol=ATOL)
    manifest = json.loads((folder / "fusionkit_export.json").read_text())
    assert manifest["label_names"] == toy_task.label_names and manifest["strategy"] == name
    assert manifest["pooling"] == pooling and manifest["max_length"] == 16
    assert load_file(folder / "classifier.safetensors")["weight"].shape == (toy_task.num_labels, 32)
    encoded = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(encoded, pooled, atol=ATOL)


def test_a_lora_adapter_loads_with_peft_and_equals_the_merged_encoder(toy_task, workdir, tmp_path):
    from peft import PeftModel

    fitted = fit("lora", toy_task, None, workdir)
    folder = fitted.export(tmp_path / "export")
    texts = list(toy_task.test["text"][:])
    probabilities, merged = standard_predictions(folder, texts)
    np.testing.assert_allclose(probabilities, fitted.predict_proba(texts), atol=ATOL)
    manifest = json.loads((folder / "fusionkit_export.json").read_text())
    adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(folder / manifest["adapter_base"]),
                                        folder / manifest["adapter"])
    tokenizer = AutoTokenizer.from_pretrained(folder / manifest["adapter_base"])
    np.testing.assert_allclose(encode(adapted, tokenizer, texts, manifest).numpy(), merged, atol=ATOL)
    assert hasattr(fitted.module.backbone, "peft_config")  # export merged a copy: the model keeps its adapters
    np.testing.assert_allclose(fitted.predict_proba(texts), probabilities, atol=ATOL)


def test_a_representation_model_exports_for_fusionkits_loader(toy_task, toy_source, workdir, tmp_path):
    fitted = fit("representation", toy_task, toy_source, workdir)
    folder = fitted.export(tmp_path / "export")
    manifest = json.loads((folder / "fusionkit_export.json").read_text())
    assert manifest["format"] == "fusionkit" and "FittedModel.load" in manifest["how_to_load"]
    texts = list(toy_task.test["text"][:])
    np.testing.assert_allclose(FittedModel.load(folder).predict_proba(texts), fitted.predict_proba(texts), atol=ATOL)


def test_a_module_the_exporter_does_not_know_is_a_config_error(tmp_path):
    fitted = FittedModel(torch.nn.Linear(2, 2), None, {"strategy": "mystery"}, History(), 0.0, 6)
    with pytest.raises(ConfigError, match="'mystery'.*Linear"):
        fitted.export(tmp_path / "export")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- a report's run, refitted and exported

STUDY = {"seeds": [0, 1], "task_train_cap": 60, "validation_cap": 20, "test_cap": 30, "cka_examples": 8,
         "tuning_budget": 2, "train_knobs": {"epochs": 1, "batch_size": 16, "progress": False},
         "baseline_arms": [{"system": "finetune", "strategy": "finetune", "train_sizes": [30],
                            "search": {"lr": [1e-4, 3e-4]}}]}


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory):
    """A tiny finetune study (two configurations tuned, then two seeds) and the provenance.json a report of it
    would write."""
    from fusionkit.study.profiles import study_config

    work, report_dir = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("report")
    parameters = {"profile": "smoke", "target": "cr", "sources": ["mr"], "workdir": str(work),
                  "overrides": STUDY, "data_dir": str(data_dir)}
    results = run_study(study_config("smoke", "baselines", "cr", ["mr"], str(work), str(data_dir), STUDY),
                        progress=False)
    (report_dir / "provenance.json").write_text(json.dumps({"parameters": parameters}))
    return report_dir, work, results


def test_the_report_record_rebuilds_the_studies_it_ran(report):
    report_dir, work, _ = report
    baselines, fusion = report_study_configs(report_dir)
    assert (baselines.target, baselines.sources, baselines.workdir) == ("cr", ["mr"], str(work))
    assert [arm.system for arm in baselines.arms] == ["finetune"] and fusion.arms


def test_a_refitted_run_exports_and_predicts_its_stored_probabilities(report, tmp_path):
    report_dir, work, results = report
    run_id = results.loc[results["seed"] == 1, "run_id"].item()  # a final run: found after tuning is read
    exported = export_run(run_id, tmp_path / "export", report_dir)
    assert exported.system == "finetune" and exported.refit_accuracy == exported.stored_accuracy
    _, stored = ResultsStore(work / "results").predictions(run_id)
    texts = list(load_study_tasks(report_study_configs(report_dir)[0])[0].test["text"][:])
    np.testing.assert_allclose(standard_predictions(exported.path, texts)[0], stored, atol=ATOL)

    again = CliRunner().invoke(app, ["export", run_id, "--to", str(tmp_path / "cli"), "--report", str(report_dir)])
    assert again.exit_code == 0, again.output
    assert f"stored {exported.stored_accuracy:.6f}" in again.output and (tmp_path / "cli" / "modules.json").is_file()


def test_an_unknown_run_id_names_the_run_and_the_report(report, tmp_path):
    report_dir, _, _ = report
    with pytest.raises(ConfigError, match=f"'nosuchrun'.*{re.escape(str(report_dir))}"):
        export_run("nosuchrun", tmp_path / "export", report_dir)
    failed = CliRunner().invoke(app, ["export", "nosuchrun", "--to", str(tmp_path / "x"), "--report", str(report_dir)])
    assert failed.exit_code == 1 and "nosuchrun" in failed.output


def test_a_refit_that_disagrees_with_its_record_is_named(report, tmp_path, monkeypatch):
    report_dir, work, results = report
    run_id = results.loc[results["seed"] == 0, "run_id"].item()  # a tuning run: found before any score is read
    record = ResultsStore(work / "results").record(run_id)
    scored = {**record, "scores": {**record["scores"], "accuracy": 0.123}}
    monkeypatch.setattr(ResultsStore, "record", lambda self, key: scored)
    with pytest.warns(FusionkitWarning, match=r"accuracy \d\.\d{6}, but its stored record says 0\.123000"):
        export_run(run_id, tmp_path / "export", report_dir)
    moved = {**record, "config": {**record["config"], "data": {"target": "elsewhere", "sources": {}}}}
    monkeypatch.setattr(ResultsStore, "record", lambda self, key: moved)
    with pytest.raises(DataError, match="fingerprints.*elsewhere"):
        export_run(run_id, tmp_path / "again", report_dir)
