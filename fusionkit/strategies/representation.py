"""``representation``: fuse the hidden states of the base encoder with those of frozen source experts.

Modes, on the pooled vector of each selected layer (h = base, e_s = expert s):
  sum       h + sum_s e_s                               (element-wise addition)
  concat    [h; e_1; ...; e_S]
  gated     h + sum_s sigmoid(W [h; e_s]) * e_s          (a learned gate per source and dimension)
  attention h + sum_s a_s V e_s, a = softmax_s(<Q h, K e_s> / sqrt(d))   (pooled multi-encoder attention;
            the base itself is one of the candidates unless include_base=False)
With layers="all" every layer is fused (one Q/K/V shared across layers) and the fused layer vectors are
averaged; with "last", only the pooled output. Encoders stay frozen, so training runs on cached features;
only the fusion layer and the head learn.

"attention" is not AdapterFusion (Pfeiffer et al. 2021), which attends over token-level adapter outputs
inside every layer with per-layer Q/K/V and feeds the next layer; here separate fine-tuned encoders are
pooled first and one attention over their vectors is learned. Its weights say what the layer attends to,
not that a source is useful: leave-one-source-out runs measure that.

With no sources, the same head trains on the base encoder alone: the matched control of every mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder, blank_encoder, pool
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group, train_loop
from fusionkit.strategies.base import Control, Strategy
from fusionkit.strategies.experts import ExpertKnobs, check_same_base, expert_artefacts, expert_backbone

MODES = ("sum", "concat", "gated", "attention")


@dataclass
class RepresentationKnobs(Knobs):
    # Only a small fusion layer trains, on cached features: a larger step and many cheap epochs.
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-3, epochs=30, patience=5)
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    mode: str = "attention"
    layers: str = "last"  # "last" (pooled output) or "all" (every transformer layer)
    include_base: bool = True
    dropout: float = 0.1


class FusionLayer(nn.Module):
    """Combines base [b, L, d] and expert [b, S, L, d] vectors into logits; see the module docstring."""

    def __init__(self, mode: str, num_sources: int, dim: int, num_labels: int, include_base: bool = True,
                 dropout: float = 0.1):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"representation: unknown mode '{mode}'; choose one of {MODES}")
        self.mode, self.include_base, self.dim = mode, include_base, dim
        if mode == "gated":
            self.gate = nn.Linear(2 * dim, dim)
        if mode == "attention":
            self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
            nn.init.zeros_(self.value.weight)  # start as the base alone: fusion must earn its contribution
            nn.init.zeros_(self.value.bias)
        width = dim * (num_sources + 1) if mode == "concat" else dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_labels)
        self.last_attention = None

    def fuse(self, base: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Fused vectors [b, L, width]; for "attention", ``last_attention`` holds weights [b, L, candidates]."""
        if self.mode == "sum":
            return base + experts.sum(dim=1)
        if self.mode == "concat":
            return torch.cat([base, *experts.unbind(dim=1)], dim=-1)
        if self.mode == "gated":
            stacked_base = base.unsqueeze(1).expand_as(experts)
            gates = torch.sigmoid(self.gate(torch.cat([stacked_base, experts], dim=-1)))
            return base + (gates * experts).sum(dim=1)
        candidates = torch.cat([base.unsqueeze(1), experts], dim=1) if self.include_base else experts
        scores = torch.einsum("bld,bsld->bls", self.query(base), self.key(candidates)) / self.dim ** 0.5
        weights = scores.softmax(dim=-1)
        self.last_attention = weights.detach()
        return base + torch.einsum("bls,bsld->bld", weights, self.value(candidates))

    def forward(self, base: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.fuse(base, experts).mean(dim=1)))


class RepresentationFusionModel(nn.Module):
    """Base and expert encoders (frozen) feeding the fusion layer: token ids -> logits."""

    def __init__(self, base: nn.Module, experts: list[nn.Module], fusion: FusionLayer, layers: list[int],
                 pooling: str):
        super().__init__()
        self.base, self.experts, self.fusion = base, nn.ModuleList(experts), fusion
        self.layers, self.pooling = layers, pooling
        for param in [*base.parameters(), *self.experts.parameters()]:
            param.requires_grad_(False)

    def _layer_vectors(self, encoder, input_ids, attention_mask) -> torch.Tensor:
        states = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        return torch.stack([pool(states[i], attention_mask, self.pooling) for i in self.layers], dim=1)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        base = self._layer_vectors(self.base, input_ids, attention_mask)
        experts = [self._layer_vectors(e, input_ids, attention_mask) for e in self.experts]
        experts = torch.stack(experts, dim=1) if experts else base.new_zeros(base.shape[0], 0, *base.shape[1:])
        return self.fusion(base, experts)


