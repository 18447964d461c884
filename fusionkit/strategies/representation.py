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

A source may also be a given model of any architecture (its own tokenizer; projected to the base's width when
they differ) or knowledge features, a vector per example from the target's own columns, projected the same way:
"sum" is then the original ``fused = encoder output + W knowledge`` (``fusionkit.strategies.knowledge``).

With no sources, the same head trains on the base encoder alone: the matched control of every mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.data.tasks import KNOWLEDGE_PREFIX
from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder, load_encoder, load_tokenizer
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group, train_loop
from fusionkit.strategies.base import Control, FittedModel, Strategy
from fusionkit.strategies.experts import (ExpertKnobs, check_same_base, expert_artefacts, frozen_expert_encoder,
                                          shuffled_label_control)
from fusionkit.strategies.knowledge import FEATURES, MODEL, SOURCE_KINDS, TASK

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
    """Combines base [b, L, d] and source vectors (a list of [b, L, w_s]) into logits; see the module docstring.

    A source whose vectors are not in the base's space (knowledge features; a model of another width) is first
    mapped to it by a learned projection (``project``), except in "concat", which takes every vector as it is."""

    def __init__(self, mode: str, num_sources: int, dim: int, num_labels: int, include_base: bool = True,
                 dropout: float = 0.1, widths: list[int] | None = None, project: list[bool] | None = None):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"representation: unknown mode '{mode}'; choose one of {MODES}")
        self.mode, self.include_base, self.dim = mode, include_base, dim
        widths = widths or [dim] * num_sources
        project = [False] * num_sources if mode == "concat" else project or [w != dim for w in widths]
        if mode == "gated":
            self.gate = nn.Linear(2 * dim, dim)
        if mode == "attention":
            self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
            nn.init.zeros_(self.value.weight)  # start as the base alone: fusion must earn its contribution
            nn.init.zeros_(self.value.bias)
        width = dim + sum(widths) if mode == "concat" else dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_labels)
        # Created last, so a study whose sources need none draws the same initial weights as before they existed.
        self.projections = nn.ModuleList(nn.Linear(w, dim) if p else nn.Identity() for w, p in zip(widths, project))
        self.last_attention = None

    def fuse(self, base: torch.Tensor, sources: list[torch.Tensor]) -> torch.Tensor:
        """Fused vectors [b, L, width]; for "attention", ``last_attention`` holds weights [b, L, candidates]."""
        if self.mode == "concat":
            return torch.cat([base, *sources], dim=-1)
        projected = [projection(vectors) for projection, vectors in zip(self.projections, sources)]
        experts = torch.stack(projected, dim=1) if projected else base.new_zeros(base.shape[0], 0, *base.shape[1:])
        if self.mode == "sum":
            return base + experts.sum(dim=1)
        if self.mode == "gated":
            stacked_base = base.unsqueeze(1).expand_as(experts)
            gates = torch.sigmoid(self.gate(torch.cat([stacked_base, experts], dim=-1)))
            return base + (gates * experts).sum(dim=1)
        candidates = torch.cat([base.unsqueeze(1), experts], dim=1) if self.include_base else experts
        # Attention over S candidates with key k_s = W_k c_s + b_k and value v_s = W_v c_s + b_v, computed with one
        # projection per position instead of S: q . k_s = (W_k^T q) . c_s + q . b_k, and since the weights sum to 1,
        # sum_s w_s v_s = W_v (sum_s w_s c_s) + b_v. The same numbers (to float rounding), a third of the work.
        query = self.query(base)
        scores = (torch.einsum("bld,bsld->bls", query @ self.key.weight, candidates)
                  + (query @ self.key.bias).unsqueeze(-1)) / self.dim ** 0.5
        weights = scores.softmax(dim=-1)
        self.last_attention = weights.detach()
        return base + self.value(torch.einsum("bls,bsld->bld", weights, candidates))

    def forward(self, base: torch.Tensor, sources: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.fuse(base, sources).mean(dim=1)))


