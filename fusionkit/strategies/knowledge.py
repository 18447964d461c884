"""Knowledge that is not a source task: a model someone fine-tuned, a peft LoRA adapter, features of the examples.

A source *task* is trained into an expert (``experts.expert_artefacts``); the three kinds here are used as they are:

* ``PretrainedModel(name, path)``: a transformers checkpoint, a local folder or a Hub id. A sequence-classification
  model keeps its label head (LEEP and NCE read its label probabilities), and so does a folder ``fusionkit export``
  wrote (its classifier.safetensors); a bare encoder has none. A frozen expert,
  with no training. Representation fusion takes any architecture (its own tokenizer; a learned projection when its
  width differs from the base encoder's); sequential transfer and merging need the study encoder's architecture
  and vocabulary (checked: ``check_expert``). Weights load from safetensors only, no remote code.
* ``LoraAdapter(name, path)``: a peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)
  trained on the study's base encoder: an expert without training, and its low-rank delta is what merging adds.
* ``KnowledgeFeatures(name, columns)``: a numeric vector per example, read from columns of the target's own file
  (lexicon scores, metadata, knowledge-graph embeddings): ``fused = encoder output + W knowledge`` and the other
  modes of ``representation``. Only representation fusion can use it: it has no encoder to fine-tune or merge.

Every source has a ``name`` (what tables show), a ``kind`` and a ``fingerprint()`` (what a run's key records).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from fusionkit._io import digest, file_sha256
from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder, load_encoder, load_tokenizer, pool
from fusionkit.modeling.training import History
from fusionkit.strategies.base import FittedModel

TASK, MODEL, ADAPTER, FEATURES = "task", "model", "adapter", "features"
SOURCE_KINDS = (TASK, MODEL, ADAPTER, FEATURES)


class ExpertModule(nn.Module):
    """A given model as fusionkit's experts are: ``backbone`` (a transformers encoder) and, when it has one, its
    own label head (``forward`` gives its logits over the source's labels): a sequence-classification model's
    ``classifier``, or the linear ``head`` over pooled vectors of a fusionkit export (``strategies.export``)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module | None = None, head: nn.Linear | None = None,
                 pooling: str = "mean"):
        super().__init__()
        self.backbone, self.classifier, self.head, self.pooling = backbone, classifier, head, pooling
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        if self.classifier is not None:
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.head is None:
            raise ConfigError("this source model is a bare encoder: it has no label head to predict with")
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(pool(states, attention_mask, self.pooling))


def _exported_head(folder: Path) -> tuple[nn.Linear, dict] | None:
    """The label head of a model ``fusionkit export`` wrote (classifier.safetensors), with its manifest."""
    from safetensors.torch import load_file

    from fusionkit.strategies.export import CLASSIFIER_FILE, MANIFEST

    if not (folder / MANIFEST).is_file() or not (folder / CLASSIFIER_FILE).is_file():
        return None
    manifest = json.loads((folder / MANIFEST).read_text())
    tensors = load_file(str(folder / CLASSIFIER_FILE))
    head = nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
    head.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
    return head, manifest


def _given_expert(module: ExpertModule, tokenizer, spec: dict) -> FittedModel:
    return FittedModel(module.eval(), tokenizer, spec, History(), 0.0, 0)


def _files_fingerprint(kind: str, path: str, patterns: tuple[str, ...]) -> str:
    """The content of a model's files (a run's key changes when the weights at a path do); a Hub id is read
    from the local Hub cache (downloaded first when online)."""
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(path, allow_patterns=list(patterns)))
        except Exception as err:  # huggingface_hub raises several types for a bad id or no network
            raise ConfigError(f"{kind} source {path!r} is neither a local folder nor a Hub id that can be "
                              f"loaded ({type(err).__name__}: {err})") from None
    files = sorted({f for pattern in patterns for f in folder.glob(pattern)})
    if not files:
        raise ConfigError(f"{kind} source '{folder}' has none of the files {list(patterns)}")
    return digest({"kind": kind, "files": {f.name: file_sha256(f) for f in files}})


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")  # weights as pickles, which fusionkit never loads


