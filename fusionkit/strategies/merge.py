"""``merge``: weight-space fusion of the source experts' encoders, then a target head on the merged encoder.

Methods (registered in ``MERGE_METHODS``; the arithmetic is in ``task_vectors``): ``average`` of the
experts' weights, ``task_arithmetic`` (Ilharco et al. 2023), ``ties`` (Yadav et al. 2023) and ``dare``
(Yu et al. 2024); and two that weigh each expert by statistics of its own source's training texts
(``statistics_examples`` of them, the source split the expert was trained from, never the target's): ``fisher``
(Matena & Raffel 2022: the diagonal of each expert's Fisher information, exact expectation over its predicted
labels) and ``regmean`` (Jin et al. 2023: the Gram matrix of every linear layer's inputs). The merged encoder
stays frozen; the target head is a logistic-regression probe on its
(cached) features, so the matched control is the same probe on the base encoder: ``linear_probe`` with the
same C. The scale of the task vectors is a knob a study tunes on validation over Ilharco et al.'s grid (0.05 to 1
in steps of 0.05); scale 0, the base encoder itself, is the control, which the study runs as matched and tuned.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.heads import TextClassifier, TextCollator, model_inputs
from fusionkit.modeling.training import Knobs, knob_group
from fusionkit.strategies import task_vectors
from fusionkit.strategies.base import Control
from fusionkit.strategies.experts import (ExpertKnobs, check_expert, expert_artefacts, expert_backbone,
                                          expert_task_vector, shuffled_label_control)
from fusionkit.strategies.linear_probe import LinearProbe, ProbeKnobs, probe


@dataclass
class MergeKnobs(Knobs):
    probe: ProbeKnobs = knob_group(ProbeKnobs)
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    method: str = "task_arithmetic"
    scale: float = 1.0  # of the (summed) task vectors; 0 is the base encoder; "average" has none
    density: float = 0.2  # ties: share of each task vector kept
    drop_rate: float = 0.9  # dare: share of each task vector dropped
    statistics_examples: int = 256  # fisher, regmean: source training texts per expert (FusionBench's default)
    off_diagonal: float = 0.1  # regmean: scale of the Gram matrices' off-diagonal entries (FusionBench's default)
    # Per-source coefficients of a scaled method: "shared" (every task vector times ``scale``) or "searched" (one
    # coefficient per source in [0, 1], found gradient-free on the target's own training examples, as LoraHub does on
    # its few examples: Huang et al. 2024), in ``search_steps`` evaluations of the probe's ``search_folds``-fold
    # cross-validated cross-entropy on those examples, starting from ``scale`` for every source. The validation split
    # is read once per configuration, as for every other arm, so the search spends none of the tuning budget.
    # "adamerging" (task arithmetic only): one coefficient per source learned by gradient descent on the entropy of
    # the probe's predictions on unlabelled target texts (task-wise AdaMerging, Yang et al. 2024), ``entropy_steps``
    # Adam steps of ``entropy_lr`` on batches of ``entropy_batch`` texts from ``scale``; the probe is refitted on the
    # labelled training examples every ``entropy_refit`` steps and held fixed in between.
    coefficients: str = "shared"
    search_steps: int = 20
    search_folds: int = 4
    entropy_steps: int = 40
    entropy_lr: float = 0.02
    entropy_batch: int = 16
    entropy_refit: int = 10

    # added after the committed reports' merge runs, which used neither statistics nor searched coefficients
    ADDED: ClassVar[dict] = {"statistics_examples": 256, "off_diagonal": 0.1, "coefficients": "shared",
                             "search_steps": 20, "search_folds": 4, "entropy_steps": 40, "entropy_lr": 0.02,
                             "entropy_batch": 16, "entropy_refit": 10}


@torch.no_grad()
def input_grams(expert, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """RegMean's statistics: for every linear layer of the expert's encoder, ``X^T X / n`` over the real (unpadded)
    tokens of ``texts`` (X: the layer's inputs, one row per token)."""
    backbone = expert_backbone(expert)
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    mask: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]  # [batch, tokens, in]; [batch, in] for a layer on one vector per text (BERT's pooler)
            rows = (x[mask["tokens"]] if x.dim() == 3 else x).double()
            grams[name] = grams.get(name, 0) + rows.T @ rows
            counts[name] = counts.get(name, 0) + rows.shape[0]
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in backbone.named_modules()
               if isinstance(module, torch.nn.Linear)]
    collate = TextCollator(expert.tokenizer, max_length)
    try:
        for start in range(0, len(texts), 32):
            batch = model_inputs(collate([(text, 0) for text in texts[start:start + 32]]))
            mask["tokens"] = batch["attention_mask"].bool()
            backbone(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: (gram / counts[name]).float() for name, gram in grams.items()}


