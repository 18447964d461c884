"""``multitask``: one shared encoder, one head per task, trained jointly on the target and the sources.

Each batch holds one task; tasks are drawn with probability proportional to n_t ** (1 / temperature)
(temperature 1: proportional to size; large: uniform), so small targets are not drowned by big sources.
Then (``target_phase``, as MT-DNN does) the shared encoder and the target head train on the target alone
with the same knobs as ``finetune``: the target gets at least as many updates as fine-tuning gives it, so a
difference from fine-tuning is the joint phase's knowledge, not a smaller target budget.
The fitted model predicts with the target's head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.modeling.encoders import blank_encoder, pool
from fusionkit.modeling.heads import TextCollator, model_inputs
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group, length_grouped_batches, train_loop
from fusionkit.strategies.base import Control, Strategy
from fusionkit.strategies.finetune import FINETUNE_SEARCH_SPACE, Finetune, train_classifier, validation_accuracy


@dataclass
class MultitaskKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)
    temperature: float = 2.0
    source_train_size: int | None = 2000  # stratified subsample of each source's training split
    batches_per_epoch: int | None = None  # None: as many as the target alone would need, times the task count
    target_phase: bool = True  # then fine-tune on the target alone (the control's whole training)
    head_init: str = "random"  # the target phase's head: "probe" refits it on the jointly trained encoder (LP-FT)


class MultitaskModel(nn.Module):
    """Shared backbone, a head per task; ``task=0`` (the target) unless told otherwise."""

    def __init__(self, backbone: nn.Module, label_counts: list[int], pooling: str):
        super().__init__()
        self.backbone, self.pooling = backbone, pooling
        self.dropout = nn.Dropout(0.1)
        self.heads = nn.ModuleList(nn.Linear(backbone.config.hidden_size, k) for k in label_counts)

    def forward(self, input_ids, attention_mask, task: int = 0) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.heads[task](self.dropout(pool(hidden, attention_mask, self.pooling)))


def task_sampling_probabilities(sizes: list[int], temperature: float) -> np.ndarray:
    weights = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    return weights / weights.sum()


def _multitask_loss(model, batch):
    return F.cross_entropy(model(**model_inputs(batch), task=int(batch["extra"][0])), batch["labels"])


class Multitask(Strategy):
    name = "multitask"
    Knobs = MultitaskKnobs
    needs_sources = True
    source_kinds = ("task",)  # it trains on the sources' labelled examples
    search_space = FINETUNE_SEARCH_SPACE

    @classmethod
    def controls(cls):
        return [Control("no source", Finetune)]  # the target phase alone, with the same knobs

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs, train_knobs = self.knobs, self.knobs.train
        size = knobs.source_train_size
        sources = [s.subsample(size, seed) if size and size < len(s.train) else s for s in sources]
        tasks = [target] + sources
        examples, owner = [], []
        for task_id, task in enumerate(tasks):
            examples += [(t, l, np.int64(task_id)) for t, l in zip(task.train["text"], task.train["label"][:])]
            owner += [task_id] * len(task.train)
        owner = np.asarray(owner)
        encoder = self.load_base()
        collate = TextCollator(encoder.tokenizer, self.max_length)
        lengths = collate.lengths([e[0] for e in examples])
        probabilities = task_sampling_probabilities([len(t.train) for t in tasks], knobs.temperature)
        n_batches = knobs.batches_per_epoch or len(tasks) * -(-len(target.train) // train_knobs.batch_size)

        def batch_sampler(rng):
            """Length-grouped batches within each task, drawn task by task with the tempered probabilities."""
            pools = []
            for task_id in range(len(tasks)):
                members = np.flatnonzero(owner == task_id)
                task_lengths = [lengths[i] for i in members]
                pools.append([members[b] for b in length_grouped_batches(
                    task_lengths, train_knobs.batch_size, train_knobs.length_group_size, rng)])
            draws = rng.choice(len(tasks), size=n_batches, p=probabilities)
            return [pools[t][i % len(pools[t])] for i, t in enumerate(draws)]

        arch = {"label_counts": [t.num_labels for t in tasks], "task_names": [t.name for t in tasks],
                "sampling_probabilities": probabilities.tolist()}
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": arch}, [encoder.model]).to(self.device)
        evaluate = validation_accuracy(module, encoder.tokenizer, target, self.max_length)
        history = train_loop(module, examples, collate, _multitask_loss, evaluate, train_knobs, seed=seed,
                             batch_sampler=batch_sampler)
        if knobs.target_phase:
            joint = history
            history = train_classifier(module, encoder.tokenizer, target, train_knobs, seed, self.max_length,
                                       knobs.head_init)
            history.steps, history.tokens = history.steps + joint.steps, history.tokens + joint.tokens
            arch["joint_phase"] = joint.to_dict()
        return module, encoder, history, arch

    @classmethod
    def build_module(cls, spec, backbones=None):
        backbone = backbones[0] if backbones else blank_encoder(spec).model
        return MultitaskModel(backbone, spec["arch"]["label_counts"], spec["pooling"])
