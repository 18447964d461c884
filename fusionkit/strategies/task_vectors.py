"""Model merging as arithmetic on state dicts (``dict[str, torch.Tensor]``).

A task vector is ``finetuned - pretrained`` (Ilharco et al. 2023); the merges combine task vectors
key by key and add the result back onto the pretrained weights: task arithmetic (sum), TIES
(Yadav et al. 2023: trim, elect sign, disjoint mean) and DARE (Yu et al. 2024: drop and rescale). Two merges
weigh each expert by statistics of its own source data: Fisher merging (Matena & Raffel 2022: per-weight
diagonal Fisher information) and RegMean (Jin et al. 2023: each linear layer's least-squares merge from the
Gram matrices of its inputs); both take the statistics as tensors (the merge strategy computes them).
Task arithmetic and DARE call peft's ``merge_utils`` for the per-tensor arithmetic; TIES keeps its own,
since its trimming convention differs from peft's (see ``ties``).
``lora_delta`` turns a peft LoRA adapter into a dense task vector so it merges like any other.

Bad state dicts (empty lists, missing keys, shape mismatches) raise ``InputError``; bad knobs
(density, drop_rate, weights, combine) raise ``ConfigError``. Both name the key or argument at fault.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from peft.utils import merge_utils

from fusionkit.errors import ConfigError, InputError

StateDict = dict[str, torch.Tensor]

LORA_PREFIX = "base_model.model."  # how peft's get_peft_model_state_dict prefixes the base model's names


def task_vector(finetuned: StateDict, pretrained: StateDict) -> StateDict:
    """``finetuned - pretrained`` on every floating-point key; integer buffers (position_ids) are not weights."""
    _check_same_keys(pretrained, finetuned, "pretrained", "finetuned")
    return {key: finetuned[key] - p for key, p in pretrained.items() if p.is_floating_point()}


def complete(vectors: Sequence[StateDict], pretrained: StateDict) -> list[StateDict]:
    """Each vector over every floating-point weight of ``pretrained``: a weight a vector lacks moved by 0 (a LoRA
    adapter's delta covers only the modules it adapts), so vectors of full experts and adapters merge key by key.
    A key that ``pretrained`` lacks, or a shape that differs from it, is an InputError."""
    for index, vector in enumerate(vectors):
        _check_subset(pretrained, vector, "pretrained", f"vectors[{index}]")
    return [{key: vector[key] if key in vector else torch.zeros_like(p) for key, p in pretrained.items()
             if p.is_floating_point()} for vector in vectors]


def apply_task_vector(pretrained: StateDict, vector: StateDict, scale: float = 1.0) -> StateDict:
    """``pretrained + scale * vector``; keys the vector lacks (integer buffers, untouched layers) are kept."""
    _check_subset(pretrained, vector, "pretrained", "vector")
    return {key: p + scale * vector[key] if key in vector else p for key, p in pretrained.items()}


def scaled(vector: StateDict, coefficient: float) -> StateDict:
    """``coefficient * vector``: one source's coefficient before a merge combines the vectors."""
    return {key: coefficient * tensor for key, tensor in vector.items()}


def average(state_dicts: Sequence[StateDict], weights: Sequence[float] | None = None) -> StateDict:
    """Parameter average of full state dicts (a model soup): ``sum(w_i * theta_i) / sum(w_i)``."""
    if weights is None:
        weights = [1.0] * len(state_dicts)
    elif len(weights) != len(state_dicts):
        raise ConfigError(f"weights has {len(weights)} entries but state_dicts has {len(state_dicts)}")
    elif any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights must be non-negative and not all zero, got {list(weights)}")
    total = sum(weights)
    return _map_keys(state_dicts, lambda ts: sum(w * t for w, t in zip(weights, ts)) / total, "state_dicts")


def _weighted_sum(tensors: list[torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    return merge_utils.task_arithmetic(tensors, torch.full((len(tensors),), weight, dtype=tensors[0].dtype))


def task_arithmetic(pretrained: StateDict, vectors: Sequence[StateDict], scale: float) -> StateDict:
    """``pretrained + scale * sum(vectors)`` (peft's ``task_arithmetic`` merge, key by key); no default scale:
    the paper tunes it on validation data."""
    return apply_task_vector(pretrained, _map_keys(vectors, _weighted_sum, "vectors"), scale)


def ties(pretrained: StateDict, vectors: Sequence[StateDict], density: float = 0.2,
         scale: float = 1.0) -> StateDict:
    """TIES-merging: ``pretrained + scale * disjoint_mean(elect(trim(vectors, density)))``.

    Trimming keeps the top ``density`` fraction of each tensor, as peft does (the paper's code ranks each task's
    whole flattened vector at once); unlike peft, at least one entry of every tensor survives.
    """
    if not 0 < density <= 1:
        raise ConfigError(f"density must be in (0, 1], got {density!r}")
    return apply_task_vector(pretrained, _map_keys(vectors, lambda ts: _ties_merge(ts, density), "vectors"), scale)


# How dare() combines the dropped-and-rescaled vectors: the weight of each in peft's weighted sum.
COMBINE: dict[str, Callable[[int], float]] = {
    "sum": lambda count: 1.0,
    "mean": lambda count: 1.0 / count,
}


def dare(pretrained: StateDict, vectors: Sequence[StateDict], drop_rate: float = 0.9, scale: float = 1.0,
         seed: int = 0, combine: str = "sum") -> StateDict:
    """DARE: drop each delta entry with probability ``drop_rate``, rescale survivors by ``1 / (1 - drop_rate)``,
    then combine the vectors (``"sum"``: task arithmetic, as in the paper and peft's dare_linear; or ``"mean"``)
    and add ``scale *`` the result to ``pretrained``. The masks are peft's ``dare_linear`` draws from torch's
    generator seeded with ``seed`` (forked, so the caller's random state is left as it was): the same seed
    gives the same masks."""
    if not 0 <= drop_rate < 1:
        raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if combine not in COMBINE:
        raise ConfigError(f"unknown combine {combine!r}; choose one of {tuple(COMBINE)}")

    def drop_and_combine(tensors: list[torch.Tensor]) -> torch.Tensor:
        weight = COMBINE[combine](len(tensors))
        if drop_rate == 0:  # nothing to drop (peft would warn that it prunes nothing)
            return _weighted_sum(tensors, weight)
        weights = torch.full((len(tensors),), weight, dtype=tensors[0].dtype)
        return merge_utils.dare_linear(tensors, weights, density=1 - drop_rate)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        merged = _map_keys(vectors, drop_and_combine, "vectors")
    return apply_task_vector(pretrained, merged, scale)


def fisher_merge(pretrained: StateDict, vectors: Sequence[StateDict], fishers: Sequence[StateDict],
                 floor: float = 1e-6, normalize: bool = True) -> StateDict:
    """Fisher merging: each weight the Fisher-weighted mean of the experts' ``theta_i = pretrained + vectors[i]``,
    ``sum_i c_i (F_i + floor) theta_i / sum_i c_i (F_i + floor)``.

    As FusionBench's ``merging_with_fisher_weights`` (its defaults): ``floor`` keeps a weight no expert's Fisher
    reaches at their plain mean, and with ``normalize`` each expert's Fisher counts in inverse proportion to its
    L2 norm over all weights (``c_i``), so that an expert whose loss is steeper everywhere does not win every weight.
    """
    if len(fishers) != len(vectors):
        raise InputError(f"fishers has {len(fishers)} entries but vectors has {len(vectors)}: one Fisher per expert")
    for index, fisher in enumerate(fishers):
        _check_same_keys(vectors[index], fisher, f"vectors[{index}]", f"fishers[{index}]")
    share = torch.full((len(vectors),), 1.0 / len(vectors), dtype=torch.float64)
    if normalize:
        inverse = torch.stack([1.0 / (_global_norm(f) + floor) for f in fishers]).double()
        share = share * inverse / inverse.sum()

    def weighted_mean(key: str) -> torch.Tensor:
        weights = torch.stack([c * (f[key].double() + floor) for c, f in zip(share, fishers)])
        thetas = torch.stack([pretrained[key].double() + v[key].double() for v in vectors])
        return ((weights * thetas).sum(0) / weights.sum(0)).to(pretrained[key].dtype)

    _check_subset(pretrained, vectors[0], "pretrained", "vectors[0]")
    return {key: weighted_mean(key) if key in vectors[0] else p for key, p in pretrained.items()}


def _global_norm(tensors: StateDict) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors.values()]))


