"""``merge``: weight-space fusion of the source experts' encoders, then a target head on the merged encoder.

Methods (registered in ``MERGE_METHODS``; the arithmetic is in ``task_vectors``): ``average`` of the
experts' weights, ``task_arithmetic`` (Ilharco et al. 2023), ``ties`` (Yadav et al. 2023) and ``dare``
(Yu et al. 2024). The merged encoder stays frozen; the target head is a logistic-regression probe on its
(cached) features, so the matched control is the same probe on the base encoder: ``linear_probe`` with the
same C. The scale of the task vectors is a knob a study tunes on validation over Ilharco et al.'s grid (0.05 to 1
in steps of 0.05); scale 0, the base encoder itself, is the control, which the study runs as matched and tuned.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.training import Knobs, knob_group
from fusionkit.strategies import task_vectors
from fusionkit.strategies.base import Control
from fusionkit.strategies.experts import (ExpertKnobs, check_expert, expert_artefacts, expert_task_vector,
                                          shuffled_label_control)
from fusionkit.strategies.linear_probe import LinearProbe, ProbeKnobs, probe


@dataclass
class MergeKnobs(Knobs):
    probe: ProbeKnobs = knob_group(ProbeKnobs)
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    method: str = "task_arithmetic"
    scale: float = 1.0  # of the (summed) task vectors; 0 is the base encoder; "average" has none
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
    def seed_free(cls, whole_train_split):
        return False  # unlike the probe's: the experts it merges are trained with the run's seed

    def requirements(self, target, sources, seed):
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        if knobs.method not in MERGE_METHODS:
            raise ConfigError(f"merge: unknown method '{knobs.method}'; choose one of {tuple(MERGE_METHODS)}")
        method = MERGE_METHODS[knobs.method]
        base = self.load_base()
        for expert in artefacts:
            check_expert(expert, base, "merging (it adds weight differences to the base encoder)")
        base_state = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
        # an adapter's delta covers only the modules it adapts: zero elsewhere, so it merges beside full experts
        vectors = task_vectors.complete([expert_task_vector(e, base_state) for e in artefacts], base_state)
        if knobs.scale < 0:
            raise ConfigError(f"merge: knob 'scale' must be >= 0 (0 is the base encoder), got {knobs.scale!r}")
        merged = copy.deepcopy(base.model)
        merged.load_state_dict(method.merge(base_state, vectors, knobs.scale if method.scaled else None, knobs, seed))
        encoder = Encoder(merged, base.tokenizer, f"merged-{knobs.method}", self.pooling, self.max_length)
        module, history, probabilities = probe(encoder, target, FeatureCache(self.workdir / "features"),
                                               knobs.probe, seed)
        arch = {"method": knobs.method, "scale": knobs.scale if method.scaled else None,
                "source_names": [e.spec["target"] for e in artefacts]}
        return module, base, history, arch, probabilities