CONFIG_FILES = {"model": "config.json", "adapter": "adapter_config.json"}


def _local_folder(kind: str, path: str) -> Path | None:
    """The folder a model or adapter source names, or None for a Hub id that can be fetched (online, or in the
    local Hub cache); a ConfigError when it is neither, before any work."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ConfigError(f"{kind} source '{path}' is a file; it must be a folder (or a Hub id)")
    try:
        validate_repo_id(path)
    except HFValidationError:
        raise ConfigError(f"{kind} source '{path}': no such folder (from '{Path.cwd()}'), and it is not a Hub "
                          f"id") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline and not isinstance(try_to_load_from_cache(path, CONFIG_FILES[kind]), str):
        raise ConfigError(f"{kind} source '{path}': no such folder (from '{Path.cwd()}'), and as a Hub id it is not "
                          f"in the local Hub cache while offline (HF_HUB_OFFLINE is set)")
    return None


def _needed_files(kind: str, folder: Path, config: str, weights: str) -> dict:
    """The folder's config (parsed JSON) after checking that it and safetensors weights (``weights``, a glob)
    are there: a ConfigError naming the folder and what is missing, or that the weights are pickles."""
    if not any(folder.glob(weights)):
        pickles = sorted(f.name for pattern in PICKLE_WEIGHTS for f in folder.glob(pattern))
        found = (f"only {', '.join(pickles)}, weights stored as Python pickles, which fusionkit never loads: save "
                 f"them as safetensors (save_pretrained(..., safe_serialization=True))") if pickles else "no weights"
        raise ConfigError(f"{kind} source '{folder}' holds {found} (needs {weights})")
    if not (folder / config).is_file():
        raise ConfigError(f"{kind} source '{folder}' has no {config}")
    try:
        parsed = json.loads((folder / config).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{kind} source '{folder / config}' is not valid JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{kind} source '{folder / config}' is not a JSON object")
    return parsed


@dataclass
class GivenExpert:
    """Knowledge that is already an expert (a model, an adapter) at ``path``: loaded once per study settings."""

    name: str
    path: str
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)
    kind: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # what its content is (``fingerprint``)

    def expert(self, settings: dict) -> FittedModel:
        """The frozen expert, pooled as the study pools (``settings``: encoder, pooling, max_length, device)."""
        key = (settings["encoder"], settings["pooling"], settings["max_length"])
        if key not in self._loaded:
            self._loaded[key] = self._load(settings)
        return self._loaded[key]

    def _load(self, settings: dict) -> FittedModel:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return _files_fingerprint(self.kind, self.path, self.files)


@dataclass
class PretrainedModel(GivenExpert):
    kind: ClassVar[str] = MODEL
    files: ClassVar[tuple[str, ...]] = ("config.json", "*.safetensors")

    def check(self) -> dict | None:
        """Its files, checked before any work: a local folder holds a readable config.json and safetensors
        weights (a ConfigError otherwise); returns its architecture (``encoders.architecture``), None for a
        Hub id not read yet."""
        from transformers import AutoConfig

        from fusionkit.modeling.encoders import architecture

        folder = _local_folder(MODEL, self.path)
        if folder is None:
            return None
        _needed_files(MODEL, folder, "config.json", "*.safetensors")
        try:
            return architecture(AutoConfig.from_pretrained(folder))
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"model source '{folder}': its config.json is not a transformers config ({err})") \
                from None

    def _load(self, settings: dict) -> FittedModel:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        try:
            config = AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"source {self.name!r}: cannot read a transformers model from {self.path!r} (a local "
                              f"folder or Hub id; offline mode cannot download one): {err}") from None
        classifier, exported = None, _exported_head(Path(self.path))
        if any(arch.endswith("ForSequenceClassification") for arch in config.architectures or []):
            classifier = AutoModelForSequenceClassification.from_pretrained(self.path, use_safetensors=True)
            backbone = classifier.base_model
            labels = [config.id2label[i] for i in range(config.num_labels)]
        else:
            backbone = load_encoder(self.path, max_length=settings["max_length"]).model
            labels = exported[1]["label_names"] if exported else []
        has_head = bool(labels)
        encoder = Encoder(backbone, load_tokenizer(self.path), self.name, settings["pooling"], settings["max_length"])
        spec = {"strategy": "pretrained model", "source_kind": MODEL, "target": self.name, "encoder": self.path,
                "pooling": settings["pooling"], "max_length": settings["max_length"], "num_labels": len(labels),
                "label_names": labels, "has_label_head": has_head, "weights": encoder.fingerprint(),
                "base_fingerprint": None, "seed": None, "train_size": None}
        head, pooling = (exported[0], exported[1]["pooling"]) if exported and classifier is None else (None, "mean")
        module = ExpertModule(backbone, classifier, head, pooling).to(settings.get("device") or "cpu")
        return _given_expert(module, encoder.tokenizer, spec)


@dataclass
class LoraAdapter(GivenExpert):
    """The study's base encoder with the adapter applied (peft): a frozen expert without a label head."""

    kind: ClassVar[str] = ADAPTER
    files: ClassVar[tuple[str, ...]] = ("adapter_config.json", "adapter_model.safetensors")

    def check(self) -> None:
        """Its files, checked before any work: a local folder holding adapter_config.json (a LoRA adapter's) and
        adapter_model.safetensors; a ConfigError naming the folder otherwise."""
        folder = _local_folder(ADAPTER, self.path)
        if folder is None:
            return None
        config = _needed_files(ADAPTER, folder, "adapter_config.json", "adapter_model.safetensors")
        if config.get("peft_type") != "LORA":
            raise ConfigError(f"adapter source '{folder}' holds a {config.get('peft_type')} adapter; fusionkit takes "
                              f"LoRA")
        return None

    def _load(self, settings: dict) -> FittedModel:
        from peft import PeftModel

        folder = Path(self.path)
        try:
            self.check()
        except ConfigError as error:
            raise ConfigError(f"source {self.name!r}: {error}") from None
        base = load_encoder(settings["encoder"], max_length=settings["max_length"], pooling=settings["pooling"])
        base_fingerprint = base.fingerprint()
        try:
            backbone = PeftModel.from_pretrained(base.model, str(folder))
        except (RuntimeError, ValueError, KeyError) as err:  # missing modules, shape mismatches
            raise ConfigError(f"source {self.name!r}: adapter '{folder}' does not fit the study's encoder "
                              f"{settings['encoder']!r} (an adapter is trained on one base model): {err}") from None
        spec = {"strategy": "lora adapter", "source_kind": ADAPTER, "target": self.name, "encoder": settings["encoder"],
                "pooling": settings["pooling"], "max_length": settings["max_length"], "num_labels": 0,
                "label_names": [], "has_label_head": False, "adapter": str(folder),
                "weights": Encoder(backbone, base.tokenizer, self.name).fingerprint(),
                "base_fingerprint": base_fingerprint, "seed": None, "train_size": None}
        module = ExpertModule(backbone).to(settings.get("device") or "cpu")
        return _given_expert(module, base.tokenizer, spec)


@dataclass(frozen=True)
class KnowledgeFeatures:
    name: str
    columns: tuple[str, ...]
    kind: ClassVar[str] = FEATURES

    def fingerprint(self) -> str:
        # The values are part of the target's data (its fingerprint covers its knowledge columns).
        return digest({"kind": FEATURES, "name": self.name, "columns": list(self.columns)})

    def record(self) -> dict:
        """What a fitted model's spec says of this source (as ``artefact_record`` does of an expert)."""
        return {"strategy": "knowledge features", "task": self.name, "columns": list(self.columns), "sources": [],
                "seed": None, "train_size": None, "val_accuracy": None}