def regmean(pretrained: StateDict, vectors: Sequence[StateDict], grams: Sequence[dict[str, torch.Tensor]],
            off_diagonal: float = 0.1) -> StateDict:
    """RegMean: for every linear layer ``m`` with a Gram matrix ``G_i = X_i^T X_i / n_i`` of its inputs on expert i's
    source data, ``W = (sum_i G_i')^-1 sum_i G_i' W_i`` (in the ``x W^T`` convention: on ``W_i^T``), the weight that
    minimises ``sum_i ||X_i W^T - X_i W_i^T||^2``; ``G_i'`` keeps the diagonal and scales the rest by
    ``off_diagonal`` (Jin et al.'s alpha; FusionBench's ``reduce_non_diagonal_ratio``, default 0.1). Every other
    weight (biases, LayerNorms, embeddings) is the experts' mean. ``grams[i]`` maps module names (a weight key
    without ``.weight``) to [in, in] matrices."""
    if len(grams) != len(vectors):
        raise InputError(f"grams has {len(grams)} entries but vectors has {len(vectors)}: one set per expert")
    if not 0 <= off_diagonal <= 1:
        raise ConfigError(f"off_diagonal must be in [0, 1], got {off_diagonal!r}")
    _check_subset(pretrained, vectors[0], "pretrained", "vectors[0]")
    merged = {}
    for key, p in pretrained.items():
        if key not in vectors[0]:
            merged[key] = p
            continue
        thetas = [p + v[key] for v in vectors]
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and all(module in g for g in grams):
            scaled = [_reduce_off_diagonal(g[module].double(), off_diagonal) for g in grams]
            total = sum(scaled)
            rhs = sum(g @ theta.double().T for g, theta in zip(scaled, thetas))
            merged[key] = torch.linalg.solve(total, rhs).T.to(p.dtype).contiguous()
        else:
            merged[key] = torch.stack(thetas).mean(0)
    return merged


