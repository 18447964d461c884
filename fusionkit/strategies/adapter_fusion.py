"""``adapter_fusion``: AdapterFusion (Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for
Transfer Learning").

Stage 1, knowledge extraction: one bottleneck adapter per source task in every layer of the frozen base encoder
(the ``adapter`` strategy as a source expert, ``expert_kind: adapter``: trained once per source and seed, kept
and healed like every expert). Stage 2, knowledge composition: on the target, every layer gets an attention whose
query is the layer's output and whose keys and values are the source adapters' outputs, token by token
(``modeling.adapters``); the encoder and the adapters stay frozen, only the fusion layers and the head train, with
the paper's penalty 0.01 * ||I - V||^2 keeping each value matrix near the identity it starts from.

The matched control is what the paper compares with: one adapter trained on the target alone (``adapter``) with
the same training configuration; the study also tunes it with the same budget. The per-layer, per-source
attention weights on the validation split are kept with the run (the figure Pfeiffer et al. draw).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from fusionkit.errors import ConfigError
from fusionkit.modeling.adapters import (PFEIFFER_REDUCTION, add_adapters, add_fusion, adapter_state, fusion_layers,
                                         load_adapter_state)
from fusionkit.modeling.heads import TextClassifier, TextCollator, model_inputs
from fusionkit.modeling.encoders import blank_encoder
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group
from fusionkit.strategies.base import Control, Strategy
from fusionkit.strategies.experts import ExpertKnobs, check_same_base, expert_artefacts, shuffled_label_control
from fusionkit.strategies.finetune import ADAPTER_NAME, Adapter, cross_entropy_loss, train_classifier


@dataclass
class AdapterFusionKnobs(Knobs):
    # Pfeiffer et al. train the fusion with lr 5e-5 for 10 epochs on whole datasets; at a few hundred examples the
    # same number of updates needs a larger step (the study searches it on validation).
    train: TrainKnobs = knob_group(TrainKnobs, lr=5e-4)
    experts: ExpertKnobs = knob_group(ExpertKnobs, expert_kind="adapter")
    head_init: str = "random"
    reduction_factor: int = PFEIFFER_REDUCTION  # of the source adapters (and of the target-only control's)
    value_regularization: float = 0.01  # weight of ||I - V||^2 summed over layers (the paper's 0.01)
    fusion_dropout: float = 0.1  # on the attention scores (AdapterHub: the encoder's attention dropout)


def _slot(index: int) -> str:
    """The adapter's name inside the model: a source's own name may hold characters a module name cannot."""
    return f"source{index}"


class AdapterFusion(Strategy):
    name = "adapter_fusion"
    Knobs = AdapterFusionKnobs
    needs_sources = True
    source_kinds = ("task",)  # a bottleneck adapter per source task, trained here
    search_space = {"lr": [1e-4, 5e-4, 2e-3], "epochs": [3, 6]}

    @classmethod
    def controls(cls):
        # An adapter trained on the target alone, same configuration (the paper's ST-A); and the same fusion over
        # adapters trained on their sources with shuffled labels (as many adapters and fusion weights, no knowledge).
        return [Control("no source", Adapter), shuffled_label_control(cls)]

    def _expert_knobs(self) -> ExpertKnobs:
        experts = self.knobs.experts
        if experts.expert_kind != "adapter":
            raise ConfigError(f"adapter_fusion fuses bottleneck adapters: its experts must have expert_kind "
                              f"'adapter', got {experts.expert_kind!r}")
        return replace(experts, expert_knobs={**experts.expert_knobs,
                                              "reduction_factor": self.knobs.reduction_factor})

    def requirements(self, target, sources, seed):
        return expert_artefacts(self._expert_knobs(), self.settings, sources, seed)

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        base = self.load_base()
        for expert in artefacts:
            if expert.spec.get("strategy") != Adapter.name:
                raise ConfigError(f"adapter_fusion: source {expert.spec.get('target')!r} is a "
                                  f"{expert.spec.get('strategy')} model, not a bottleneck adapter")
            check_same_base(expert, base.fingerprint())
        arch = {"source_names": [expert.spec["target"] for expert in artefacts]}
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": arch}, [base.model]).to(self.device)
        for index, expert in enumerate(artefacts):
            load_adapter_state(module.backbone, _slot(index), adapter_state(expert.module.backbone, ADAPTER_NAME))
        fusions = fusion_layers(module.backbone)

        def loss(model, batch):
            penalty = sum(fusion.value_regularization() for fusion in fusions)
            return cross_entropy_loss(model, batch) + knobs.value_regularization * penalty

        history = train_classifier(module, base.tokenizer, target, knobs.train, seed, self.max_length,
                                   knobs.head_init, loss=loss)
        weights = mean_fusion_attention(module, base.tokenizer, list(target.validation["text"][:]), self.max_length)
        arch.update(attention_weights=weights.tolist(), attention_sources=arch["source_names"],
                    layers=list(range(1, len(fusions) + 1)))
        return module, base, history, arch

    @classmethod
    def build_module(cls, spec, backbones=None):
        knobs = AdapterFusionKnobs.from_knobs(spec["knobs"])
        backbone = backbones[0] if backbones else blank_encoder(spec).model
        add_adapters(backbone, [_slot(i) for i in range(len(spec["arch"]["source_names"]))], knobs.reduction_factor)
        add_fusion(backbone, knobs.fusion_dropout)
        for name, param in backbone.named_parameters():
            param.requires_grad_(".fusion." in name)
        return TextClassifier(backbone, spec["num_labels"], spec["pooling"])


@torch.no_grad()
def mean_fusion_attention(module: TextClassifier, tokenizer, texts: list[str], max_length: int,
                          batch_size: int = 64) -> np.ndarray:
    """Attention weight [layers, sources] averaged over every real (unpadded) token of ``texts``."""
    module.eval()
    fusions = fusion_layers(module.backbone)
    device = next(module.parameters()).device
    collate = TextCollator(tokenizer, max_length)
    totals, tokens = None, 0.0
    for start in range(0, len(texts), batch_size):
        batch = {k: v.to(device) for k, v in model_inputs(collate([(t, 0) for t in texts[start:start + batch_size]]))
                 .items()}
        module(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        summed = torch.stack([(fusion.last_attention * mask).sum(dim=(0, 1)) for fusion in fusions])
        totals = summed if totals is None else totals + summed
        tokens += float(mask.sum())
    return (totals / tokens).cpu().numpy()

