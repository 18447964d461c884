"""``distill``: knowledge-distillation fusion (Hinton et al. 2015) from one or more teachers into one student.

The teachers label the target's training texts: the n labelled ones and the unlabelled rest of the training
split (up to ``unlabelled_size``), which is the point of distillation: n stays the number of *labels*. The student
(the pretrained encoder, fine-tuned) learns from the labels where there are some and from the teachers' averaged
soft targets everywhere: loss = (1 - alpha) * CE(labels, labelled texts only) + alpha * T^2 * KL(teachers_T ||
student_T). Teachers are artefacts trained with the student's knobs on the same labelled examples and seed: each
source expert adapted to the target (``sequential`` through that source, "experts") or one plain fine-tuned
model ("finetune": self-distillation, the matched control: the same unlabelled texts and steps, no source).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F

from fusionkit.errors import ConfigError
from fusionkit.modeling.heads import TextCollator, model_inputs
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group, train_loop
from fusionkit.strategies.base import Artefact, Control
from fusionkit.strategies.experts import ExpertKnobs
from fusionkit.strategies.finetune import Finetune, validation_accuracy
from fusionkit.strategies.sequential import Sequential


@dataclass
class DistillKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)  # the student's; the teachers train with the same knobs
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term; 0 is plain fine-tuning
    teachers: str = "experts"  # "experts": each source expert adapted to the target; "finetune": one teacher
    unlabelled_size: int | None = None  # unlabelled target training texts the teachers label (None: all)


UNLABELLED = -100  # the label of an unlabelled text: no hard-label loss


def distillation_loss(temperature: float, alpha: float):
    def loss_fn(model, batch) -> torch.Tensor:
        logits = model(**model_inputs(batch))
        labelled = batch["labels"] != UNLABELLED
        hard = F.cross_entropy(logits[labelled], batch["labels"][labelled]) if labelled.any() else logits.sum() * 0
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

    @classmethod
    def controls(cls):
        return [Control("target-only teacher", cls, {"teachers": "finetune"})]

    def check_sources(self, sources):
        if self.knobs.teachers == "finetune":  # one target-only teacher: sources would go unused
            if sources:
                raise ConfigError("distill with teachers='finetune' uses the target only; it takes no sources")
            return
        super().check_sources(sources)

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
        labelled = list(target.train["text"][:])
        unlabelled = list(target.unlabelled)
        if knobs.unlabelled_size is not None and knobs.unlabelled_size < len(unlabelled):
            chosen = np.random.default_rng(seed).choice(len(unlabelled), knobs.unlabelled_size, replace=False)
            unlabelled = [unlabelled[i] for i in np.sort(chosen)]
        texts = labelled + unlabelled
        logits = [np.log(np.clip(teacher.predict_proba(texts), 1e-12, None)) for teacher in artefacts]
        targets = soft_targets(logits, knobs.temperature)
        labels = list(target.train["label"][:]) + [UNLABELLED] * len(unlabelled)
        teacher_accuracy = [float(t.history.val_metric[t.history.best_epoch]) for t in artefacts]
        encoder = self.load_base()
        torch.manual_seed(seed)
        module = self.build_module({**spec, "arch": {}}, [encoder.model]).to(self.device)
        collate = TextCollator(encoder.tokenizer, self.max_length)
        history = train_loop(module, list(zip(texts, labels, targets)), collate,
                             distillation_loss(knobs.temperature, knobs.alpha),
                             validation_accuracy(module, encoder.tokenizer, target, self.max_length), knobs.train,
                             seed=seed, lengths=collate.lengths(texts))
        arch = {"teacher_val_accuracy": teacher_accuracy, "labelled_texts": len(labelled),
                "unlabelled_texts": len(unlabelled)}
        return module, encoder, history, arch