def diagonal_fisher(expert, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Fisher merging's statistics: the diagonal of the expert's Fisher information on ``texts``,
    ``mean_x sum_y p(y|x) (d log p(y|x) / d theta)^2`` over its encoder's weights (Matena & Raffel 2022, the
    expectation over the model's own predicted labels taken exactly, one gradient per label)."""
    backbone = expert_backbone(expert)
    classifier = TextClassifier(backbone, expert.module.head.out_features, expert.module.pooling).eval()
    classifier.head.load_state_dict(expert.module.head.state_dict())
    params = dict(backbone.named_parameters())
    for param in params.values():
        param.requires_grad_(True)
    fisher = {name: torch.zeros_like(param, dtype=torch.float64) for name, param in params.items()}
    collate = TextCollator(expert.tokenizer, max_length)
    for text in texts:
        log_p = classifier(**model_inputs(collate([(text, 0)])))[0].log_softmax(-1)
        for label, weight in enumerate(log_p.detach().exp().tolist()):
            grads = torch.autograd.grad(log_p[label], list(params.values()), retain_graph=True, allow_unused=True)
            for (name, _), grad in zip(params.items(), grads):
                if grad is not None:
                    fisher[name] += weight * grad.double() ** 2
    return {name: (value / len(texts)).float() for name, value in fisher.items()}


def search_coefficients(merge_with: Callable[[list[float]], Encoder], start: list[float], target, knobs: MergeKnobs,
                        seed: int) -> tuple[list[float], list[dict]]:
    """Per-source coefficients in [0, 1] minimising the probe's cross-validated cross-entropy on the target's
    training examples (LoraHub's gradient-free search on the few examples a user has, Huang et al. 2024; scipy's
    bounded Nelder-Mead here): ``knobs.search_steps`` evaluations from ``start``, each a merge, its features of the
    training texts, and ``knobs.search_folds`` probes, each fitted on the other folds and scored on its own
    (stratified folds, shuffled with ``seed``; the same folds at every step). Only the training split is read: the
    validation split stays the study's one comparison per configuration and the test split is never encoded.
    Returns the best coefficients seen and every evaluation (coefficients, cross-validated loss and accuracy)."""
    from scipy.optimize import minimize
    from sklearn.model_selection import StratifiedKFold

    from fusionkit.strategies.linear_probe import fit_logistic_head

    if knobs.search_steps < len(start) + 1:
        raise ConfigError(f"merge: knob 'search_steps' must be at least the sources + 1 ({len(start) + 1}: one "
                          f"simplex), got {knobs.search_steps!r}")
    texts, labels = list(target.train["text"][:]), np.asarray(target.train["label"][:])
    smallest = int(np.bincount(labels).min())
    if not 2 <= knobs.search_folds <= smallest:
        raise ConfigError(f"merge: knob 'search_folds' must be between 2 and the target's smallest class in its "
                          f"{len(labels)} training examples ({smallest}), got {knobs.search_folds!r}")
    folds = list(StratifiedKFold(knobs.search_folds, shuffle=True, random_state=seed).split(texts, labels))
    evaluations: list[dict] = []

    def cross_validated_loss(point: np.ndarray) -> float:
        coefficients = np.clip(point, 0.0, 1.0)
        features = merge_with(coefficients.tolist()).encode(texts)
        log_p = np.zeros((len(labels), target.num_labels))
        for fitted, held_out in folds:
            head, _ = fit_logistic_head({"train": features[fitted], "validation": features[held_out]},
                                        {"train": labels[fitted], "validation": labels[held_out]},
                                        target.num_labels, knobs.probe.c, knobs.probe.max_iter, seed)
            with torch.no_grad():
                log_p[held_out] = head(torch.as_tensor(features[held_out])).double().log_softmax(-1).numpy()
        loss = float(-log_p[np.arange(len(labels)), labels].mean())
        evaluations.append({"coefficients": [float(c) for c in coefficients], "cv_loss": loss,
                            "cv_accuracy": float((log_p.argmax(1) == labels).mean())})
        return loss

    start = np.asarray(start, dtype=float)
    # a first simplex that moves each source's coefficient by 0.5 towards the middle of [0, 1]
    simplex = np.vstack([start] + [start + np.eye(len(start))[i] * (0.5 if start[i] < 0.5 else -0.5)
                                   for i in range(len(start))])
    minimize(cross_validated_loss, start, method="Nelder-Mead", bounds=[(0.0, 1.0)] * len(start),
             options={"maxfev": knobs.search_steps, "initial_simplex": simplex})
    best = min(evaluations, key=lambda e: e["cv_loss"])
    return best["coefficients"], evaluations


def merged_forward(model: torch.nn.Module, base_state: dict, stacked: dict, lam: torch.Tensor, batch: dict):
    """The last hidden states of ``model`` with weights ``base + sum_k lam[k] * stacked[key][k]`` (task arithmetic
    with one coefficient per source; ``stacked``: key -> the sources' task vectors stacked on a first axis), as a
    function of ``lam`` that autograd differentiates (``torch.func.functional_call``; the model is not changed)."""
    from torch.func import functional_call

    params = {key: base_state[key] + torch.tensordot(lam, vectors, dims=1) for key, vectors in stacked.items()}
    return functional_call(model, params, args=(), kwargs=dict(batch)).last_hidden_state


def entropy_coefficients(base: Encoder, base_state: dict, vectors: list[dict], merge_with, start: list[float],
                         target, knobs: MergeKnobs, seed: int) -> tuple[list[float], list[dict]]:
    """Task-wise AdaMerging (Yang et al. 2024, "AdaMerging: Adaptive Model Merging for Multi-Task Learning"): the
    coefficients ``lam`` of ``base + sum_k lam_k * vector_k``, each in [0, 1], learned by Adam on the Shannon entropy
    of the predictions on unlabelled target texts, from ``start``. AdaMerging keeps each task's own head fixed; the
    target has none here, so its head is the probe fitted on the current merge's features of the labelled training
    examples, refitted every ``knobs.entropy_refit`` steps and fixed in between. The unlabelled texts are the target's
    training texts outside its labelled subsample (their labels are never read), or the labelled examples' texts
    when the subsample is the whole split; validation and test are never read. Returns the coefficients after the
    last step and every step's (coefficients, entropy)."""
    from fusionkit.modeling.encoders import pool
    from fusionkit.strategies.linear_probe import fit_logistic_head

    for name in ("entropy_steps", "entropy_batch", "entropy_refit"):
        if getattr(knobs, name) < 1:
            raise ConfigError(f"merge: knob {name!r} must be >= 1, got {getattr(knobs, name)!r}")
    if not knobs.entropy_lr > 0:
        raise ConfigError(f"merge: knob 'entropy_lr' must be > 0, got {knobs.entropy_lr!r}")
    labelled, labels = list(target.train["text"][:]), np.asarray(target.train["label"][:])
    unlabelled = list(target.unlabelled) or labelled
    rng = np.random.default_rng(seed)
    stacked = {key: torch.stack([vector[key] for vector in vectors]) for key in vectors[0]}
    lam = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([lam], lr=knobs.entropy_lr)
    model = base.model.eval()
    steps: list[dict] = []
    head = None
    for step in range(knobs.entropy_steps):
        if step % knobs.entropy_refit == 0:
            features = merge_with(lam.detach().tolist()).encode(labelled)
            head, _ = fit_logistic_head({"train": features, "validation": features}, {"train": labels,
                                        "validation": labels}, target.num_labels, knobs.probe.c,
                                        knobs.probe.max_iter, seed)
        batch = base.tokenize([unlabelled[i] for i in rng.choice(len(unlabelled), knobs.entropy_batch,
                                                                 replace=len(unlabelled) < knobs.entropy_batch)])
        hidden = merged_forward(model, base_state, stacked, lam, batch)
        log_p = head(pool(hidden, batch["attention_mask"], base.pooling)).log_softmax(-1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        optimiser.zero_grad()
        entropy.backward()
        optimiser.step()
        with torch.no_grad():
            lam.clamp_(0.0, 1.0)
        steps.append({"coefficients": [float(c) for c in lam.detach()], "entropy": float(entropy.detach())})
    return [float(c) for c in lam.detach()], steps


@dataclass(frozen=True)
class MergeMethod:
    """``merge(base_state, task_vectors, scale, knobs, seed, statistics) -> merged state``; ``scaled``: whether a
    scale is tuned; ``statistics(expert, source_texts, max_length)``: what a data-dependent merge needs of each
    expert (None: the weights alone), passed to ``merge`` as a list in the experts' order."""

    merge: Callable[..., dict]
    scaled: bool = True
    statistics: Callable[..., dict] | None = None


MERGE_METHODS: dict[str, MergeMethod] = {
    # The mean of the experts' weights is the base plus the mean task vector.
    "average": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                           task_vectors.task_arithmetic(base, vectors, 1 / len(vectors)), scaled=False),
    "task_arithmetic": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                                   task_vectors.task_arithmetic(base, vectors, scale)),
    "ties": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                        task_vectors.ties(base, vectors, knobs.density, scale)),
    "dare": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                        task_vectors.dare(base, vectors, knobs.drop_rate, scale, seed=seed)),
    "fisher": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                          task_vectors.fisher_merge(base, vectors, statistics), scaled=False,
                          statistics=diagonal_fisher),
    "regmean": MergeMethod(lambda base, vectors, scale, knobs, seed, statistics:
                           task_vectors.regmean(base, vectors, statistics, knobs.off_diagonal), scaled=False,
                           statistics=input_grams),
}


