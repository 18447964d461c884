"""Every strategy behind the one interface, on the tiny encoder: shapes, save/load, fusion maths, errors."""
import copy

import numpy as np
import pytest
import torch

from fusionkit.errors import ConfigError
from fusionkit.strategies import STRATEGIES, FittedModel, get_strategy
from fusionkit.strategies.representation import FusionLayer, fitted_attention_weights

FAST = {"epochs": 1, "batch_size": 16}
EXPERT = {"expert_train_size": 40, "expert_epochs": 1}
KNOBS = {
    "scratch": FAST, "finetune": FAST, "lora": FAST, "linear_probe": {"c": 1.0},
    "sequential": {**FAST, **EXPERT}, "multitask": {**FAST, "source_train_size": 40},
    "representation": {**EXPERT, "epochs": 2, "layers": "all"}, "merge": {**EXPERT, "method": "ties"},
    "distill": {**FAST, **EXPERT}, "setfit": {"num_iterations": 2}, "ensemble": {**FAST, "members": 2},
    "adapter": FAST, "adapter_fusion": {**FAST, **EXPERT},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def fit(name, task, sources, workdir, knobs=None, **fit_args):
    strategy = get_strategy(name, KNOBS[name] if knobs is None else knobs, encoder="tiny", workdir=workdir,
                            max_length=16)
    return strategy.fit(task, sources if strategy.needs_sources else [], **fit_args)


def test_registry_holds_every_family():
    assert set(STRATEGIES) == {"scratch", "linear_probe", "finetune", "lora", "sequential", "multitask",
                               "representation", "merge", "distill", "setfit", "ensemble", "adapter",
                               "adapter_fusion"}


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_strategy_fits_predicts_and_round_trips(name, toy_task, toy_source, workdir, tmp_path):
    model = fit(name, toy_task, [toy_source], workdir, seed=0, train_size=60)
    probs = model.predict_proba(toy_task.test)
    assert probs.shape == (len(toy_task.test), toy_task.num_labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert model.num_trainable_params > 0 and model.train_seconds > 0
    assert model.history.train_loss and model.spec["train_size"] == 60
    reloaded = FittedModel.load(model.save(tmp_path / name))
    np.testing.assert_array_equal(reloaded.predict_proba(toy_task.test), probs)
    assert reloaded.num_trainable_params == model.num_trainable_params


def test_same_seed_gives_identical_predictions_on_cpu(toy_task, workdir):
    first, second = (fit("finetune", toy_task, [], workdir, seed=7, train_size=40) for _ in range(2))
    np.testing.assert_array_equal(first.predict_proba(toy_task.test), second.predict_proba(toy_task.test))


def test_frozen_strategies_train_only_the_head(toy_task, toy_source, workdir):
    probe = fit("linear_probe", toy_task, [], workdir)
    full = fit("finetune", toy_task, [], workdir, train_size=40)
    lora = fit("lora", toy_task, [], workdir, train_size=40)
    assert probe.num_trainable_params == 32 * 2 + 2
    assert probe.num_trainable_params < lora.num_trainable_params < full.num_trainable_params


def test_inference_cost_counts_every_encoder_a_model_runs_frozen_ones_included(toy_task, toy_source, workdir):
    from fusionkit.modeling.heads import inference_size

    fused = fit("representation", toy_task, [toy_source], workdir, train_size=40)
    probe = fit("linear_probe", toy_task, [], workdir)
    params, encoders = inference_size(fused.module)
    assert encoders == 2 and params > 2 * inference_size(probe.module)[0] * 0.9  # the base and the expert
    assert inference_size(probe.module)[1] == 1 and fused.num_trainable_params < params / 100
    lora = fit("lora", toy_task, [], workdir, train_size=40)
    assert inference_size(lora.module)[1] == 1  # one encoder (peft wraps it)


def test_a_seed_ensemble_averages_its_members_probabilities(toy_task, workdir):
    import torch

    from fusionkit.strategies.ensemble import member_seeds

    ensemble = fit("ensemble", toy_task, [], workdir, seed=3, train_size=40)
    assert len(ensemble.module.members) == 2 and len(set(member_seeds(3, 2))) == 2
    batch = ensemble.tokenizer(list(toy_task.test["text"][:8]), padding=True, return_tensors="pt")
    with torch.no_grad():
        means = torch.stack([m(batch["input_ids"], batch["attention_mask"]).softmax(-1)
                             for m in ensemble.module.members]).mean(0)
    np.testing.assert_allclose(ensemble.predict_proba(list(toy_task.test["text"][:8])), means.numpy(), atol=1e-5)
    assert member_seeds(3, 2) != member_seeds(4, 2)  # each run's seed draws other members


def test_lp_ft_starts_from_the_linear_probes_head(toy_task, workdir):
    """With a zero step, LP-FT never moves: it is the linear probe (same features, same C), up to float noise."""
    frozen = fit("finetune", toy_task, [], workdir, {"epochs": 1, "lr": 0.0, "head_init": "probe"}, train_size=60)
    probe = fit("linear_probe", toy_task, [], workdir, train_size=60)
    np.testing.assert_allclose(frozen.predict_proba(toy_task.test), probe.predict_proba(toy_task.test), atol=1e-4)
    with pytest.raises(ConfigError, match="head_init"):
        fit("finetune", toy_task, [], workdir, {"epochs": 1, "head_init": "zeros"}, train_size=60)


def test_sum_fusion_is_elementwise_addition():
    layer = FusionLayer("sum", num_sources=3, dim=5, num_labels=2)
    base, experts = torch.randn(4, 2, 5), [torch.randn(4, 2, 5) for _ in range(3)]
    torch.testing.assert_close(layer.fuse(base, experts), base + experts[0] + experts[1] + experts[2])


def test_sum_fusion_projects_knowledge_of_another_width():
    """The original formulation: fused = encoder output + W knowledge, W learned (here set by hand)."""
    layer = FusionLayer("sum", num_sources=2, dim=5, num_labels=2, widths=[5, 3], project=[False, True])
    projection = layer.projections[1]
    base, same_width, knowledge = torch.randn(4, 1, 5), torch.randn(4, 1, 5), torch.randn(4, 1, 3)
    expected = base + same_width + knowledge @ projection.weight.T + projection.bias
    torch.testing.assert_close(layer.fuse(base, [same_width, knowledge]), expected)
    concat = FusionLayer("concat", num_sources=2, dim=5, num_labels=2, widths=[5, 3])
    assert concat.fuse(base, [same_width, knowledge]).shape == (4, 1, 13)


def test_attention_weights_are_a_distribution_over_base_and_sources():
    layer = FusionLayer("attention", num_sources=3, dim=5, num_labels=2)
    torch.nn.init.normal_(layer.query.weight)
    layer.fuse(torch.randn(4, 2, 5), [torch.randn(4, 2, 5) for _ in range(3)])
    weights = layer.last_attention
    assert weights.shape == (4, 2, 4)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2))


