"""Merging methods on small hand-computed state dicts, agreement with peft's merge_utils, and LoRA deltas."""
import pytest
import torch

from fusionkit.errors import ConfigError, InputError
from fusionkit.strategies.task_vectors import apply_task_vector, average, dare, lora_delta, task_arithmetic, task_vector, ties


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def assert_state_equal(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), (key, got[key], expected[key])


POSITION_IDS = torch.arange(4)  # an integer buffer: never part of a task vector, carried through merges


def test_task_vector_and_apply_round_trip():
    pretrained = {"w": t(1, 2, 3, 4), "position_ids": POSITION_IDS}
    finetuned = {"w": t(1.5, 0, 3, 6), "position_ids": POSITION_IDS}
    vector = task_vector(finetuned, pretrained)
    assert_state_equal(vector, {"w": t(0.5, -2, 0, 2)})
    assert_state_equal(apply_task_vector(pretrained, vector), finetuned)
    assert_state_equal(apply_task_vector(pretrained, vector, scale=0.5),
                       {"w": t(1.25, 1, 3, 5), "position_ids": POSITION_IDS})


def test_average_plain_and_weighted():
    a = {"w": t(1, 2, 3, 4), "position_ids": POSITION_IDS}
    b = {"w": t(3, 2, 1, 0), "position_ids": POSITION_IDS}
    assert_state_equal(average([a, b]), {"w": t(2, 2, 2, 2), "position_ids": POSITION_IDS})
    # (3 * [1, 2, 3, 4] + 1 * [3, 2, 1, 0]) / 4 = [6, 8, 10, 12] / 4
    assert_state_equal(average([a, b], weights=[3, 1]), {"w": t(1.5, 2, 2.5, 3), "position_ids": POSITION_IDS})


def test_task_arithmetic():
    pretrained = {"w": t(1, 0, -1, 2)}
    vectors = [{"w": t(1, 2, 0, -1)}, {"w": t(-0.5, 1, 1, 1)}]
    # sum = [0.5, 3, 1, 0]; pretrained + 0.5 * sum
    assert_state_equal(task_arithmetic(pretrained, vectors, scale=0.5), {"w": t(1.25, 1.5, -0.5, 2)})


# TIES by hand, density 0.5 on 6 entries: each vector keeps its 3 largest magnitudes.
TIES_VECTORS = [
    {"w": t(4, -1, 2, -3, 0.5, 1)},     # trimmed: [ 4,  0, 2, -3, 0, 0]
    {"w": t(-2, 3, -1, 1, 4, -0.5)},    # trimmed: [-2,  3, 0,  0, 4, 0]
    {"w": t(1, -4, 3, 2, -1, -1.5)},    # trimmed: [ 0, -4, 3,  2, 0, 0]
]
# sum of trimmed:  [2, -1, 5, -1, 4, 0] -> elected signs [+, -, +, -, +, + (tie)]
# disjoint mean:   [4/1, -4/1, (2+3)/2, -3/1, 4/1, 0 (no entry agrees)] = [4, -4, 2.5, -3, 4, 0]
TIES_MERGED = t(4, -4, 2.5, -3, 4, 0)


def test_ties_trim_elect_disjoint_mean():
    pretrained = {"w": t(0.5, -0.5, 0, 1, 2, -1)}
    merged = ties(pretrained, TIES_VECTORS, density=0.5, scale=0.5)
    assert_state_equal(merged, {"w": t(2.5, -2.5, 1.25, -0.5, 4, -1)})  # pretrained + 0.5 * TIES_MERGED


def test_ties_density_one_keeps_everything_before_electing():
    # No trimming: sums [3, -2, 4, 0, 3.5, -1] elect [+, -, +, +, +, -];
    # agreeing means [(4+1)/2, (-1-4)/2, (2+3)/2, (1+2)/2, (0.5+4)/2, (-0.5-1.5)/2]
    merged = ties({"w": torch.zeros(6)}, TIES_VECTORS, density=1.0)
    assert_state_equal(merged, {"w": t(2.5, -2.5, 2.5, 1.5, 2.25, -1)})


ZERO = {"w": torch.zeros(4)}
VECTORS = [{"w": t(1, -2, 0.5, 3)}, {"w": t(2, 2, -1, 0)}]


def test_dare_without_dropping_is_task_arithmetic():
    pretrained = {"w": t(1, 0, -1, 2)}
    assert_state_equal(dare(pretrained, VECTORS, drop_rate=0.0, scale=0.5),
                       task_arithmetic(pretrained, VECTORS, scale=0.5))
    # combine="mean": pretrained + 0.5 * [1.5, 0, -0.25, 1.5]
    assert_state_equal(dare(pretrained, VECTORS, drop_rate=0.0, scale=0.5, combine="mean"),
                       {"w": t(1.75, 0, -1.125, 2.75)})