COEFFICIENTS = ("shared", "searched", "adamerging")
SCALE_GRID = [round(0.05 * step, 2) for step in range(1, 21)]  # 0.05, 0.10, ..., 1.0


class Merge(LinearProbe):  # the same module: a probe head on a (merged) frozen encoder
    name = "merge"
    Knobs = MergeKnobs
    needs_sources = True
    same_architecture = True
    # Ilharco et al. 2023 choose the scaling coefficient on validation from 0 to 1 in steps of 0.05. Scale 0 (the
    # base encoder) is left out: it is the matched control, which the study runs anyway, tuned and untuned.
    search_space = {"scale": SCALE_GRID, "c": [0.1, 1.0, 10.0]}

    @classmethod
    def controls(cls):
        # The same probe (same C) on the base encoder; and the same merge of random experts (shuffled labels).
        return [Control("no source", LinearProbe), shuffled_label_control(cls)]

    @classmethod
    def usable_kinds(cls, knobs):
        method = MERGE_METHODS.get(knobs.get("method", MergeKnobs.method))
        # the statistics of a data-dependent merge come from each source's own texts: a given model has none
        return ("task",) if method is not None and method.statistics is not None else cls.source_kinds

    @classmethod
    def seed_free(cls, whole_train_split):
        return False  # unlike the probe's: the experts it merges are trained with the run's seed

    def requirements(self, target, sources, seed):
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        if knobs.method not in MERGE_METHODS:
            raise ConfigError(f"merge: unknown method '{knobs.method}'; choose one of {tuple(MERGE_METHODS)}")
        method = MERGE_METHODS[knobs.method]
        if knobs.coefficients not in COEFFICIENTS:
            raise ConfigError(f"merge: knob 'coefficients' must be one of {COEFFICIENTS}, got {knobs.coefficients!r}")
        if knobs.coefficients == "searched" and not method.scaled:
            raise ConfigError(f"merge: method {knobs.method!r} has no coefficients to search; searched "
                              f"coefficients are for {[n for n, m in MERGE_METHODS.items() if m.scaled]}")
        if knobs.coefficients == "adamerging" and knobs.method != "task_arithmetic":
            raise ConfigError(f"merge: coefficients 'adamerging' learn task arithmetic's coefficients by gradient; "
                              f"method {knobs.method!r} is not differentiable in them")
        base = self.load_base()
        for expert in artefacts:
            check_expert(expert, base, "merging (it adds weight differences to the base encoder)")
        base_state = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
        # an adapter's delta covers only the modules it adapts: zero elsewhere, so it merges beside full experts
        vectors = task_vectors.complete([expert_task_vector(e, base_state) for e in artefacts], base_state)
        if knobs.scale < 0:
            raise ConfigError(f"merge: knob 'scale' must be >= 0 (0 is the base encoder), got {knobs.scale!r}")
        statistics = None
        if method.statistics is not None:
            statistics = [method.statistics(expert, self._source_texts(source, seed), self.max_length)
                          for expert, source in zip(artefacts, sources)]
        merged = copy.deepcopy(base.model)

        def merge_with(coefficients) -> Encoder:
            """The merge with these per-source coefficients (one shared: the method's own ``scale``)."""
            shared = len(set(coefficients)) == 1
            scaled = vectors if shared else [task_vectors.scaled(v, c) for v, c in zip(vectors, coefficients)]
            scale = (coefficients[0] if shared else 1.0) if method.scaled else None
            merged.load_state_dict(method.merge(base_state, scaled, scale, knobs, seed, statistics))
            return Encoder(merged, base.tokenizer, f"merged-{knobs.method}", self.pooling, self.max_length)

        arch = {"method": knobs.method, "scale": knobs.scale if method.scaled else None,
                "source_names": [e.spec["target"] for e in artefacts]}
        coefficients = [knobs.scale if method.scaled else 1.0] * len(vectors)
        if knobs.coefficients == "searched":
            coefficients, arch["coefficient_search"] = search_coefficients(merge_with, coefficients, target,
                                                                           knobs, seed)
            arch["scale"] = None
        elif knobs.coefficients == "adamerging":
            coefficients, arch["entropy_steps"] = entropy_coefficients(base, base_state, vectors, merge_with,
                                                                       coefficients, target, knobs, seed)
            arch["scale"] = None
        arch["coefficients"] = [float(c) for c in coefficients]
        module, history, probabilities = probe(merge_with(coefficients), target,
                                               FeatureCache(self.workdir / "features"), knobs.probe, seed)
        return module, base, history, arch, probabilities

    def _source_texts(self, source, seed: int) -> list[str]:
        """The training texts a data-dependent merge reads of a source: a stratified subsample of the source's own
        training split (the target's data is never read here)."""
        if not isinstance(source, Task):
            raise ConfigError(f"merge method {self.knobs.method!r} weighs each expert by statistics of its source's "
                              f"texts; source {getattr(source, 'name', source)!r} is not a task with texts")
        size = self.knobs.statistics_examples
        if size < 1:
            raise ConfigError(f"merge: knob 'statistics_examples' must be >= 1, got {size!r}")
        return list(source.subsample(size if size < len(source.train) else None, seed).train["text"][:])