def test_attention_fusion_is_the_attention_written_out_with_a_projection_per_candidate():
    torch.manual_seed(0)
    layer = FusionLayer("attention", num_sources=3, dim=8, num_labels=2)
    for linear in (layer.query, layer.key, layer.value):
        torch.nn.init.normal_(linear.weight)
        torch.nn.init.normal_(linear.bias)
    base, sources = torch.randn(5, 3, 8), [torch.randn(5, 3, 8) for _ in range(3)]
    fused = layer.fuse(base, sources)
    candidates = torch.stack([base, *sources], dim=1)  # [b, S, L, d]: each candidate projected on its own
    keys, values = layer.key(candidates), layer.value(candidates)
    weights = (torch.einsum("bld,bsld->bls", layer.query(base), keys) / 8 ** 0.5).softmax(-1)
    torch.testing.assert_close(layer.last_attention, weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, base + torch.einsum("bls,bsld->bld", weights, values), rtol=1e-5, atol=1e-5)


def test_attention_fusion_reports_weights_per_layer_and_source(toy_task, toy_source, workdir):
    model = fit("representation", toy_task, [toy_source], workdir, {**KNOBS["representation"], "mode": "attention"})
    weights, names, layers = fitted_attention_weights(model)
    assert names == ["base", "toysrc"] and layers == [1, 2]
    assert weights.shape == (2, 2)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_experts_are_trained_once_and_reused(toy_task, toy_source, workdir):
    fit("sequential", toy_task, [toy_source], workdir)
    saved = sorted(p.name for p in (workdir / "experts").iterdir())
    fit("merge", toy_task, [toy_source], workdir, {**KNOBS["merge"], "method": "average"})
    assert sorted(p.name for p in (workdir / "experts").iterdir()) == saved


