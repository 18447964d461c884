"""AdapterFusion (Pfeiffer et al. 2021) and bottleneck adapters on the tiny encoder: the arithmetic, what trains,
and that a saved model predicts as the fitted one did."""
import copy

import numpy as np
import pytest
import torch

from fusionkit.errors import ConfigError
from fusionkit.modeling.adapters import add_adapters, add_fusion, adapter_state, fusion_layers
from fusionkit.modeling.encoders import load_encoder
from fusionkit.strategies import FittedModel, get_strategy
from fusionkit.strategies.finetune import ADAPTER_NAME

FAST = {"epochs": 1, "batch_size": 16}
EXPERT = {"expert_train_size": 40, "expert_epochs": 1}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("adapter-runs")


def hidden(model, texts=("a fine film", "dull and far too long, with nothing to say")):
    encoder = load_encoder("tiny")
    batch = {k: v for k, v in encoder.tokenize(list(texts)).items() if k != "token_type_ids"}
    return model.eval()(**batch).last_hidden_state


def test_an_adapter_changes_the_layer_and_a_fusion_over_it_alone_starts_as_that_adapter():
    plain = load_encoder("tiny").model
    torch.manual_seed(0)
    adapted = add_adapters(copy.deepcopy(plain), ["mr"])
    for output in [layer.output for layer in adapted.encoder.layer]:  # a trained adapter, not a near-zero one
        torch.nn.init.normal_(output.adapters["mr"].up.weight, std=0.5)
    assert (hidden(adapted) - hidden(plain)).abs().max() > 1e-2
    fused = add_fusion(copy.deepcopy(adapted))
    value = fusion_layers(fused)[0].value.weight.detach()
    assert value.shape == (32, 32) and torch.equal(value.diagonal(), torch.ones(32))
    assert torch.all(value[~torch.eye(32, dtype=bool)] == torch.tensor(1e-6))
    # one adapter gets all the attention, and V is the identity up to 1e-6 off the diagonal
    torch.testing.assert_close(hidden(fused), hidden(adapted), atol=1e-5, rtol=0)


def test_fusion_weights_are_a_distribution_over_the_sources_of_each_token():
    model = add_fusion(add_adapters(load_encoder("tiny").model, ["mr", "subj", "trec"]))
    hidden(model)
    for fusion in fusion_layers(model):
        assert fusion.last_attention.shape[-1] == 3
        torch.testing.assert_close(fusion.last_attention.sum(-1), torch.ones(fusion.last_attention.shape[:2]))


def test_an_encoder_without_bert_layers_is_refused_by_name():
    with pytest.raises(ConfigError, match="BERT-style encoder.*Linear has another layout"):
        add_adapters(torch.nn.Linear(3, 3), ["mr"])


def test_an_adapter_trains_its_adapters_and_head_and_leaves_the_encoder_as_it_was(toy_task, workdir):
    base = load_encoder("tiny").model.state_dict()
    fitted = get_strategy("adapter", FAST, encoder="tiny", workdir=workdir, max_length=16).fit(toy_task, seed=0)
    trainable = {n for n, p in fitted.module.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.adapter." in n or n.startswith("head.") for n in trainable)
    state = fitted.module.backbone.state_dict()
    assert all(torch.equal(state[key], value) for key, value in base.items())  # keys unchanged, weights too
    assert fitted.num_trainable_params == 2 * (2 * 32 * 2 + 2 + 32) + 32 * 2 + 2  # reduction 16: 32 -> 2 -> 32


def test_adapter_fusion_trains_only_its_fusion_layers_and_head(toy_task, toy_source, workdir):
    strategy = get_strategy("adapter_fusion", {**FAST, **EXPERT}, encoder="tiny", workdir=workdir, max_length=16)
    sources = [toy_source, toy_source.with_shuffled_labels(3)]
    needs = strategy.requirements(toy_task, sources, 0)
    experts = [need.provide() for need in needs]
    fitted = strategy.fit(toy_task, sources, seed=0, artefacts={n.key: e for n, e in zip(needs, experts)})
    trainable = {n for n, p in fitted.module.named_parameters() if p.requires_grad}
    assert trainable and all(".fusion." in n or n.startswith("head.") for n in trainable)
    # gradients reach exactly those, in every layer: the encoder and the source adapters stay frozen
    module = fitted.module.train()
    batch = {k: v for k, v in load_encoder("tiny").tokenize(["good", "bad one"]).items() if k != "token_type_ids"}
    module(**batch).sum().backward()
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    assert {n.split(".output.")[0] for n in trainable if ".fusion." in n} == {f"backbone.encoder.layer.{i}"
                                                                              for i in range(2)}
    # each source's adapter is its expert's, unchanged
    for slot, expert in zip(("source0", "source1"), experts):
        fused, own = adapter_state(fitted.module.backbone, slot), adapter_state(expert.module.backbone, ADAPTER_NAME)
        assert fused.keys() == own.keys() and all(torch.equal(fused[k], own[k]) for k in own)
    weights = np.asarray(fitted.spec["arch"]["attention_weights"])
    assert weights.shape == (2, 2) and np.allclose(weights.sum(1), 1.0)  # [layers, sources], on validation tokens
    assert fitted.spec["arch"]["attention_sources"] == [s.name for s in sources]


def test_a_saved_adapter_fusion_model_predicts_as_the_fitted_one(toy_task, toy_source, workdir, tmp_path):
    fitted = get_strategy("adapter_fusion", {**FAST, **EXPERT}, encoder="tiny", workdir=workdir,
                          max_length=16).fit(toy_task, [toy_source], seed=1)
    weights = np.asarray(fitted.spec["arch"]["attention_weights"])
    assert weights.shape == (2, 1) and np.allclose(weights, 1.0)  # one source: all the attention, every layer
    reloaded = FittedModel.load(fitted.save(tmp_path / "af"))
    np.testing.assert_array_equal(reloaded.predict_proba(toy_task.test), fitted.predict_proba(toy_task.test))


def test_adapter_fusion_takes_only_adapter_experts_and_merging_refuses_them(toy_task, toy_source, workdir):
    wrong = get_strategy("adapter_fusion", {**FAST, **EXPERT, "expert_kind": "full"}, encoder="tiny",
                         workdir=workdir, max_length=16)
    with pytest.raises(ConfigError, match="expert_kind 'adapter', got 'full'"):
        wrong.fit(toy_task, [toy_source])
    merge = get_strategy("merge", {**EXPERT, "expert_kind": "adapter"}, encoder="tiny", workdir=workdir,
                         max_length=16)
    with pytest.raises(ConfigError, match="bottleneck adapter.*no task vector"):
        merge.fit(toy_task, [toy_source])
