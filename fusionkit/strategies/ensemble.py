"""``ensemble``: a seed ensemble of target-only fine-tuned models, their probabilities averaged.

The compute-matched rival of representation fusion: fusing three experts runs four encoders at inference, and so
does an ensemble of four fine-tuned encoders that knows nothing of the sources (Lakshminarayanan et al. 2017, "Simple
and Scalable Predictive Uncertainty Estimation using Deep Ensembles", for seed ensembles as a baseline). A gain of
fusion over its control that this ensemble also shows came from running several encoders, not from the knowledge.
Each member is ``finetune`` with the same knobs and its own seed (drawn from the run's seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fusionkit.errors import ConfigError
from fusionkit.modeling.training import History, Knobs, TrainKnobs, knob_group
from fusionkit.strategies.base import Strategy
from fusionkit.strategies.finetune import FINETUNE_SEARCH_SPACE, Finetune, train_classifier, validation_accuracy


@dataclass
class EnsembleKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)
    head_init: str = "random"
    members: int = 4  # as many encoders as representation fusion over three sources runs


class EnsembleModule(nn.Module):
    """Members that read the same texts; the output is the log of their mean probabilities (so a softmax of it, as
    ``FittedModel.predict_proba`` takes, is that mean)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, input_ids, attention_mask, **extra) -> torch.Tensor:
        probabilities = torch.stack([member(input_ids, attention_mask, **extra).softmax(-1)
                                     for member in self.members]).mean(0)
        return probabilities.clamp_min(1e-12).log()


def member_seeds(seed: int, members: int) -> list[int]:
    """Distinct, reproducible seeds of an ensemble's members, drawn from the run's seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(members)]


class SeedEnsemble(Strategy):
    """Several fine-tuned models of the target, each with its own seed; their probabilities averaged."""

    name = "ensemble"
    Knobs = EnsembleKnobs
    search_space = FINETUNE_SEARCH_SPACE

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        if knobs.members < 2:
            raise ConfigError(f"knob 'members' must be at least 2 (an ensemble of one is finetune), got "
                              f"{knobs.members!r}")
        members, history = [], History(best_epoch=0)
        base = None
        for member_seed in member_seeds(seed, knobs.members):
            base = self.load_base()
            torch.manual_seed(member_seed)
            member = Finetune.build_module({**spec, "arch": {}}, [base.model]).to(self.device)
            trained = train_classifier(member, base.tokenizer, target, knobs.train, member_seed, self.max_length,
                                       knobs.head_init)
            history.steps, history.tokens = history.steps + trained.steps, history.tokens + trained.tokens
            history.train_loss.append(trained.train_loss[trained.best_epoch])
            members.append(member)
        module = EnsembleModule(members).eval()
        history.val_metric.append(validation_accuracy(module, base.tokenizer, target, self.max_length)())
        history.train_loss = [float(np.mean(history.train_loss))]
        return module, base, history, {"members": knobs.members}

    @classmethod
    def build_module(cls, spec, backbones=None):
        members = EnsembleKnobs.from_knobs(spec["knobs"]).members
        return EnsembleModule([Finetune.build_module(spec) for _ in range(members)])
