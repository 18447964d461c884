"""``merge``: weight-space fusion of the source experts' encoders, then a target head on the merged encoder.

Methods (arithmetic in ``fusionkit.merging``): ``average`` of the experts' weights, ``task_arithmetic``
(scale chosen on target validation accuracy from ``scale_grid``), ``ties`` and ``dare``. The merged
encoder stays frozen; the target head is a logistic-regression probe on its (cached) features.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from fusionkit import merging
from fusionkit.encoders import Encoder
from fusionkit.errors import ConfigError
from fusionkit.experts import ExpertKnobs, expert_backbone, get_expert
from fusionkit.features import FeatureCache
from fusionkit.fusion.linear_probe import LinearProbe, ProbeKnobs, probe

METHODS = ("average", "task_arithmetic", "ties", "dare")


@dataclass
class MergeKnobs(ProbeKnobs, ExpertKnobs):
    method: str = "task_arithmetic"
    scale: float | None = None  # None: chosen on validation from scale_grid (ties/dare too)
    scale_grid: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    density: float = 0.2  # ties: share of each task vector kept
    drop_rate: float = 0.9  # dare: share of each task vector dropped


def expert_task_vector(expert, base_state: dict) -> dict:
    """finetuned - pretrained; a LoRA expert's vector comes straight from its low-rank factors."""
    backbone = expert.module.backbone
    if hasattr(backbone, "peft_config"):
        from peft import get_peft_model_state_dict

        config = backbone.peft_config["default"]
        return merging.lora_delta(get_peft_model_state_dict(backbone), config.lora_alpha / config.r)
    return merging.task_vector(expert_backbone(expert).state_dict(), base_state)


class Merge(LinearProbe):  # the same module: a probe head on a (merged) frozen encoder
    name = "merge"
    Knobs = MergeKnobs
    needs_sources = True

    def _merged_state(self, base_state: dict, experts: list, scale: float, seed: int) -> dict:
        knobs = self.knobs
        if knobs.method == "average":
            return merging.average([expert_backbone(e).state_dict() for e in experts])
        vectors = [expert_task_vector(e, base_state) for e in experts]
        if knobs.method == "task_arithmetic":
            return merging.task_arithmetic(base_state, vectors, scale)
        if knobs.method == "ties":
            return merging.ties(base_state, vectors, knobs.density, scale)
        return merging.dare(base_state, vectors, knobs.drop_rate, scale, seed=seed)

    def _fit(self, target, sources, seed):
        knobs = self.knobs
        if knobs.method not in METHODS:
            raise ConfigError(f"merge: unknown method '{knobs.method}'; choose one of {METHODS}")
        base = self.load_base()
        experts = [get_expert(source, self, seed, base.fingerprint()) for source in sources]
        base_state = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
        scales = [None] if knobs.method == "average" else ([knobs.scale] if knobs.scale else knobs.scale_grid)
        cache = FeatureCache(self.workdir / "features")
        best, scores = None, {}
        for scale in scales:
            merged = copy.deepcopy(base.model)
            merged.load_state_dict(self._merged_state(base_state, experts, scale, seed))
            encoder = Encoder(merged, base.tokenizer, f"merged-{knobs.method}", self.pooling, self.max_length)
            module, history = probe(encoder, target, cache, knobs, seed)
            scores[str(scale)] = max(history.val_metric)
            if best is None or scores[str(scale)] > best[0]:
                best = (scores[str(scale)], scale, module, history)
        _, scale, module, history = best
        arch = {"method": knobs.method, "scale": scale, "validation_by_scale": scores,
                "source_names": [e.spec["target"] for e in experts]}
        return module, base.tokenizer, history, arch