def test_the_retrieval_view_reads_the_texts_each_expert_trains_on(toy_source):
    from fusionkit.strategies.experts import ExpertKnobs, expert_artefacts, expert_train_task

    knobs = ExpertKnobs.from_knobs({"expert_train_size": 30})
    settings = {"encoder": "tiny", "workdir": "unused", "max_length": 16}
    for seed in (0, 1):
        planned = expert_artefacts(knobs, settings, [toy_source], seed)[0]._train_task()
        told = expert_train_task(knobs, toy_source, seed)
        assert len(told.train) == 30 and told.train["text"][:] == planned.train["text"][:]
    shared = ExpertKnobs.from_knobs({"expert_train_size": 30, "expert_seed": 7})  # one expert for every seed
    first, second = (expert_train_task(shared, toy_source, seed).train["text"][:] for seed in (0, 1))
    assert first == second


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'fusion'; known strategies: .*linear_probe"):
        get_strategy("fusion")


def test_unknown_knob_is_named_with_the_strategy():
    with pytest.raises(ConfigError, match=r"strategy 'lora': unknown knob\(s\) \['rank'\]"):
        get_strategy("lora", {"rank": 4})


def test_source_strategy_without_sources_says_so(toy_task, workdir):
    with pytest.raises(ConfigError, match="strategy 'merge' fuses knowledge from source tasks: pass sources"):
        get_strategy("merge", encoder="tiny", workdir=workdir).fit(toy_task, [])


def test_train_size_larger_than_the_data_is_refused(toy_task, workdir):
    with pytest.raises(ConfigError, match=r"n=5000 is larger than the \d+ training examples of task 'toy'"):
        fit("finetune", toy_task, [], workdir, train_size=5000)


def test_expert_from_another_base_encoder_is_refused(toy_task, toy_source, workdir):
    expert = fit("finetune", toy_source, [], workdir)
    expert.spec["base_fingerprint"] = "0123456789abcdef"  # as if trained on another encoder
    with pytest.raises(ConfigError, match="was trained on base encoder 'tiny' \\(fingerprint 0123456789abcdef\\)"):
        fit("sequential", toy_task, [expert], workdir)


def test_bad_fusion_settings_are_named(toy_task, toy_source, workdir):
    with pytest.raises(ConfigError, match="unknown mode 'max'"):
        fit("representation", toy_task, [toy_source], workdir, {**EXPERT, "mode": "max"})
    with pytest.raises(ConfigError, match="unknown method 'slerp'"):
        fit("merge", toy_task, [toy_source], workdir, {**EXPERT, "method": "slerp"})
    with pytest.raises(ConfigError, match="exactly one source"):
        fit("sequential", toy_task, [toy_source, toy_source], workdir)


@pytest.mark.parametrize("damage", ["truncate weights", "delete spec"])
def test_a_damaged_saved_expert_is_moved_aside_and_retrained(toy_task, toy_source, tmp_path, damage):
    from fusionkit.errors import FusionkitWarning

    fit("sequential", toy_task, [toy_source], tmp_path)
    [expert] = (tmp_path / "experts").iterdir()
    if damage == "truncate weights":
        weights = expert / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        (expert / "config.json").unlink()
    with pytest.warns(FusionkitWarning, match=rf"'{expert}' is damaged .*moved to .*damaged"):
        fit("sequential", toy_task, [toy_source], tmp_path)
    assert (expert / "model.safetensors").is_file() and (expert / "config.json").is_file()
    assert len(list((tmp_path / "experts" / "damaged").iterdir())) == 1


