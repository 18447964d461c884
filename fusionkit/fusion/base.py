"""The interface every strategy shares: ``Strategy.fit(...) -> FittedModel``.

A fitted model is a torch module mapping token ids to logits plus the JSON spec needed to
rebuild it, so ``predict_proba``, ``save`` and ``load`` are written once for all strategies.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from fusionkit.encoders import Encoder, load_encoder
from fusionkit.errors import ConfigError, DataError
from fusionkit.models import count_trainable, predict_logits, softmax
from fusionkit.tasks import Task
from fusionkit.train import History, TrainConfig, Timer

WEIGHTS_FILE, SPEC_FILE = "model.safetensors", "config.json"


def _texts(texts_or_dataset) -> list[str]:
    if hasattr(texts_or_dataset, "column_names"):
        return list(texts_or_dataset["text"])
    if isinstance(texts_or_dataset, str):
        raise ConfigError("predict_proba takes a list of texts or a dataset, not a single string")
    return list(texts_or_dataset)


def _identity(source) -> str:
    """A source is a task (identified by its content) or an already fitted expert (by its spec)."""
    if isinstance(source, Task):
        return source.fingerprint()
    return json.dumps(source.spec, sort_keys=True, default=str)


@dataclass
class FittedModel:
    """What ``fit`` returns: a module (token ids -> logits) and everything needed to rebuild it."""

    module: torch.nn.Module
    tokenizer: object
    spec: dict  # strategy, encoder, num_labels, label_names, knobs, arch, base_fingerprint, max_length...
    history: History
    train_seconds: float
    num_trainable_params: int

    @property
    def label_names(self) -> list[str]:
        return self.spec["label_names"]

    def predict_proba(self, texts_or_dataset, batch_size: int = 64) -> np.ndarray:
        logits = predict_logits(self.module, self.tokenizer, _texts(texts_or_dataset),
                                self.spec["max_length"], batch_size)
        return softmax(logits.astype(np.float64))

    def predict(self, texts_or_dataset, batch_size: int = 64) -> np.ndarray:
        return self.predict_proba(texts_or_dataset, batch_size).argmax(axis=1)

    def save(self, path: str | Path) -> Path:
        """safetensors weights + JSON spec; written to a temporary folder, then renamed (atomic)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        save_model(self.module, str(tmp / WEIGHTS_FILE))
        record = {**self.spec, "history": self.history.to_dict(), "train_seconds": self.train_seconds,
                  "num_trainable_params": self.num_trainable_params}
        (tmp / SPEC_FILE).write_text(json.dumps(record, indent=2, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "FittedModel":
        from safetensors.torch import load_model

        from fusionkit.fusion import STRATEGIES

        path = Path(path)
        if not (path / SPEC_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise DataError(f"'{path}' is not a saved fusionkit model (needs {SPEC_FILE} and {WEIGHTS_FILE})")
        try:
            record = json.loads((path / SPEC_FILE).read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"file '{path / SPEC_FILE}' is not valid JSON: {err}") from None
        history = History(**record.pop("history"))
        train_seconds = record.pop("train_seconds")
        trainable = record.pop("num_trainable_params")
        strategy = STRATEGIES.get(record.get("strategy"))
        if strategy is None:
            raise DataError(f"'{path / SPEC_FILE}': unknown strategy {record.get('strategy')!r}")
        module, tokenizer = strategy.build_module(record)
        load_model(module, str(path / WEIGHTS_FILE), strict=True, device=device or "cpu")
        module.eval()
        return cls(module, tokenizer, record, history, train_seconds, trainable)


class Strategy:
    """Base class: subclasses set ``name`` and ``Knobs``, implement ``_fit`` and ``build_module``."""

    name: ClassVar[str]
    Knobs: ClassVar[type] = TrainConfig
    needs_sources: ClassVar[bool] = False

    def __init__(self, knobs: dict | None = None, encoder: str = "minilm", workdir: str | Path = "runs",
                 device: str | None = None, max_length: int = 128, pooling: str = "mean",
                 progress: bool = False):
        knobs = dict(knobs or {})
        knobs.setdefault("progress", progress)
        try:
            self.knobs = self.Knobs.from_knobs(knobs)
        except ConfigError as err:
            raise ConfigError(f"strategy '{self.name}': {err}") from None
        self.encoder_name = encoder
        self.workdir = Path(workdir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_length = max_length
        self.pooling = pooling

    def load_base(self, from_scratch: bool = False, seed: int = 0) -> Encoder:
        """The base encoder on this strategy's device; its fingerprint goes into the fitted model's spec.

        The seed only matters for random weights (``from_scratch``): "tiny" is one fixed base for every seed.
        """
        encoder = load_encoder(self.encoder_name, from_scratch=from_scratch, pooling=self.pooling,
                               max_length=self.max_length, seed=seed if from_scratch else 0)
        encoder.model.to(self.device)
        self._base_fingerprint = encoder.fingerprint()
        return encoder

    def fit(self, target: Task, sources: list[Task] | tuple = (), seed: int = 0,
            train_size: int | None = None) -> FittedModel:
        """Train on ``target`` (its first ``train_size`` stratified examples) with knowledge from ``sources``."""
        sources = list(sources)
        if self.needs_sources and not sources:
            raise ConfigError(f"strategy '{self.name}' fuses knowledge from source tasks: pass sources=[...]")
        if not self.needs_sources and sources:
            raise ConfigError(f"strategy '{self.name}' uses the target only; it takes no sources")
        train_task = target.subsample(train_size, seed) if train_size else target
        with Timer() as timer:
            module, tokenizer, history, arch = self._fit(train_task, sources, seed)
        spec = {"strategy": self.name, "encoder": self.encoder_name, "pooling": self.pooling,
                "max_length": self.max_length, "num_labels": target.num_labels,
                "label_names": target.label_names, "knobs": self.knobs.to_dict(), "arch": arch,
                "target": target.name, "sources": [s.name for s in sources], "seed": seed,
                "train_size": len(train_task.train), "base_fingerprint": getattr(self, "_base_fingerprint", None)}
        return FittedModel(module, tokenizer, spec, history, timer.seconds, count_trainable(module))

    def fit_cached(self, target: Task, sources: list[Task] | tuple = (), seed: int = 0,
                   train_size: int | None = None, folder: str = "models") -> FittedModel:
        """``fit``, saved under ``<workdir>/<folder>/`` and loaded instead of retrained when called again
        with the same strategy, knobs, encoder, data (content fingerprints), seed and train size."""
        train_task = target.subsample(train_size, seed) if train_size else target
        identity = {"strategy": self.name, "knobs": {k: v for k, v in self.knobs.to_dict().items() if k != "progress"},
                    "encoder": self.encoder_name, "max_length": self.max_length, "pooling": self.pooling,
                    "target": train_task.fingerprint(), "sources": [_identity(s) for s in sources],
                    "seed": seed}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
        names = "+".join(s.name for s in sources)
        path = self.workdir / folder / f"{self.name}-{target.name}{'-' + names if names else ''}-s{seed}-{digest}"
        if path.is_dir():
            return FittedModel.load(path, device=self.device)
        fitted = self.fit(train_task, sources, seed=seed)
        fitted.save(path)
        return fitted

    def _fit(self, target: Task, sources: list[Task], seed: int):
        """Return (module, tokenizer, history, arch): ``arch`` is the JSON that ``build_module`` needs."""
        raise NotImplementedError

    @classmethod
    def build_module(cls, spec: dict):
        """Rebuild the (untrained) module and tokenizer described by a saved spec."""
        raise NotImplementedError
