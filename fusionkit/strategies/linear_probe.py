"""``linear_probe``: a frozen encoder and a logistic-regression head fitted on cached features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special
import torch

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder, blank_encoder
from fusionkit.modeling.features import FeatureCache
from fusionkit.modeling.heads import TextClassifier, frozen_classifier
from fusionkit.modeling.training import History, Knobs
from fusionkit.strategies.base import Strategy


@dataclass
class ProbeKnobs(Knobs):
    """The inverse regularisation strength C of the logistic head (sklearn's default 1.0); a study tunes it
    on validation like any other knob (``LinearProbe.search_space``)."""

    c: float = 1.0
    max_iter: int = 2000
    progress: bool = False


def fit_logistic_head(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_labels: int,
                      c: float, max_iter: int, seed: int) -> tuple[torch.nn.Linear, History]:
    """Multinomial logistic regression on train features, returned as a torch head; the history holds its
    train loss and validation accuracy (one "epoch")."""
    from sklearn.linear_model import LogisticRegression

    if not c > 0:
        raise ConfigError(f"knob 'c' (inverse regularisation strength) must be > 0, got {c!r}")
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    model.fit(features["train"], labels["train"])
    history = History(best_epoch=0)
    history.val_metric.append(float((model.predict(features["validation"]) == labels["validation"]).mean()))
    history.train_loss.append(float(-np.log(model.predict_proba(features["train"])[
        np.arange(len(labels["train"])), np.searchsorted(model.classes_, labels["train"])] + 1e-12).mean()))
    return _as_linear(model, features["train"].shape[1], num_labels), history


def _as_linear(model, dim: int, num_labels: int) -> torch.nn.Linear:
    """sklearn's coefficients as an nn.Linear over all ``num_labels`` (binary LR has one row: logit of class 1)."""
    weight, bias = np.zeros((num_labels, dim)), np.full(num_labels, -1e4)  # classes never seen get ~0 probability
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight[model.classes_], bias[model.classes_] = coef, intercept
    head = torch.nn.Linear(dim, num_labels)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head


def probe(encoder: Encoder, task, cache: FeatureCache, knobs: ProbeKnobs,
          seed: int) -> tuple[TextClassifier, History, dict[str, np.ndarray]]:
    """Fit a logistic head on the (cached) features of a frozen ``encoder``; returns (module, history, the
    module's probabilities on each split of ``task``, from the same features)."""
    features = cache.task_features(encoder, task)
    labels = {split: np.asarray(data["label"][:]) for split, data in task.splits.items()}
    head, history = fit_logistic_head(features, labels, task.num_labels, knobs.c, knobs.max_iter, seed)
    with torch.no_grad():
        probabilities = {split: scipy.special.softmax(head(torch.as_tensor(x)).double().numpy(), axis=1)
                         for split, x in features.items()}
    return frozen_classifier(encoder.model, head, encoder.pooling), history, probabilities


class LinearProbe(Strategy):
    """Frozen pretrained encoder + logistic regression: what the encoder already knows about the target."""

    name = "linear_probe"
    Knobs = ProbeKnobs
    search_space = {"c": [0.01, 0.1, 1.0, 10.0, 100.0]}

    @classmethod
    def seed_free(cls, whole_train_split):
        # lbfgs on the strictly convex regularised loss ignores random_state, and the frozen encoder's features
        # do not depend on the seed: only the subsample does (the quick report's 5 seeds on the whole split agreed).
        return whole_train_split

    def _fit(self, target, sources, seed, artefacts, spec):
        encoder = self.load_base()
        module, history, probabilities = probe(encoder, target, FeatureCache(self.workdir / "features"),
                                               self.knobs, seed)
        return module, encoder, history, {}, probabilities

    @classmethod
    def build_module(cls, spec, backbones=None):
        encoder_model = backbones[0] if backbones else blank_encoder(spec).model
        head = torch.nn.Linear(encoder_model.config.hidden_size, spec["num_labels"])
        return frozen_classifier(encoder_model, head, spec["pooling"])
