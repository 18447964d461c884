"""``setfit``: SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts"), a few-shot target-only
baseline: the encoder is fine-tuned contrastively on pairs of target training texts (same label or not) with the
``setfit`` package, then a logistic-regression head is fitted on its pooled vectors (the kit's own, as
``linear_probe`` fits one, so the model is one encoder and a head that saves as safetensors: SetFit's own head
would be a pickled scikit-learn object).

The ``setfit`` package is an optional extra (``pip install fusionkit[setfit]``; the dev extra has it): fitting
without it is a ConfigError saying so.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder
from fusionkit.modeling.heads import TextClassifier
from fusionkit.modeling.training import Knobs
from fusionkit.strategies.base import Strategy
from fusionkit.strategies.linear_probe import LinearProbe, fit_logistic_head


@dataclass
class SetFitKnobs(Knobs):
    num_iterations: int = 20  # text pairs drawn per training text and epoch (the paper's default)
    body_epochs: int = 1
    body_lr: float = 2e-5
    batch_size: int = 16
    c: float = 1.0  # the logistic head's inverse regularisation strength


class SetFit(Strategy):
    """Contrastive fine-tuning of the encoder on target pairs, then a logistic head (a target-only baseline)."""

    name = "setfit"
    Knobs = SetFitKnobs
    search_space = {"body_lr": [1e-5, 2e-5, 5e-5], "num_iterations": [10, 20]}

    def _fit(self, target, sources, seed, artefacts, spec):
        try:
            from datasets import Dataset
            from sentence_transformers import SentenceTransformer, models
            from setfit import SetFitModel, Trainer, TrainingArguments
        except ImportError as err:
            raise ConfigError(f"strategy 'setfit' needs the setfit package (pip install 'fusionkit[setfit]'): "
                              f"{err}") from None
        knobs = self.knobs
        base = self.load_base()
        with tempfile.TemporaryDirectory() as folder:
            # The study's encoder (whatever it is: a short name, a folder, the tiny random one) as a
            # sentence-transformers model pooled as the study pools.
            base.model.save_pretrained(folder)
            base.tokenizer.save_pretrained(folder)
            word = models.Transformer(folder, max_seq_length=self.max_length)
            pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=self.pooling)
            body = SentenceTransformer(modules=[word, pooling], device=self.device)
            from sklearn.linear_model import LogisticRegression

            model = SetFitModel(model_body=body, model_head=LogisticRegression())
            train = Dataset.from_dict({"text": list(target.train["text"][:]), "label": list(target.train["label"][:])})
            arguments = TrainingArguments(output_dir=str(Path(folder) / "out"), batch_size=knobs.batch_size,
                                          num_epochs=knobs.body_epochs, num_iterations=knobs.num_iterations,
                                          body_learning_rate=knobs.body_lr, seed=seed, show_progress_bar=False,
                                          report_to="none", save_strategy="no")
            Trainer(model=model, args=arguments, train_dataset=train).train()  # (its own head is not kept)
        backbone = word.auto_model
        encoder = Encoder(backbone, base.tokenizer, "setfit", self.pooling, self.max_length)
        features = {split: encoder.encode(getattr(target, split)["text"][:]) for split in ("train", "validation")}
        labels = {split: np.asarray(getattr(target, split)["label"][:]) for split in ("train", "validation")}
        head, history = fit_logistic_head(features, labels, target.num_labels, knobs.c, 2000, seed)
        module = TextClassifier(backbone, target.num_labels, self.pooling)
        module.head = head
        return module.to(self.device).eval(), base, history, {"pairs_per_text": knobs.num_iterations}

    @classmethod
    def build_module(cls, spec, backbones=None):
        module = LinearProbe.build_module(spec, backbones)
        for param in module.backbone.parameters():  # the encoder was fine-tuned: all of it was trained
            param.requires_grad_(True)
        return module