class RepresentationFusionModel(nn.Module):
    """Base and source encoders (frozen, each with its own tokenizer) and knowledge features feeding the fusion
    layer. It reads texts itself (``predict_logits``): its encoders need not share a tokenizer, and knowledge
    features come from the examples' own columns, so it predicts on a dataset (``task.test``) when it fuses some."""

    def __init__(self, base: nn.Module, experts: list[nn.Module], fusion: FusionLayer, layers: list[int],
                 pooling: str, sources: list[dict], tokenizers: list, max_length: int):
        super().__init__()
        self.base, self.experts, self.fusion = base, nn.ModuleList(experts), fusion
        self.layers, self.pooling, self.sources = layers, pooling, sources
        self.tokenizers, self.max_length = tokenizers, max_length
        for param in [*base.parameters(), *self.experts.parameters()]:
            param.requires_grad_(False)

    def encoders(self) -> list[Encoder]:
        return [Encoder(model, tokenizer, "fused", self.pooling, self.max_length)
                for model, tokenizer in zip([self.base, *self.experts], self.tokenizers)]

    @torch.no_grad()
    def predict_logits(self, inputs, batch_size: int = 64) -> np.ndarray:
        """Logits [n, k] for texts, or for a dataset with ``text`` (and the knowledge columns it fuses)."""
        from fusionkit.strategies.base import _texts

        texts = _texts(inputs)
        base, *encoded = (e.encode(texts, batch_size, layers=self.layers) for e in self.encoders())
        encoded = iter(encoded)
        sources = [_knowledge_vectors(inputs, source["name"], len(self.layers)) if source["kind"] == FEATURES
                   else next(encoded) for source in self.sources]
        self.fusion.eval()
        device = next(self.fusion.parameters()).device
        logits = self.fusion(torch.as_tensor(base).to(device), [torch.as_tensor(x).to(device) for x in sources])
        return logits.float().cpu().numpy()


def _knowledge_vectors(inputs, name: str, num_layers: int) -> np.ndarray:
    """A knowledge column of a dataset as [n, L, width]: the same vector at every fused layer."""
    column = KNOWLEDGE_PREFIX + name
    if not hasattr(inputs, "column_names") or column not in inputs.column_names:
        raise ConfigError(f"this model fuses the knowledge features {name!r}: predict on a dataset that has their "
                          f"column (e.g. task.test), not on bare texts")
    values = np.asarray(inputs[column][:], dtype=np.float32).reshape(len(inputs), 1, -1)
    return np.repeat(values, num_layers, axis=1)


def _layer_indices(layers: str, num_layers: int) -> list[int]:
    if layers == "last":
        return [num_layers]
    if layers == "all":
        return list(range(1, num_layers + 1))
    raise ConfigError(f"representation: layers must be 'last' or 'all', got {layers!r}")


class FeatureBatches:
    """Collates example indices into batches of cached base and source features."""

    def __init__(self, base: np.ndarray, sources: list[np.ndarray], labels: np.ndarray):
        self.base, self.labels = torch.as_tensor(base), torch.as_tensor(labels)
        self.sources = [torch.as_tensor(x) for x in sources]

    def __call__(self, indices: list[int]) -> dict:
        index = torch.as_tensor(indices)
        return {"base": self.base[index], "sources": [x[index] for x in self.sources], "labels": self.labels[index]}


def _fusion_loss(model, batch):
    return F.cross_entropy(model(batch["base"], batch["sources"]), batch["labels"])


