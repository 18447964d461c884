"""fusionkit's Fisher merging and RegMean against FusionBench's (``fusion-bench`` 0.2.33) on a small model.

FusionBench's package imports hydra, lightning and omegaconf at the top, none of which the kit needs, so it lives
in a folder of its own put on the path of this process:

    pip install --target /tmp/fusionbench_env --no-deps fusion-bench==0.2.33 omegaconf bidict hydra-core \
        antlr4-python3-runtime==4.9.3 lightning-utilities lightning torchmetrics
    PYTHONPATH=/tmp/fusionbench_env python benchmarks/merging_crosscheck.py

Two experts of the tiny BERT (the base plus random weight changes, each with its own head) and eight texts per
expert. fusionkit computes each expert's statistics (``merge.diagonal_fisher``, ``merge.input_grams``) and merges
(``task_vectors.fisher_merge``, ``task_vectors.regmean``); FusionBench's ``merging_with_fisher_weights`` and
``merging_with_regmean_weights`` merge the same weights with the same statistics at their defaults (Fisher
normalised, floor 1e-6; RegMean off-diagonal ratio 0.1). Prints the largest absolute difference of each merged
state, then how far FusionBench's own Fisher estimate (the squared gradient of ``sum_y sqrt(p_y) log p_y``, from
MergeLM) lies from the exact expectation fusionkit computes, then, last, ``max_abs_difference=`` of the merges
(target: within float tolerance, below 1e-5).
"""
from __future__ import annotations

import copy

import torch

TEXTS = [["a moving and funny film", "the plot drags", "great acting throughout", "i wanted my money back",
          "a small gem", "tedious and long", "sharp writing", "nothing works here"],
         ["the battery lasts all day", "the screen cracked at once", "easy to set up", "support never replied",
          "worth every penny", "it stopped charging", "light and fast", "the case feels cheap"]]


def experts(base):
    """Two fitted classifiers: the base plus random changes (std 0.02) and a random head each."""
    from fusionkit.modeling.heads import TextClassifier
    from fusionkit.modeling.training import History
    from fusionkit.strategies.base import FittedModel

    made = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        backbone = copy.deepcopy(base.model)
        with torch.no_grad():
            for param in backbone.parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
        module = TextClassifier(backbone, 2).eval()
        made.append(FittedModel(module, base.tokenizer, {}, History(), 0.0, 0))
    return made


def fusionbench_fisher(expert, texts: list[str]) -> dict[str, torch.Tensor]:
    """FusionBench's (MergeLM's) estimate, one text per batch: (d/dtheta sum_y sqrt(p_y) log p_y)^2."""
    from fusionkit.modeling.heads import TextCollator, model_inputs

    module = copy.deepcopy(expert.module)
    params = dict(module.backbone.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    collate = TextCollator(expert.tokenizer, 32)
    for text in texts:
        log_p = module(**model_inputs(collate([(text, 0)])))[0].log_softmax(-1)
        objective = (log_p.detach().exp().sqrt() * log_p).sum()
        grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
        for (name, _), grad in zip(params.items(), grads):
            if grad is not None:
                total[name] += grad ** 2
    return {name: value / len(texts) for name, value in total.items()}


def main() -> None:
    from fusion_bench.method.fisher_merging.fisher_merging import merging_with_fisher_weights
    from fusion_bench.method.regmean.regmean import merging_with_regmean_weights

    from fusionkit.modeling.encoders import load_encoder
    from fusionkit.strategies import task_vectors
    from fusionkit.strategies.merge import diagonal_fisher, input_grams

    base = load_encoder("tiny")
    pair = experts(base)
    base_state = {k: v for k, v in base.model.state_dict().items()}
    thetas = [dict(e.module.backbone.state_dict()) for e in pair]
    vectors = [task_vectors.task_vector(theta, base_state) for theta in thetas]
    by_name = {key: [theta[key] for theta in thetas] for key in vectors[0]}

    fishers = [diagonal_fisher(e, texts, 32) for e, texts in zip(pair, TEXTS)]
    ours = task_vectors.fisher_merge(base_state, vectors, fishers)
    theirs = merging_with_fisher_weights(by_name, fishers, torch.ones(2) / 2, normalize_fisher_weight=True,
                                         minimal_fisher_weight=1e-6)
    fisher_difference = max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)
    moved = max(float((ours[k] - base_state[k]).abs().max()) for k in theirs)
    print(f"fisher merge: max |difference| {fisher_difference:.2e} over {len(theirs)} weights "
          f"(the merge moves the base by up to {moved:.3f})")

    grams = [input_grams(e, texts, 32) for e, texts in zip(pair, TEXTS)]
    ours = task_vectors.regmean(base_state, vectors, grams, off_diagonal=0.1)
    theirs = merging_with_regmean_weights(by_name, grams, reduce_non_diagonal_ratio=0.1)
    regmean_difference = max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)
    solved = sum(1 for k in theirs if k.removesuffix(".weight") in grams[0])
    print(f"regmean: max |difference| {regmean_difference:.2e} over {len(theirs)} weights ({solved} linear layers "
          f"solved from their Gram matrices, the rest averaged)")

    estimate = [fusionbench_fisher(e, texts) for e, texts in zip(pair, TEXTS)]
    relative = max(float((a[k] - b[k]).norm() / b[k].norm()) for a, b in zip(estimate, fishers) for k in b
                   if b[k].norm() > 0)
    print(f"FusionBench's Fisher estimate (squared gradient of sum_y sqrt(p_y) log p_y) against the exact "
          f"expectation: largest relative L2 difference of a weight's Fisher {relative:.2f}")
    print(f"max_abs_difference={max(fisher_difference, regmean_difference):.2e}")


if __name__ == "__main__":
    main()
