"""``distill``: knowledge-distillation fusion (Hinton et al. 2015) from one or more teachers into one student.

The student (the pretrained encoder, fine-tuned) learns from the target labels and from the averaged
soft targets of the teachers: loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teachers_T || student_T).
Teachers are the source experts adapted to the target ("experts") or a plain fine-tuned model ("finetune").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fusionkit.errors import ConfigError
from fusionkit.fusion.finetune import Finetune, train_classifier
from fusionkit.fusion.sequential import SequentialKnobs
from fusionkit.models import TextClassifier, model_inputs


@dataclass
class DistillKnobs(SequentialKnobs):
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
    probs = []
    for logits in teacher_logits:
        scaled = logits / temperature
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        probs.append(np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True))
    return np.mean(probs, axis=0).astype(np.float32)


class Distill(Finetune):
    name = "distill"
    Knobs = DistillKnobs
    needs_sources = True

    def _teachers(self, target, sources, seed):
        from fusionkit.fusion import get_strategy

        settings = dict(encoder=self.encoder_name, workdir=self.workdir, device=self.device,
                        max_length=self.max_length, pooling=self.pooling)
        train_knobs = {k: v for k, v in self.knobs.to_dict().items() if k in SequentialKnobs.__dataclass_fields__}
        if self.knobs.teachers == "experts":
            # Saved and reused: a study that also runs `sequential` with the same knobs trains them once.
            teacher = get_strategy("sequential", train_knobs, **settings)
            return [teacher.fit_cached(target, [source], seed=seed) for source in sources]
        if self.knobs.teachers == "finetune":
            plain = {k: v for k, v in train_knobs.items() if not k.startswith("expert")}
            return [get_strategy("finetune", plain, **settings).fit_cached(target, seed=seed)]
        raise ConfigError(f"distill: teachers must be 'experts' or 'finetune', got {self.knobs.teachers!r}")

    def _fit(self, target, sources, seed):
        if not 0 <= self.knobs.alpha <= 1 or self.knobs.temperature <= 0:
            raise ConfigError(f"distill: need 0 <= alpha <= 1 and temperature > 0, got alpha={self.knobs.alpha}, "
                              f"temperature={self.knobs.temperature}")
        teachers = self._teachers(target, sources, seed)
        texts = list(target.train["text"])
        logits = [np.log(np.clip(t.predict_proba(texts), 1e-12, None)) for t in teachers]
        targets = soft_targets(logits, self.knobs.temperature)
        encoder = self.load_base()
        torch.manual_seed(seed)
        module = TextClassifier(encoder.model, target.num_labels, self.pooling).to(self.device)
        history = train_classifier(module, encoder.tokenizer, target, self.knobs, seed, self.max_length,
                                   loss_fn=distillation_loss(self.knobs.temperature, self.knobs.alpha),
                                   extras=targets)
        teacher_accuracy = [float(t.history.val_metric[t.history.best_epoch]) for t in teachers]
        return module, encoder.tokenizer, history, {"teacher_val_accuracy": teacher_accuracy}