def test_dare_survivors_are_rescaled_and_unbiased():
    delta = t(1, -2, 0.5, 3, -1, 2, 4, -0.5)
    merged = dare({"w": torch.zeros(8)}, [{"w": delta}], drop_rate=0.75, seed=0)["w"]
    survived = merged != 0
    assert 0 < survived.sum() < 8  # this seed drops some entries and keeps some
    assert torch.equal(merged[survived], delta[survived] / 0.25)
    assert torch.equal(dare({"w": torch.zeros(8)}, [{"w": delta}], drop_rate=0.75, seed=0)["w"], merged)
    assert not torch.equal(dare({"w": torch.zeros(8)}, [{"w": delta}], drop_rate=0.75, seed=1)["w"], merged)
    # The rescaling keeps the expected value: the mean over many seeds approaches the delta.
    draws = torch.stack([dare(ZERO, VECTORS[:1], drop_rate=0.5, seed=s)["w"] for s in range(1000)])
    assert torch.allclose(draws.mean(0), VECTORS[0]["w"], rtol=0.15)


# --- agreement with peft.utils.merge_utils, which merges one tensor at a time with per-task weights
# (weights of 1 here, our scale=1). Differences, by design:
#  * trimming: peft keeps int(density * numel) entries, i.e. none for tiny tensors; we keep at least one;
#  * density=1: peft warns and skips pruning; we accept it silently (same result);
#  * DARE: peft draws from torch's global RNG; we draw from a seeded torch.Generator, which gives the same
#    masks as the global RNG seeded alike, visiting tensors in the same order.


@pytest.fixture(scope="module")
def random_deltas():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(5, 7, generator=generator) for _ in range(3)]


def test_ties_agrees_with_peft(random_deltas):
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    ours = ties({"w": torch.zeros(5, 7)}, [{"w": d} for d in random_deltas], density=0.3)["w"]
    theirs = merge_utils.ties(random_deltas, torch.ones(3), density=0.3)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_ties_differs_from_peft_on_tiny_tensors():
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    vector = t(1, -3, 2, 0.5)  # int(0.2 * 4) = 0 entries to keep
    assert torch.equal(merge_utils.ties([vector], torch.ones(1), density=0.2), torch.zeros(4))
    assert torch.equal(ties(ZERO, [{"w": vector}], density=0.2)["w"], t(0, -3, 0, 0))


def test_dare_agrees_with_peft(random_deltas):
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    ours = dare({"w": torch.zeros(5, 7)}, [{"w": d} for d in random_deltas], drop_rate=0.6, seed=7)["w"]
    torch.manual_seed(7)
    theirs = merge_utils.dare_linear(random_deltas, torch.ones(3), density=0.4)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_lora_delta_matches_merge_and_unload():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=100))
    pretrained = {key: value.clone() for key, value in model.state_dict().items()}
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    with torch.no_grad():  # lora_B starts at zero, which would make the delta trivially zero
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_()
    delta = lora_delta(peft.get_peft_model_state_dict(lora), scaling=4 / 2)
    assert sorted(delta) == [f"encoder.layer.{i}.attention.self.{m}.weight" for i in (0, 1) for m in ("query", "value")]
    merged = lora.merge_and_unload().state_dict()
    expected = apply_task_vector(pretrained, delta)
    assert merged.keys() == expected.keys()
    for key in merged:
        assert torch.allclose(merged[key], expected[key], atol=1e-6), key