def test_a_kept_artefact_is_read_once_and_handed_out_as_independent_copies(toy_source, tmp_path, monkeypatch):
    import torch

    from fusionkit.strategies.base import Artefact, FittedModel

    artefact = Artefact(get_strategy("finetune", {"epochs": 1, "progress": False}, encoder="tiny", workdir=tmp_path),
                        toy_source, (), 0, None)
    first = artefact.provide()  # trained and saved, and kept

    def no_reading(*args, **kwargs):
        raise AssertionError("a kept artefact was read from disk again")

    monkeypatch.setattr(FittedModel, "load", no_reading)
    second = artefact.provide()
    assert second.module is not first.module
    with torch.no_grad():
        next(second.module.parameters()).add_(1.0)  # a run that trains its copy in place (sequential)
    third = artefact.provide()
    assert all(torch.equal(a, b) for a, b in zip(first.module.state_dict().values(),
                                                  third.module.state_dict().values()))


def test_a_kept_experts_frozen_encoder_is_made_once_from_the_saved_weights_never_a_runs_copy(toy_source, tmp_path):
    import torch

    from fusionkit.modeling.encoders import weights_fingerprint
    from fusionkit.strategies.base import Artefact, FittedModel
    from fusionkit.strategies.experts import expert_backbone, frozen_expert_encoder

    artefact = Artefact(get_strategy("finetune", {"epochs": 1, "progress": False}, encoder="tiny", workdir=tmp_path),
                        toy_source, (), 0, None)
    trained = artefact.provide()
    saved = weights_fingerprint(expert_backbone(trained))
    copy = artefact.provide()
    with torch.no_grad():
        next(copy.module.backbone.parameters()).add_(1.0)  # a run that trained its copy before reading features
    first = frozen_expert_encoder(copy, "src", "mean", 16)
    second = frozen_expert_encoder(artefact.provide(), "src", "mean", 16)
    assert second.model is first.model and first._fingerprint == saved  # shared, and hashed from the saved weights
    assert weights_fingerprint(first.model) == saved  # its weights are the saved ones, not the trained copy's
    assert not any(p.requires_grad for p in first.model.parameters())
    # an expert no study handed out (fitted here, passed in by hand) gets its own copy, hashed when asked
    by_hand = FittedModel(trained.module, trained.tokenizer, trained.spec, trained.history, trained.train_seconds,
                          trained.num_trainable_params)
    own = frozen_expert_encoder(by_hand, "src", "mean", 16)
    assert own.model is not first.model and own._fingerprint is None and own.fingerprint() == saved


@pytest.mark.parametrize("method", ["fisher", "regmean"])
def test_data_dependent_merges_read_their_sources_training_texts_never_the_targets(method, toy_task, toy_source,
                                                                                 workdir, monkeypatch):
    from fusionkit.strategies import merge as merge_module

    read = []
    statistics = merge_module.MERGE_METHODS[method].statistics
    monkeypatch.setitem(merge_module.MERGE_METHODS, method, merge_module.MergeMethod(
        merge_module.MERGE_METHODS[method].merge, scaled=False,
        statistics=lambda expert, texts, max_length: read.append(texts) or statistics(expert, texts, max_length)))
    fitted = fit("merge", toy_task, [toy_source], workdir, {**EXPERT, "method": method, "statistics_examples": 20},
                 seed=0, train_size=60)
    assert fitted.predict_proba(toy_task.test).shape == (len(toy_task.test), 2)
    (texts,) = read
    assert len(texts) == 20 and set(texts) <= set(toy_source.train["text"][:])
    target_texts = {t for split in ("train", "validation", "test") for t in getattr(toy_task, split)["text"][:]}
    assert not set(texts) & target_texts


