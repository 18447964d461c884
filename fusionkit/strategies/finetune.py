"""Target-only baselines that train the encoder: ``finetune``, ``scratch`` (random init) and ``lora`` (peft)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusionkit.data.tasks import Task
from fusionkit.modeling.encoders import blank_encoder
from fusionkit.modeling.heads import TextClassifier, TextCollator, model_inputs, predict_logits
from fusionkit.modeling.training import History, Knobs, TrainKnobs, knob_group, train_loop
from fusionkit.strategies.base import Strategy


def cross_entropy_loss(model, batch) -> torch.Tensor:
    return F.cross_entropy(model(**model_inputs(batch)), batch["labels"])


def validation_accuracy(module, tokenizer, task: Task, max_length: int) -> Callable[[], float]:
    texts, labels = list(task.validation["text"][:]), np.asarray(task.validation["label"][:])
    return lambda: float((predict_logits(module, tokenizer, texts, max_length).argmax(1) == labels).mean())


def train_classifier(module: torch.nn.Module, tokenizer, task: Task, knobs: TrainKnobs, seed: int,
                     max_length: int) -> History:
    """Supervised training of a text classifier on ``task.train``, early-stopped on validation accuracy."""
    texts, labels = list(task.train["text"][:]), list(task.train["label"][:])
    collate = TextCollator(tokenizer, max_length)
    return train_loop(module, list(zip(texts, labels)), collate, cross_entropy_loss,
                      validation_accuracy(module, tokenizer, task, max_length), knobs, seed=seed,
                      lengths=collate.lengths(texts))


@dataclass
class FinetuneKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)


@dataclass
class ScratchKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-4, epochs=5)  # random weights need a larger step, more epochs


@dataclass
class LoraKnobs(Knobs):
    # LoRA trains few weights and takes a larger step than full fine-tuning (Hu et al. 2021); the default is
    # the middle of its search space, which a study tunes on validation.
    train: TrainKnobs = knob_group(TrainKnobs, lr=1e-3)
    r: int = 8
    alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list = field(default_factory=lambda: ["query", "value"])


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
        history = train_classifier(module, base.tokenizer, target, self.knobs.train, seed, self.max_length)
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
