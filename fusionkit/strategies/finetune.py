"""Target-only baselines that train the encoder: ``finetune``, ``scratch`` (random init), ``lora`` (peft) and
``adapter`` (Pfeiffer bottleneck adapters)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError
from fusionkit.modeling.adapters import PFEIFFER_REDUCTION, add_adapters
from fusionkit.modeling.encoders import Encoder, blank_encoder
from fusionkit.modeling.heads import TextClassifier, TextCollator, model_inputs, predict_logits
from fusionkit.modeling.training import History, Knobs, TrainKnobs, knob_group, train_loop
from fusionkit.strategies.base import Strategy


def cross_entropy_loss(model, batch) -> torch.Tensor:
    return F.cross_entropy(model(**model_inputs(batch)), batch["labels"])


def validation_accuracy(module, tokenizer, task: Task, max_length: int) -> Callable[[], float]:
    texts, labels = list(task.validation["text"][:]), np.asarray(task.validation["label"][:])
    return lambda: float((predict_logits(module, tokenizer, texts, max_length).argmax(1) == labels).mean())


HEAD_INITS = ("random", "probe")


def probe_head_init(module: torch.nn.Module, tokenizer, task: Task, max_length: int, seed: int) -> None:
    """LP-FT's first stage (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): the head becomes
    a logistic regression fitted on the frozen encoder's pooled features of the training texts (scikit-learn,
    C=1), so fine-tuning starts from a good classifier instead of a random one and moves the features less."""
    from fusionkit.strategies.linear_probe import fit_logistic_head

    encoder = Encoder(module.backbone, tokenizer, "lp-ft", module.pooling, max_length)
    features = {split: encoder.encode(getattr(task, split)["text"][:]) for split in ("train", "validation")}
    labels = {split: np.asarray(getattr(task, split)["label"][:]) for split in ("train", "validation")}
    head, _ = fit_logistic_head(features, labels, task.num_labels, c=1.0, max_iter=2000, seed=seed)
    target = module.head if hasattr(module, "head") else module.heads[0]
    with torch.no_grad():
        target.weight.copy_(head.weight.to(target.weight.device))
        target.bias.copy_(head.bias.to(target.bias.device))


def train_classifier(module: torch.nn.Module, tokenizer, task: Task, knobs: TrainKnobs, seed: int,
                     max_length: int, head_init: str = "random", loss=cross_entropy_loss) -> History:
    """Supervised training of a text classifier on ``task.train``, early-stopped on validation accuracy; its head
    starts random or, with ``head_init="probe"``, as a logistic regression on the frozen features (LP-FT)."""
    if head_init not in HEAD_INITS:
        raise ConfigError(f"knob 'head_init' must be one of {HEAD_INITS}, got {head_init!r}")
    if head_init == "probe":
        probe_head_init(module, tokenizer, task, max_length, seed)
    texts, labels = list(task.train["text"][:]), list(task.train["label"][:])
    collate = TextCollator(tokenizer, max_length)
    return train_loop(module, list(zip(texts, labels)), collate, loss,
                      validation_accuracy(module, tokenizer, task, max_length), knobs, seed=seed,
                      lengths=collate.lengths(texts))


@dataclass
class FinetuneKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)
    head_init: str = "random"  # or "probe": LP-FT (train_classifier)


@dataclass
class ScratchKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-4, epochs=5)  # random weights need a larger step, more epochs
    head_init: str = "random"


@dataclass
class LoraKnobs(Knobs):
    # LoRA trains few weights and takes a larger step than full fine-tuning (Hu et al. 2021); the default is
    # the middle of its search space, which a study tunes on validation.
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-3)
    head_init: str = "random"
    r: int = 8
    alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list = field(default_factory=lambda: ["query", "value"])


@dataclass
class AdapterKnobs(Knobs):
    # Adapters train few weights from a near-zero start and take a step like LoRA's (Houlsby et al. 2019 and
    # Pfeiffer et al. 2021 search 1e-4..1e-3 over many epochs; at a few hundred examples the larger end).
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-3)
    head_init: str = "random"
    reduction_factor: int = PFEIFFER_REDUCTION


def add_lora(backbone: torch.nn.Module, knobs: LoraKnobs) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=knobs.r, lora_alpha=knobs.alpha, lora_dropout=knobs.lora_dropout,
                        target_modules=list(knobs.target_modules))
    return get_peft_model(backbone, config)


# What a study tunes, on validation: the step size and the number of epochs (early stopping then picks the
# best epoch within them). Every family gets the same number of configurations (StudyConfig.tuning_budget).
FINETUNE_SEARCH_SPACE = {"lr": [2e-5, 5e-5, 1e-4], "epochs": [3, 6]}


class Finetune(Strategy):
    """Full fine-tuning of the pretrained encoder and a new head on the target."""

    name = "finetune"
    Knobs = FinetuneKnobs
    search_space = FINETUNE_SEARCH_SPACE
    from_scratch = False

    def _fit(self, target, sources, seed, artefacts, spec):
        encoder = self.load_base(from_scratch=self.from_scratch, seed=seed)
        return self._train(encoder, encoder.model, target, seed, spec)

    def _train(self, base, backbone, target, seed, spec, arch=None):
        """A new head on ``backbone`` (the base encoder's, or an expert's), trained on the target."""
        arch = arch or {}
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": arch}, [backbone]).to(self.device)
        history = train_classifier(module, base.tokenizer, target, self.knobs.train, seed, self.max_length,
                                   self.knobs.head_init)
        return module, base, history, arch

    @classmethod
    def build_module(cls, spec, backbones=None):
        backbone = backbones[0] if backbones else blank_encoder(spec).model
        return TextClassifier(cls._wrap(backbone, spec), spec["num_labels"], spec["pooling"])

    @classmethod
    def _wrap(cls, backbone, spec):
        return backbone


class Scratch(Finetune):
    """The no-transfer control: the same architecture with random weights, trained on the target alone."""

    name = "scratch"
    Knobs = ScratchKnobs
    search_space = {"lr": [5e-5, 1e-4, 3e-4], "epochs": [5, 10]}
    from_scratch = True


class Lora(Finetune):
    """peft LoRA on the attention projections; the encoder's own weights stay frozen."""

    name = "lora"
    Knobs = LoraKnobs
    search_space = {"lr": [5e-4, 1e-3, 2e-3], "epochs": [3, 6]}

    @classmethod
    def _wrap(cls, backbone, spec):
        return add_lora(backbone, LoraKnobs.from_knobs(spec["knobs"]))


ADAPTER_NAME = "adapter"  # the one adapter of an ``adapter`` model; AdapterFusion names each by its source


class Adapter(Finetune):
    """Bottleneck adapters in every layer (Pfeiffer configuration, ``modeling.adapters``); the encoder frozen.
    As a source expert (``expert_kind: adapter``) it is AdapterFusion's stage 1: one adapter per source."""

    name = "adapter"
    Knobs = AdapterKnobs
    search_space = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [3, 6]}

    @classmethod
    def _wrap(cls, backbone, spec):
        add_adapters(backbone, [ADAPTER_NAME], AdapterKnobs.from_knobs(spec["knobs"]).reduction_factor)
        for name, param in backbone.named_parameters():
            param.requires_grad_(".adapters." in name)
        return backbone