def test_fisher_is_the_expected_squared_gradient_of_the_log_likelihood(toy_source, workdir):
    from fusionkit.strategies.merge import diagonal_fisher

    expert = get_strategy("finetune", FAST, encoder="tiny", workdir=workdir, max_length=16).fit(toy_source, seed=0,
                                                                                                 train_size=40)
    texts = list(toy_source.train["text"][:3])
    fisher = diagonal_fisher(expert, texts, 16)
    # written out for one weight: mean over texts of sum_y p(y|x) (d log p(y|x) / d w)^2, by autograd one by one
    module = expert.module
    weight = module.backbone.encoder.layer[1].output.dense.weight
    weight.requires_grad_(True)
    expected = torch.zeros_like(weight)
    for text in texts:
        batch = {k: v for k, v in expert.tokenizer([text], return_tensors="pt").items() if k != "token_type_ids"}
        log_p = module.eval()(**batch)[0].log_softmax(-1)
        for label in range(2):
            (grad,) = torch.autograd.grad(log_p[label], weight, retain_graph=True)
            expected += log_p[label].exp().detach() * grad ** 2
    torch.testing.assert_close(fisher["encoder.layer.1.output.dense.weight"], expected / 3, rtol=1e-4, atol=1e-10)


def test_regmean_grams_are_the_mean_outer_product_of_each_linear_layers_real_token_inputs(toy_source, workdir):
    from fusionkit.strategies.merge import input_grams

    expert = get_strategy("finetune", FAST, encoder="tiny", workdir=workdir, max_length=16).fit(toy_source, seed=0,
                                                                                                 train_size=40)
    texts = ["short", "a somewhat longer text here"]  # padded together: the padding must not count
    grams = input_grams(expert, texts, 16)
    # the first layer's query projection reads the embeddings' output: X^T X / tokens over both texts' real tokens
    rows = []
    for text in texts:
        batch = {k: v for k, v in expert.tokenizer([text], return_tensors="pt").items() if k != "token_type_ids"}
        rows.append(expert.module.backbone(**batch, output_hidden_states=True).hidden_states[0][0].detach())
    x = torch.cat(rows)
    torch.testing.assert_close(grams["encoder.layer.0.attention.self.query"], x.T @ x / len(x), rtol=1e-5, atol=1e-6)
    assert grams["encoder.layer.0.attention.self.query"].shape == (32, 32)


def test_searched_merge_coefficients_are_learned_from_the_training_examples_alone(toy_task, toy_source, workdir,
                                                                                 monkeypatch):
    from fusionkit.modeling.encoders import Encoder

    sources = [toy_source, toy_source.with_shuffled_labels(5)]
    seen = []
    encode = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, texts, *a, **k: seen.append(list(texts)) or
                        encode(self, texts, *a, **k))
    knobs = {**EXPERT, "method": "task_arithmetic", "coefficients": "searched", "search_steps": 6, "scale": 0.3}
    fitted = fit("merge", toy_task, sources, workdir, knobs, seed=0)
    search = fitted.spec["arch"]["coefficient_search"]
    assert len(search) <= 6 and search[0]["coefficients"] == [0.3, 0.3]
    best = min(search, key=lambda e: e["cv_loss"])
    assert fitted.spec["arch"]["coefficients"] == best["coefficients"]
    assert all(0 <= c <= 1 for e in search for c in e["coefficients"])
    # the search encodes the training texts only: validation is read once, for the chosen merge, as every arm reads
    # it once per configuration (the equal tuning budget); the test split once, to score that merge
    train, validation, test = (list(split["text"][:]) for split in toy_task.subsample(None).splits.values())
    assert sum(texts == train for texts in seen) == len(search) + 1
    assert sum(texts == validation for texts in seen) == 1 and sum(texts == test for texts in seen) == 1
    # the loss is the folds' held-out cross-entropy: a coefficient search from the same start repeats exactly
    again = fit("merge", toy_task, sources, workdir / "again", knobs, seed=0)
    assert again.spec["arch"]["coefficient_search"] == search
    with pytest.raises(ConfigError, match="method 'average' has no coefficients to search"):
        fit("merge", toy_task, sources, workdir, {**EXPERT, "method": "average", "coefficients": "searched"})
    with pytest.raises(ConfigError, match="'search_folds' must be between 2 and"):
        fit("merge", toy_task, sources, workdir, {**knobs, "search_folds": 1})