class RepresentationFusion(Strategy):
    name = "representation"
    Knobs = RepresentationKnobs
    needs_sources = True
    source_kinds = SOURCE_KINDS  # any encoder's pooled vectors, and knowledge features
    search_space = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [15, 30]}

    @classmethod
    def controls(cls):
        # The same fusion layer and head on the base encoder's vectors alone; and over random experts (trained on
        # shuffled labels): as many encoders and parameters, without the sources' knowledge.
        return [Control("no source", cls), shuffled_label_control(cls)]

    def check_sources(self, sources):
        self.check_source_kinds(sources)  # no sources at all is the control

    def requirements(self, target, sources, seed):
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _split_features(self, encoders: list[Encoder], target, layers, sources: list[dict]) -> dict:
        """Per split: base vectors [n, L, d] and each source's [n, L, w] (an encoder's, cached; or knowledge)."""
        cache = FeatureCache(self.workdir / "features")
        per_encoder = [cache.task_features(e, target, layers) for e in encoders]
        features = {}
        for split in target.splits:
            encoded = iter(f[split] for f in per_encoder[1:])
            features[split] = (per_encoder[0][split], [
                np.repeat(target.knowledge(source["name"], split)[:, None], len(layers), axis=1)
                if source["kind"] == FEATURES else next(encoded) for source in sources])
        return features

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        base = self.load_base()
        layers = _layer_indices(knobs.layers, base.num_layers)
        experts = [a for a in artefacts if isinstance(a, FittedModel)]
        for expert in experts:
            if expert.spec.get("source_kind") != MODEL:  # a given model may have any architecture
                check_same_base(expert, base.fingerprint())
        encoders = [base] + [frozen_expert_encoder(e, e.spec["target"], self.pooling, self.max_length)
                             for e in experts]
        expert_models = [encoder.model.to(self.device) for encoder in encoders[1:]]
        described = [_describe(a, spec["encoder"]) for a in artefacts]
        features = self._split_features(encoders, target, layers, described)
        train_base, train_sources = features["train"]
        arch = {"layers": layers, "num_sources": len(artefacts), "source_names": [d["name"] for d in described],
                "sources": described, "widths": [x.shape[-1] for x in train_sources]}
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": arch}, [base.model, *expert_models],
                                   [base.tokenizer, *(e.tokenizer for e in experts)]).to(self.device)
        fusion = module.fusion
        val_base, val_sources = features["validation"]
        val_base, val_sources = torch.as_tensor(val_base).to(self.device), [torch.as_tensor(x).to(self.device)
                                                                            for x in val_sources]
        val_labels = np.asarray(target.validation["label"][:])

        @torch.no_grad()
        def evaluate() -> float:
            return float((fusion(val_base, val_sources).argmax(1).cpu().numpy() == val_labels).mean())

        batches = FeatureBatches(train_base, train_sources, np.asarray(target.train["label"][:]))
        history = train_loop(fusion, list(range(len(train_base))), batches, _fusion_loss, evaluate, knobs.train,
                             seed=seed, device=self.device)
        if knobs.mode == "attention":
            with torch.no_grad():
                fusion.eval()(val_base, val_sources)
            arch["attention_sources"] = (["base"] if knobs.include_base else []) + arch["source_names"]
            arch["attention_weights"] = fusion.last_attention.mean(dim=0).cpu().tolist()  # [L, candidates]
        with torch.no_grad():
            fusion.eval()
            probabilities = {split: fusion(torch.as_tensor(base_x).to(self.device),
                                           [torch.as_tensor(x).to(self.device) for x in source_x])
                             .double().softmax(dim=1).cpu().numpy() for split, (base_x, source_x) in features.items()}
        return module.eval(), base, history, arch, probabilities

    @classmethod
    def build_module(cls, spec, backbones=None, tokenizers=None):
        knobs, arch = spec["knobs"], spec["arch"]
        # Runs stored before other kinds of sources existed describe only how many experts they had.
        sources = arch.get("sources") or [{"name": name, "kind": TASK, "encoder": spec["encoder"]}
                                          for name in arch["source_names"]]
        encoders = [spec["encoder"]] + [s["encoder"] for s in sources if s["kind"] != FEATURES]
        if backbones is None:
            backbones = [load_encoder(name, from_scratch=True, pooling=spec["pooling"],
                                      max_length=spec["max_length"]).model for name in encoders]
        tokenizers = tokenizers or [load_tokenizer(name) for name in encoders]
        dim = backbones[0].config.hidden_size
        project = [s["kind"] == FEATURES or width != dim for s, width in zip(sources, arch.get("widths", []))]
        fusion = FusionLayer(knobs["mode"], arch["num_sources"], dim, spec["num_labels"], knobs["include_base"],
                             knobs["dropout"], arch.get("widths"), project or None)
        return RepresentationFusionModel(backbones[0], backbones[1:], fusion, arch["layers"], spec["pooling"],
                                         sources, tokenizers, spec["max_length"])


def _describe(source, study_encoder: str) -> dict:
    """A fused source as the saved spec records it: its name, kind, and the encoder to rebuild it from."""
    if isinstance(source, FittedModel):
        kind = source.spec.get("source_kind", TASK)
        return {"name": source.spec["target"], "kind": kind,
                "encoder": source.spec["encoder"] if kind == MODEL else study_encoder}
    return {"name": source.name, "kind": FEATURES, "encoder": None}


def fitted_attention_weights(fitted) -> tuple[np.ndarray, list[str], list[int]]:
    """Mean attention weight [layers, candidates] on the validation set, candidate names and layer indices."""
    arch = fitted.spec["arch"]
    if "attention_weights" not in arch:
        raise ConfigError("attention weights exist only for representation fusion with mode='attention'")
    return np.asarray(arch["attention_weights"]), arch["attention_sources"], arch["layers"]
