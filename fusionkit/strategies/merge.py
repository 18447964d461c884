"""``merge``: weight-space fusion of the source experts' encoders, then a target head on the merged encoder.

Methods (registered in ``MERGE_METHODS``; the arithmetic is in ``task_vectors``): ``average`` of the
experts' weights, ``task_arithmetic`` (Ilharco et al. 2023), ``ties`` (Yadav et al. 2023) and ``dare``
(Yu et al. 2024). The scale of the summed task vectors is chosen on target validation accuracy from
``scale_grid`` (``average`` has none). The merged encoder stays frozen; the target head is a
logistic-regression probe on its (cached) features.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.training import Knobs, knob_group
from fusionkit.strategies import task_vectors
from fusionkit.strategies.experts import ExpertKnobs, check_same_base, expert_artefacts, expert_task_vector
from fusionkit.strategies.linear_probe import LinearProbe, ProbeKnobs, probe


@dataclass
class MergeKnobs(Knobs):
    probe: ProbeKnobs = knob_group(ProbeKnobs)
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    method: str = "task_arithmetic"
    scale: float | None = None  # None: chosen on validation from scale_grid (ties/dare too)
    scale_grid: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    density: float = 0.2  # ties: share of each task vector kept
    drop_rate: float = 0.9  # dare: share of each task vector dropped


@dataclass(frozen=True)
class MergeMethod:
    """``merge(base_state, task_vectors, scale, knobs, seed) -> merged state``; ``scaled``: whether a scale is tuned."""

    merge: Callable[..., dict]
    scaled: bool = True


MERGE_METHODS: dict[str, MergeMethod] = {
    # The mean of the experts' weights is the base plus the mean task vector.
    "average": MergeMethod(lambda base, vectors, scale, knobs, seed:
                           task_vectors.task_arithmetic(base, vectors, 1 / len(vectors)), scaled=False),
    "task_arithmetic": MergeMethod(lambda base, vectors, scale, knobs, seed:
                                   task_vectors.task_arithmetic(base, vectors, scale)),
    "ties": MergeMethod(lambda base, vectors, scale, knobs, seed:
                        task_vectors.ties(base, vectors, knobs.density, scale)),
    "dare": MergeMethod(lambda base, vectors, scale, knobs, seed:
                        task_vectors.dare(base, vectors, knobs.drop_rate, scale, seed=seed)),
}


class Merge(LinearProbe):  # the same module: a probe head on a (merged) frozen encoder
    name = "merge"
    Knobs = MergeKnobs
    needs_sources = True

    def requirements(self, target, sources, seed):
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        if knobs.method not in MERGE_METHODS:
            raise ConfigError(f"merge: unknown method '{knobs.method}'; choose one of {tuple(MERGE_METHODS)}")
        method = MERGE_METHODS[knobs.method]
        base = self.load_base()
        for expert in artefacts:
            check_same_base(expert, base.fingerprint())
        base_state = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
        vectors = [expert_task_vector(e, base_state) for e in artefacts]
        scales = ([knobs.scale] if knobs.scale else knobs.scale_grid) if method.scaled else [None]
        cache = FeatureCache(self.workdir / "features")
        best, scores = None, {}
        for scale in scales:
            merged = copy.deepcopy(base.model)
            merged.load_state_dict(method.merge(base_state, vectors, scale, knobs, seed))
            encoder = Encoder(merged, base.tokenizer, f"merged-{knobs.method}", self.pooling, self.max_length)
            module, history = probe(encoder, target, cache, knobs.probe, seed)
            scores[str(scale)] = max(history.val_metric)
            if best is None or scores[str(scale)] > best[0]:
                best = (scores[str(scale)], scale, module, history)
        _, scale, module, history = best
        arch = {"method": knobs.method, "scale": scale, "validation_by_scale": scores,
                "source_names": [e.spec["target"] for e in artefacts]}
        return module, base, history, arch