def _reduce_off_diagonal(gram: torch.Tensor, ratio: float) -> torch.Tensor:
    diagonal = torch.diag(gram.diagonal())
    return ratio * (gram - diagonal) + diagonal


def lora_delta(lora_state: StateDict, scaling: float) -> StateDict:
    """Dense task vector of a peft LoRA adapter: ``delta W = B @ A * scaling`` for each adapted module.

    ``lora_state`` is what ``peft.get_peft_model_state_dict`` returns (keys
    ``base_model.model.<module>.lora_A.weight`` / ``...lora_B.weight``); the result is keyed by the base
    model's ``<module>.weight``. ``scaling`` is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
    Only linear layers without fan_in_fan_out: embedding LoRA and GPT-2 Conv1D store their factors differently.
    """
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in lora_state.items():
        module, _, factor = key.rpartition(".lora_")
        if not module.startswith(LORA_PREFIX) or factor not in ("A.weight", "B.weight"):
            raise InputError(f"lora_state key {key!r} is not '{LORA_PREFIX}<module>.lora_A.weight' or "
                             "'...lora_B.weight' as get_peft_model_state_dict writes them")
        factors.setdefault(module.removeprefix(LORA_PREFIX), {})[factor[0]] = tensor
    delta = {}
    for module, ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise InputError(f"lora_state has only lora_{''.join(ab)} for module {module!r}; need lora_A and lora_B")
        if ab["B"].shape[1] != ab["A"].shape[0]:
            raise InputError(f"lora_state module {module!r}: lora_B {tuple(ab['B'].shape)} and lora_A "
                             f"{tuple(ab['A'].shape)} have different ranks")
        delta[f"{module}.weight"] = ab["B"] @ ab["A"] * scaling
    return delta


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ``density`` fraction of entries by magnitude, zero the rest."""
    # At least one entry survives: int(density * numel) is 0 for tiny tensors, which would silently drop them.
    k = max(1, int(density * delta.numel()))
    flat = delta.flatten()
    top = flat.abs().topk(k).indices
    return torch.zeros_like(flat).index_copy_(0, top, flat[top]).view_as(delta)


def _ties_merge(deltas: list[torch.Tensor], density: float) -> torch.Tensor:
    trimmed = torch.stack([_trim(d, density) for d in deltas])
    elected = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)  # sign of the larger total mass; a tie goes to +
    agrees = trimmed.sign() == elected  # trimmed entries have sign 0, so they never count towards the mean
    return (trimmed * agrees).sum(0) / agrees.sum(0).clamp(min=1)


def _map_keys(state_dicts: Sequence[StateDict], op: Callable[[list[torch.Tensor]], torch.Tensor],
              name: str) -> StateDict:
    """``op`` over the tensors the state dicts hold under each floating-point key; integer buffers are
    copied from the first. The state dicts must hold the same keys with the same shapes."""
    if not state_dicts:
        raise InputError(f"{name} is empty: need at least one state dict")
    first = state_dicts[0]
    for i, other in enumerate(state_dicts[1:], start=1):
        _check_same_keys(first, other, f"{name}[0]", f"{name}[{i}]")
    return {key: op([sd[key] for sd in state_dicts]) if t.is_floating_point() else t for key, t in first.items()}


def _check_same_keys(a: StateDict, b: StateDict, a_name: str, b_name: str) -> None:
    _check_subset(a, b, a_name, b_name)
    _check_subset(b, a, b_name, a_name)


def _check_subset(reference: StateDict, other: StateDict, ref_name: str, other_name: str) -> None:
    """Every key of ``other`` is in ``reference`` with the same shape."""
    for key, tensor in other.items():
        if key not in reference:
            raise InputError(f"{other_name} has key {key!r} that {ref_name} lacks")
        if tensor.shape != reference[key].shape:
            raise InputError(f"key {key!r}: {other_name} has shape {tuple(tensor.shape)} but {ref_name} has "
                             f"{tuple(reference[key].shape)}")