def _layer_indices(layers: str, num_layers: int) -> list[int]:
    if layers == "last":
        return [num_layers]
    if layers == "all":
        return list(range(1, num_layers + 1))
    raise ConfigError(f"representation: layers must be 'last' or 'all', got {layers!r}")


class FeatureBatches:
    """Collates example indices into batches of cached base and expert features."""

    def __init__(self, base: np.ndarray, experts: np.ndarray, labels: np.ndarray):
        self.base, self.experts, self.labels = (torch.as_tensor(x) for x in (base, experts, labels))

    def __call__(self, indices: list[int]) -> dict:
        index = torch.as_tensor(indices)
        return {"base": self.base[index], "experts": self.experts[index], "labels": self.labels[index]}


def _fusion_loss(model, batch):
    return F.cross_entropy(model(batch["base"], batch["experts"]), batch["labels"])


class RepresentationFusion(Strategy):
    name = "representation"
    Knobs = RepresentationKnobs
    needs_sources = True
    search_space = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [15, 30]}

    @classmethod
    def controls(cls):
        return [Control("no source", cls)]  # the same fusion layer and head on the base encoder's vectors alone

    def check_sources(self, sources):
        pass  # no sources: the control

    def requirements(self, target, sources, seed):
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _split_features(self, encoders: list[Encoder], target, layers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        cache = FeatureCache(self.workdir / "features")
        per_encoder = [cache.task_features(e, target, layers) for e in encoders]
        return {split: (base, np.stack([f[split] for f in per_encoder[1:]], axis=1) if len(per_encoder) > 1 else
                        np.zeros((base.shape[0], 0, *base.shape[1:]), dtype=base.dtype))
                for split, base in per_encoder[0].items()}  # [n, L, d], [n, S, L, d]

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        base = self.load_base()
        layers = _layer_indices(knobs.layers, base.num_layers)
        for expert in artefacts:
            check_same_base(expert, base.fingerprint())
        expert_models = [expert_backbone(e).to(self.device) for e in artefacts]
        encoders = [base] + [Encoder(m, base.tokenizer, f"expert-{e.spec['target']}", self.pooling, self.max_length)
                             for m, e in zip(expert_models, artefacts)]
        features = self._split_features(encoders, target, layers)
        arch = {"layers": layers, "num_sources": len(artefacts), "source_names": [e.spec["target"] for e in artefacts]}
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": arch}, [base.model, *expert_models]).to(self.device)
        fusion = module.fusion
        train_base, train_experts = features["train"]
        val_base, val_experts = (torch.as_tensor(x).to(self.device) for x in features["validation"])
        val_labels = np.asarray(target.validation["label"][:])

        @torch.no_grad()
        def evaluate() -> float:
            return float((fusion(val_base, val_experts).argmax(1).cpu().numpy() == val_labels).mean())

        batches = FeatureBatches(train_base, train_experts, np.asarray(target.train["label"][:]))
        history = train_loop(fusion, list(range(len(train_base))), batches, _fusion_loss, evaluate, knobs.train,
                             seed=seed, device=self.device)
        if knobs.mode == "attention":
            with torch.no_grad():
                fusion.eval()(val_base, val_experts)
            arch["attention_sources"] = (["base"] if knobs.include_base else []) + arch["source_names"]
            arch["attention_weights"] = fusion.last_attention.mean(dim=0).cpu().tolist()  # [L, candidates]
        with torch.no_grad():
            fusion.eval()
            probabilities = {split: fusion(*(torch.as_tensor(x).to(self.device) for x in pair)).double()
                             .softmax(dim=1).cpu().numpy() for split, pair in features.items()}
        return module.eval(), base, history, arch, probabilities

    @classmethod
    def build_module(cls, spec, backbones=None):
        knobs, arch = spec["knobs"], spec["arch"]
        backbones = backbones or [blank_encoder(spec).model for _ in range(arch["num_sources"] + 1)]
        fusion = FusionLayer(knobs["mode"], arch["num_sources"], backbones[0].config.hidden_size,
                             spec["num_labels"], knobs["include_base"], knobs["dropout"])
        return RepresentationFusionModel(backbones[0], backbones[1:], fusion, arch["layers"], spec["pooling"])


def fitted_attention_weights(fitted) -> tuple[np.ndarray, list[str], list[int]]:
    """Mean attention weight [layers, candidates] on the validation set, candidate names and layer indices."""
    arch = fitted.spec["arch"]
    if "attention_weights" not in arch:
        raise ConfigError("attention weights exist only for representation fusion with mode='attention'")
    return np.asarray(arch["attention_weights"]), arch["attention_sources"], arch["layers"]