def test_adamerging_learns_coefficients_from_unlabelled_target_texts_alone(toy_task, toy_source, workdir,
                                                                         monkeypatch):
    from fusionkit.modeling.encoders import Encoder

    sources = [toy_source, toy_source.with_shuffled_labels(5)]
    seen = []
    tokenize = Encoder.tokenize
    monkeypatch.setattr(Encoder, "tokenize", lambda self, texts: seen.append(list(texts)) or tokenize(self, texts))
    knobs = {**EXPERT, "method": "task_arithmetic", "coefficients": "adamerging", "scale": 0.3, "entropy_steps": 12,
             "entropy_lr": 0.05, "entropy_batch": 8, "entropy_refit": 4}
    fitted = fit("merge", toy_task, sources, workdir, knobs, seed=0, train_size=40)
    steps = fitted.spec["arch"]["entropy_steps"]
    assert len(steps) == 12 and fitted.spec["arch"]["coefficients"] == steps[-1]["coefficients"]
    assert all(0 <= c <= 1 for step in steps for c in step["coefficients"])
    assert steps[0]["coefficients"] != [0.3, 0.3]  # one Adam step moved them from the start
    # the entropy is the gradient's only signal: its batches are unlabelled target texts (outside the 40 labelled
    # examples), and validation and test texts are read only to score the final merge, once each
    task = toy_task.subsample(40, 0)
    unlabelled = set(task.unlabelled)
    assert not unlabelled & set(task.train["text"][:])
    validation, test = set(toy_task.validation["text"][:]), set(toy_task.test["text"][:])
    batches = [texts for texts in seen if len(texts) == 8 and set(texts) <= unlabelled]
    assert len(batches) == 12
    assert sum(bool(set(texts) & validation) for texts in seen) == sum(bool(set(texts) & test) for texts in seen) == 1
    assert not any(set(texts) & unlabelled - set().union(*batches) for texts in seen)
    with pytest.raises(ConfigError, match="'adamerging' learn task arithmetic's coefficients"):
        fit("merge", toy_task, sources, workdir, {**knobs, "method": "ties"})
    with pytest.raises(ConfigError, match="'entropy_lr' must be > 0"):
        fit("merge", toy_task, sources, workdir, {**knobs, "entropy_lr": 0})


def test_adamergings_differentiable_forward_is_the_task_arithmetic_merge():
    from fusionkit.modeling.encoders import load_encoder
    from fusionkit.strategies import task_vectors
    from fusionkit.strategies.merge import merged_forward

    encoder = load_encoder("tiny", max_length=16)
    base_state = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    vectors = [{k: 0.05 * torch.randn(v.shape, generator=generator) for k, v in base_state.items()
                if v.is_floating_point()} for _ in range(2)]
    batch = encoder.tokenize(["a good film", "the battery died after a week of use"])
    lam = torch.tensor([0.2, 0.7], requires_grad=True)
    stacked = {key: torch.stack([vector[key] for vector in vectors]) for key in vectors[0]}
    hidden = merged_forward(encoder.model.eval(), base_state, stacked, lam, batch)
    merged = task_vectors.task_arithmetic(base_state, [task_vectors.scaled(v, c) for v, c in zip(vectors, [0.2, 0.7])],
                                          1.0)
    reference = copy.deepcopy(encoder.model).eval()
    reference.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(hidden.detach(), reference(**batch).last_hidden_state, rtol=1e-5, atol=1e-5)
    hidden.sum().backward()
    assert lam.grad is not None and torch.isfinite(lam.grad).all() and lam.grad.abs().sum() > 0
    assert torch.equal(encoder.model.state_dict()["embeddings.word_embeddings.weight"],
                       base_state["embeddings.word_embeddings.weight"])  # the model itself is untouched


def test_a_merge_that_weighs_by_source_texts_takes_only_task_sources():
    merge = STRATEGIES["merge"]
    assert merge.usable_kinds({"method": "regmean"}) == merge.usable_kinds({"method": "fisher"}) == ("task",)
    assert merge.usable_kinds({}) == merge.usable_kinds({"method": "ties"}) == merge.source_kinds
    assert "model" in merge.source_kinds and "adapter" in merge.source_kinds  # given models merge by weights alone