@pytest.mark.parametrize("call, error, message", [
    (lambda: task_arithmetic(ZERO, [], 1.0), InputError, "vectors is empty"),
    (lambda: average([ZERO, ZERO], weights=[1]), ConfigError, "weights has 1 entries but state_dicts has 2"),
    (lambda: average([ZERO, ZERO], weights=[1, -1]), ConfigError, r"weights must be non-negative"),
    (lambda: ties(ZERO, VECTORS, density=0), ConfigError, r"density must be in \(0, 1\], got 0"),
    (lambda: ties(ZERO, VECTORS, density=1.5), ConfigError, r"density must be in \(0, 1\], got 1.5"),
    (lambda: dare(ZERO, VECTORS, drop_rate=1.0), ConfigError, r"drop_rate must be in \[0, 1\), got 1.0"),
    (lambda: dare(ZERO, VECTORS, drop_rate=-0.1), ConfigError, r"drop_rate must be in \[0, 1\), got -0.1"),
    (lambda: dare(ZERO, VECTORS, combine="max"), ConfigError, "unknown combine 'max'"),
    (lambda: task_arithmetic(ZERO, [ZERO, {"w": torch.zeros(4), "b": torch.zeros(1)}], 1.0), InputError,
     "vectors\\[1\\] has key 'b' that vectors\\[0\\] lacks"),
    (lambda: task_arithmetic(ZERO, [ZERO, {}], 1.0), InputError,
     "vectors\\[0\\] has key 'w' that vectors\\[1\\] lacks"),
    (lambda: average([ZERO, {"w": torch.zeros(5)}]), InputError,
     r"key 'w': state_dicts\[1\] has shape \(5,\) but state_dicts\[0\] has \(4,\)"),
    (lambda: task_vector({}, ZERO), InputError, "pretrained has key 'w' that finetuned lacks"),
    (lambda: apply_task_vector(ZERO, {"b": torch.zeros(1)}), InputError, "vector has key 'b' that pretrained lacks"),
    (lambda: lora_delta({"base_model.model.q.lora_A.default.weight": torch.zeros(2, 4)}, 1.0), InputError,
     "lora_state key 'base_model.model.q.lora_A.default.weight'"),
    (lambda: lora_delta({"base_model.model.q.lora_A.weight": torch.zeros(2, 4)}, 1.0), InputError,
     "only lora_A for module 'q'"),
])
def test_errors_name_the_culprit(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- data-dependent merges

def test_fisher_merge_is_the_fisher_weighted_mean_of_the_experts_weights():
    from fusionkit.strategies.task_vectors import fisher_merge

    base = {"w": torch.tensor([1.0, 1.0, 1.0]), "ids": torch.tensor([7])}
    vectors = [{"w": torch.tensor([1.0, 2.0, 0.0])}, {"w": torch.tensor([3.0, 0.0, -2.0])}]  # thetas 2,3,1 and 4,1,-1
    fishers = [{"w": torch.tensor([1.0, 0.0, 3.0])}, {"w": torch.tensor([1.0, 0.0, 1.0])}]
    merged = fisher_merge(base, vectors, fishers, floor=0.0, normalize=False)
    # entry 0: equal Fisher, the mean (3); entry 2: 3:1 for the first expert, (3 * 1 + 1 * -1) / 4 = 0.5
    torch.testing.assert_close(merged["w"][[0, 2]], torch.tensor([3.0, 0.5]))
    assert torch.equal(merged["ids"], base["ids"])
    # where no expert has any Fisher, the floor leaves the plain mean (FusionBench's 1e-6)
    floored = fisher_merge(base, vectors, fishers, floor=1e-6, normalize=False)
    torch.testing.assert_close(floored["w"][1], torch.tensor(2.0))
    # normalised: each expert's Fisher divided by its global L2 norm (sqrt 10 and sqrt 2) before weighing
    normalised = fisher_merge(base, vectors, fishers, floor=0.0, normalize=True)
    a, b = 3.0 / 10 ** 0.5, 1.0 / 2 ** 0.5
    torch.testing.assert_close(normalised["w"][2], torch.tensor((a * 1 + b * -1) / (a + b)))


def test_regmean_solves_the_least_squares_merge_of_each_linear_layer():
    from fusionkit.strategies.task_vectors import regmean

    generator = torch.Generator().manual_seed(0)
    base = {"lin.weight": torch.randn(3, 4, generator=generator), "lin.bias": torch.zeros(3)}
    vectors = [{k: torch.randn(v.shape, generator=generator) for k, v in base.items()} for _ in range(2)]
    inputs = [torch.randn(50, 4, generator=generator) for _ in range(2)]
    grams = [{"lin": x.T @ x / len(x)} for x in inputs]
    merged = regmean(base, vectors, grams, off_diagonal=1.0)
    # W minimises sum_i ||X_i W^T - X_i W_i^T||^2: the stacked least-squares problem, solved by lstsq
    weights = [base["lin.weight"] + v["lin.weight"] for v in vectors]
    rows = torch.cat([x / len(x) ** 0.5 for x in inputs])
    targets = torch.cat([x @ w.T / len(x) ** 0.5 for x, w in zip(inputs, weights)])
    expected = torch.linalg.lstsq(rows, targets).solution.T
    torch.testing.assert_close(merged["lin.weight"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged["lin.bias"], (vectors[0]["lin.bias"] + vectors[1]["lin.bias"]) / 2)
    # off-diagonal 0: each input dimension alone, a per-column weighted mean by the diagonal of each Gram
    diagonal = regmean(base, vectors, grams, off_diagonal=0.0)["lin.weight"]
    d = [g["lin"].diagonal() for g in grams]
    torch.testing.assert_close(diagonal, (d[0] * weights[0] + d[1] * weights[1]) / (d[0] + d[1]))
    with pytest.raises(ConfigError, match="off_diagonal must be in"):
        regmean(base, vectors, grams, off_diagonal=2.0)
    with pytest.raises(InputError, match="grams has 1 entries but vectors has 2"):
        regmean(base, vectors, grams[:1])
