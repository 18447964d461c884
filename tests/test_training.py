"""The training loop: determinism, early stopping with restore, NaN guard, batching, knobs."""
import numpy as np
import pytest
import torch

from fusionkit.errors import ConfigError, TrainingError
from fusionkit.modeling.training import TrainKnobs, length_grouped_batches, train_loop


def regression_problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(np.int64)
    return [(x[i], y[i]) for i in range(n)]


def collate(examples):
    return {"x": torch.as_tensor(np.stack([e[0] for e in examples])),
            "labels": torch.as_tensor(np.array([e[1] for e in examples]))}


def ce_loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["x"]), batch["labels"])


def quiet(**knobs):
    return TrainKnobs(progress=False, lr=1e-2, **knobs)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 2)


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    examples = regression_problem()
    weights = []
    for seed in (3, 3, 4):
        model = fresh_model()
        train_loop(model, examples, collate, ce_loss, None, quiet(epochs=2, batch_size=8), seed=seed)
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_early_stopping_restores_the_best_epoch():
    examples = regression_problem()
    model = fresh_model()
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2])
    seen = []

    def evaluate():
        seen.append(model.weight.detach().clone())
        return next(scores)

    history = train_loop(model, examples, collate, ce_loss, evaluate, quiet(epochs=5, batch_size=8, patience=2))
    assert history.val_metric == [0.5, 0.9, 0.4, 0.3]  # stopped after two epochs without improvement
    assert history.best_epoch == 1
    assert torch.equal(model.weight.detach(), seen[1])


def test_min_steps_adds_epochs_and_early_stopping_waits_for_them():
    examples = regression_problem(n=16)  # two batches of 8: two updates an epoch
    scores = iter([0.9] + [0.1] * 20)  # the first epoch is the best; patience alone would stop at the third
    history = train_loop(fresh_model(), examples, collate, ce_loss, lambda: next(scores),
                         quiet(epochs=1, batch_size=8, patience=2, min_steps=12))
    assert history.steps == 12 and len(history.val_metric) == 6  # six epochs, one planned
    assert history.best_epoch == 0  # and the best epoch is still the one kept
    with pytest.raises(ConfigError, match="min_steps must be >= 0"):
        train_loop(fresh_model(), examples, collate, ce_loss, None, quiet(min_steps=-1))


def test_nan_loss_stops_with_the_step_and_batch_named():
    examples = regression_problem()

    def nan_on_third_batch(model, batch, calls=[0]):
        calls[0] += 1
        loss = ce_loss(model, batch)
        return loss * float("nan") if calls[0] == 3 else loss

    with pytest.raises(TrainingError, match=r"loss became nan at step 2 \(epoch 0, batch 2"):
        train_loop(fresh_model(), examples, collate, nan_on_third_batch, None, quiet(epochs=1, batch_size=8))


def test_gradient_accumulation_takes_one_step_per_group_of_batches():
    examples = regression_problem(n=64)
    plain = train_loop(fresh_model(), examples, collate, ce_loss, None, quiet(epochs=1, batch_size=8))
    accumulated = train_loop(fresh_model(), examples, collate, ce_loss, None,
                             quiet(epochs=1, batch_size=8, grad_accum_steps=4))
    assert (plain.steps, accumulated.steps) == (8, 2)


def test_training_actually_learns_the_problem():
    examples = regression_problem(n=256)
    model = fresh_model()
    train_loop(model, examples, collate, ce_loss, None, quiet(epochs=10, batch_size=16))
    x = torch.as_tensor(np.stack([e[0] for e in examples]))
    y = np.array([e[1] for e in examples])
    assert (model(x).argmax(1).numpy() == y).mean() > 0.9


def test_length_grouped_batches_cover_every_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=1000).tolist()
    batches = length_grouped_batches(lengths, batch_size=10, group_size=50, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_batches = np.array_split(rng.permutation(1000), 100)
    padded_random = sum(len(b) * max(lengths[i] for i in b) for b in random_batches)
    assert padded < 0.7 * padded_random


def test_unknown_knob_is_named():
    with pytest.raises(ConfigError, match=r"unknown knob\(s\) \['learning_rate'\]"):
        TrainKnobs.from_knobs({"learning_rate": 0.1})


# ---------------------------------------------------------------- knobs: one flat dict, groups composed

def test_knob_groups_read_one_flat_dict_and_keep_their_own_defaults():
    from fusionkit.strategies.representation import RepresentationKnobs

    knobs = RepresentationKnobs.from_knobs({"mode": "sum", "epochs": 3, "expert_epochs": 5})
    assert knobs.mode == "sum" and knobs.train.epochs == 3 and knobs.experts.expert_epochs == 5
    assert knobs.train.lr == 1e-3  # the fusion layer's own default, not the loop's 5e-5
    flat = knobs.to_dict()
    assert flat["epochs"] == 3 and flat["lr"] == 1e-3 and flat["expert_epochs"] == 5 and flat["mode"] == "sum"
    assert RepresentationKnobs.from_knobs(flat) == knobs
    assert set(flat) == RepresentationKnobs.knob_names()


def test_an_unknown_knob_is_named_with_every_known_one():
    from fusionkit.strategies.merge import MergeKnobs

    with pytest.raises(ConfigError, match=r"unknown knob\(s\) \['sclae'\]; known: .*'c'.*'expert_kind'.*'scale'"):
        MergeKnobs.from_knobs({"sclae": 0.5})


def test_a_batch_list_of_tensors_goes_to_the_training_device():
    """Representation batches carry one tensor per source in a list: every one must reach the model's device
    (on CUDA a list left on the CPU fails at the first step; "meta" stands in for the GPU here)."""
    import torch

    from fusionkit.modeling.training import _on

    meta = torch.device("meta")
    moved = _on(meta, [torch.ones(2), torch.zeros(3)])
    assert [tensor.device.type for tensor in moved] == ["meta", "meta"]
    assert _on(meta, torch.ones(1)).device.type == "meta" and _on(meta, ["a"]) == ["a"]
