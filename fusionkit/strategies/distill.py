"""``distill``: knowledge-distillation fusion (Hinton et al. 2015) from one or more teachers into one student.

The student (the pretrained encoder, fine-tuned) learns from the target labels and from the averaged
soft targets of the teachers: loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teachers_T || student_T).
Teachers are artefacts: each source expert adapted to the target (``sequential`` through that source,
"experts") or one plain fine-tuned model ("finetune"), fitted on the same target examples and seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F

from fusionkit.errors import ConfigError
from fusionkit.modeling.heads import model_inputs
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group
from fusionkit.strategies.base import Artefact
from fusionkit.strategies.experts import ExpertKnobs
from fusionkit.strategies.finetune import Finetune
from fusionkit.strategies.sequential import Sequential


@dataclass
class DistillKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)  # the student's; the teachers train with the same knobs
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term; 0 is plain fine-tuning
    teachers: str = "experts"  # "experts": each source expert adapted to the target; "finetune": one teacher


def distillation_loss(temperature: float, alpha: float):
    def loss_fn(model, batch) -> torch.Tensor:
        logits = model(**model_inputs(batch))
        hard = F.cross_entropy(logits, batch["labels"])
        teacher = batch["extra"].to(logits.dtype)
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=-1), teacher, reduction="batchmean")
        return (1 - alpha) * hard + alpha * temperature ** 2 * soft
    return loss_fn


def soft_targets(teacher_logits: list[np.ndarray], temperature: float) -> np.ndarray:
    """The teachers' temperature-softened distributions, averaged (a probability row per example)."""
    return np.mean([scipy.special.softmax(logits / temperature, axis=1) for logits in teacher_logits],
                   axis=0).astype(np.float32)


class Distill(Finetune):
    name = "distill"
    Knobs = DistillKnobs
    needs_sources = True

    def requirements(self, target, sources, seed):
        knobs = self.knobs
        if knobs.teachers == "experts":
            # The same artefact as a study's `sequential` run with these knobs: trained once for both.
            teacher = Sequential({**knobs.train.to_dict(), **knobs.experts.to_dict()}, **self.settings)
            return [Artefact(teacher, target, (source,), seed) for source in sources]
        if knobs.teachers == "finetune":
            return [Artefact(Finetune(knobs.train.to_dict(), **self.settings), target, (), seed)]
        raise ConfigError(f"distill: teachers must be 'experts' or 'finetune', got {knobs.teachers!r}")

    def _fit(self, target, sources, seed, artefacts, spec):
        knobs = self.knobs
        if not 0 <= knobs.alpha <= 1 or knobs.temperature <= 0:
            raise ConfigError(f"distill: need 0 <= alpha <= 1 and temperature > 0, got alpha={knobs.alpha}, "
                              f"temperature={knobs.temperature}")
        texts = list(target.train["text"])
        logits = [np.log(np.clip(teacher.predict_proba(texts), 1e-12, None)) for teacher in artefacts]
        targets = soft_targets(logits, knobs.temperature)
        teacher_accuracy = [float(t.history.val_metric[t.history.best_epoch]) for t in artefacts]
        encoder = self.load_base()
        return self._train(encoder, encoder.model, target, seed, spec, arch={"teacher_val_accuracy": teacher_accuracy},
                           loss_fn=distillation_loss(knobs.temperature, knobs.alpha), extras=targets)
