"""The interface every strategy shares: ``Strategy.fit(...) -> FittedModel``, and the artefacts strategies need.

A fitted model is a torch module mapping token ids to logits plus the JSON spec needed to rebuild it, so
``predict_proba``, ``save`` and ``load`` are written once for all strategies. Each strategy builds its module
in one place, ``build_module(spec, backbones)``: from pretrained backbones when it fits, from blank ones
(``blank_encoder(spec)``) when a saved model is loaded.

An *artefact* is a fitted model that a strategy needs before it can fit (a source expert, a distillation
teacher). A strategy declares them (``requirements``); whoever runs it provides them (``Artefact.provide``:
trained once per work folder, loaded from disk after that). No strategy knows another by its name.

Each strategy also declares what a fair study needs of it: ``search_space`` (the knob values a study may
tune it over, on validation) and ``controls`` (the same procedure without the knowledge, trained with the same
configuration: what a gain from the knowledge is measured against).
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np
import scipy.special
import torch
from filelock import FileLock

from fusionkit._io import atomic_folder, digest, move_aside
from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError, DataError
from fusionkit.modeling.encoders import Encoder, base_fingerprint, load_encoder, load_tokenizer, weights_fingerprint
from fusionkit.modeling.heads import count_trainable, dense_backbone, predict_logits
from fusionkit.modeling.training import History, Knobs, Timer, torch_threads

WEIGHTS_FILE, SPEC_FILE = "model.safetensors", "config.json"


def _texts(texts_or_dataset) -> list[str]:
    if hasattr(texts_or_dataset, "column_names"):
        return list(texts_or_dataset["text"][:])
    if isinstance(texts_or_dataset, str):
        raise ConfigError("predict_proba takes a list of texts or a dataset, not a single string")
    return list(texts_or_dataset)


@dataclass
class FittedModel:
    """What ``fit`` returns: a module (token ids -> logits) and everything needed to rebuild it."""

    module: torch.nn.Module
    tokenizer: object
    spec: dict  # strategy, encoder, num_labels, label_names, knobs, arch, base_fingerprint, max_length...
    history: History
    train_seconds: float
    num_trainable_params: int
    # split -> probabilities on the fitted target's splits, where fitting computed them from cached features
    # (frozen-encoder strategies): the same numbers predict_proba gives, without encoding the texts again.
    probabilities: dict = field(default_factory=dict)
    # (saved folder, its files' stamp) when ``Artefact.provide`` handed this model out (``frozen_backbone``)
    origin: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def label_names(self) -> list[str]:
        return self.spec["label_names"]

    def predict_proba(self, texts_or_dataset, batch_size: int = 64) -> np.ndarray:
        if hasattr(self.module, "predict_logits"):  # a module that reads texts itself (several tokenizers, features)
            logits = self.module.predict_logits(texts_or_dataset, batch_size)
        else:
            logits = predict_logits(self.module, self.tokenizer, _texts(texts_or_dataset),
                                    self.spec["max_length"], batch_size)
        return scipy.special.softmax(logits.astype(np.float64), axis=1)

    def predict(self, texts_or_dataset, batch_size: int = 64) -> np.ndarray:
        return self.predict_proba(texts_or_dataset, batch_size).argmax(axis=1)

    def save(self, path: str | Path) -> Path:
        """safetensors weights + JSON spec, written to a temporary folder that then replaces ``path`` whole."""
        from safetensors.torch import save_model

        record = {**self.spec, "history": self.history.to_dict(), "train_seconds": self.train_seconds,
                  "num_trainable_params": self.num_trainable_params}
        with atomic_folder(path) as folder:
            save_model(self.module, str(folder / WEIGHTS_FILE))
            (folder / SPEC_FILE).write_text(json.dumps(record, indent=2, default=str))
        return Path(path)

    def export(self, path: str | Path, overwrite: bool = False) -> Path:
        """A folder that transformers, sentence-transformers and peft load without fusionkit (see
        ``fusionkit.strategies.export``); a model no standard class holds is exported for ``load``. ``path`` may
        be new, empty or a previous export; a folder holding anything else is replaced only with ``overwrite``."""
        from fusionkit.strategies.export import export_model

        return export_model(self, path, loadable=self.spec.get("strategy") in Strategy.registry, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "FittedModel":
        from safetensors.torch import load_model

        path = Path(path)
        if not (path / SPEC_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise DataError(f"'{path}' is not a saved fusionkit model (needs {SPEC_FILE} and {WEIGHTS_FILE})")
        try:
            record = json.loads((path / SPEC_FILE).read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"file '{path / SPEC_FILE}' is not valid JSON: {err}") from None
        try:
            history = History(**record.pop("history"))
            train_seconds = record.pop("train_seconds")
            trainable = record.pop("num_trainable_params")
        except (KeyError, TypeError) as err:
            raise DataError(f"'{path / SPEC_FILE}' is not a whole fusionkit model spec ({err})") from None
        strategy = Strategy.registry.get(record.get("strategy"))
        if strategy is None:
            raise DataError(f"'{path / SPEC_FILE}': unknown strategy {record.get('strategy')!r}")
        module = strategy.build_module(record)
        try:
            load_model(module, str(path / WEIGHTS_FILE), strict=True, device=device or "cpu")
        except Exception as err:  # safetensors' SafetensorError on a truncated file, RuntimeError on a mismatch
            raise DataError(f"'{path / WEIGHTS_FILE}' cannot be loaded into the {record['strategy']} model its "
                            f"spec describes ({type(err).__name__}: {err})") from None
        module.eval()
        tokenizer = load_tokenizer(record["encoder"])
        return cls(module, tokenizer, record, history, train_seconds, trainable)


@dataclass(frozen=True)
class Control:
    """A strategy's matched control: ``strategy`` trained with the same configuration (the knobs it shares with
    the fused strategy, then ``knobs`` on top), on the same sources when ``keep_sources``, else on none.
    ``role`` says in words what it takes away, e.g. "no source" or "shuffled-label source"."""

    role: str
    strategy: type["Strategy"]
    knobs: dict = field(default_factory=dict)
    keep_sources: bool = False
    # Only where every source is a task: a shuffled-label expert exists only for a task (a given model, an adapter
    # or knowledge features would be fused unchanged, and the "control" would be the fusion system itself).
    tasks_only: bool = False

    def knobs_from(self, fused_knobs: dict) -> dict:
        """The control's knobs: those of the fused run that the control's strategy has, then its own."""
        shared = {k: v for k, v in fused_knobs.items() if k in self.strategy.Knobs.knob_names()}
        return {**shared, **self.knobs}


class Strategy:
    """Base class: subclasses set ``name`` and ``Knobs``, implement ``_fit`` and ``build_module``, and declare
    what they need fitted first in ``requirements``. Defining a subclass with a ``name`` registers it.

    ``search_space`` (knob -> candidate values) is what a study tunes on validation, the same number of
    configurations for every strategy; ``controls()`` lists the matched controls of a strategy that fuses
    knowledge, the first being the one its verdict is judged against.
    """

    name: ClassVar[str]
    Knobs: ClassVar[type[Knobs]]
    needs_sources: ClassVar[bool] = False
    # What a source may be (``knowledge.SOURCE_KINDS``): knowledge features have no encoder to fine-tune or merge.
    source_kinds: ClassVar[tuple[str, ...]] = ("task", "model", "adapter")
    # Whether a given model's weights take the study encoder's place (fine-tuned, merged): it must then have that
    # encoder's architecture, which a study checks before any work (``study.sources.check_given_sources``).
    same_architecture: ClassVar[bool] = False
    search_space: ClassVar[dict[str, list]] = {}
    registry: ClassVar[dict[str, type["Strategy"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in Strategy.registry:
                raise ConfigError(f"two strategies are named {cls.name!r}: {Strategy.registry[cls.name]} and {cls}")
            Strategy.registry[cls.name] = cls

    def __init__(self, knobs: dict | None = None, encoder: str = "minilm", workdir: str | Path = "runs",
                 device: str | None = None, max_length: int = 128, pooling: str = "mean",
                 progress: bool = False, threads: int | None = None):
        knobs = dict(knobs or {})
        if "progress" in self.Knobs.knob_names():
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
        self.threads = threads  # torch CPU threads while fitting (None: the process's); changes no artefact's key

    @classmethod
    def controls(cls) -> list[Control]:
        """The matched controls of a strategy that fuses knowledge (none for a target-only one)."""
        return []

    @classmethod
    def seed_free(cls, whole_train_split: bool) -> bool:
        """Whether a run's result is the same for every seed, so that a study runs it once (on its first seed). Only
        a strategy whose every step is deterministic says so, and only on the whole training split
        (``whole_train_split``): a smaller train size is a subsample that the seed draws."""
        return False

    def check_sources(self, sources: list) -> None:
        """A ConfigError when these knobs cannot run with these sources (none where some are needed, or the reverse)."""
        if self.needs_sources and not sources:
            raise ConfigError(f"strategy '{self.name}' fuses knowledge from source tasks: pass sources=[...]")
        if not self.needs_sources and sources:
            raise ConfigError(f"strategy '{self.name}' uses the target only; it takes no sources")
        self.check_source_kinds(sources)

    @classmethod
    def usable_kinds(cls, knobs: dict) -> tuple[str, ...]:
        """The source kinds this strategy fuses with these knobs: ``source_kinds``, unless a knob narrows them (a
        merge that weighs experts by their sources' texts needs task sources)."""
        return cls.source_kinds

    def check_source_kinds(self, sources: list) -> None:
        """A ConfigError naming a source this strategy cannot use (e.g. knowledge features for merging)."""
        kinds = self.usable_kinds(self.knobs.to_dict())
        for source in sources:
            if source_kind(source) not in kinds:
                raise ConfigError(f"strategy '{self.name}' cannot use source {source_name(source)!r}, which is "
                                  f"{source_kind(source)} knowledge; with these knobs it takes {', '.join(kinds)} "
                                  f"sources")

    @property
    def settings(self) -> dict:
        """Where and on what this strategy runs: what an artefact it needs is trained with too."""
        return {"encoder": self.encoder_name, "workdir": self.workdir, "device": self.device,
                "max_length": self.max_length, "pooling": self.pooling, "threads": self.threads}

    def load_base(self, from_scratch: bool = False, seed: int = 0) -> Encoder:
        """The base encoder on this strategy's device, fingerprinted as loaded (training may change its weights
        in place; the fitted model's spec records the weights it started from).

        The seed only matters for random weights (``from_scratch``): "tiny" is one fixed base for every seed.
        """
        encoder = load_encoder(self.encoder_name, from_scratch=from_scratch, pooling=self.pooling,
                               max_length=self.max_length, seed=seed if from_scratch else 0)
        encoder.fingerprint()
        encoder.model.to(self.device)
        return encoder

    def requirements(self, target: Task, sources: list, seed: int) -> list["Artefact | FittedModel"]:
        """What must be fitted before this strategy can fit on ``target`` (its training subsample):
        artefacts to provide, or fitted models the caller passed in. Most strategies need nothing."""
        return []

    def fit(self, target: Task, sources: Sequence = (), seed: int = 0, train_size: int | None = None,
            artefacts: Mapping[str, "FittedModel"] | None = None, data_seed: int | None = None) -> FittedModel:
        """Train on ``target`` (its first ``train_size`` stratified examples) with knowledge from ``sources``.

        ``artefacts`` (artefact key -> fitted model) are the requirements a caller has already provided;
        any other requirement is provided here (loaded from the work folder, or trained and saved there).
        ``data_seed`` draws the training subsample apart from ``seed`` (initialisation, order, experts), to split a
        result's variance between them (Bouthillier et al. 2021); None: ``seed`` draws both, as a study does.
        """
        sources = list(sources)
        self.check_sources(sources)
        train_task = target.subsample(train_size, seed if data_seed is None else data_seed)
        provided = dict(artefacts or {})
        with torch_threads(self.threads):
            needed = [provided.get(need.key) or need.provide() if isinstance(need, Artefact) else need
                      for need in self.requirements(train_task, sources, seed)]
            spec = {"strategy": self.name, "encoder": self.encoder_name, "pooling": self.pooling,
                    "max_length": self.max_length, "num_labels": target.num_labels,
                    "label_names": target.label_names, "knobs": self.knobs.to_dict(),
                    "target": target.name, "sources": [source_name(s) for s in sources],
                    "seed": seed, "train_size": len(train_task.train),
                    **({} if data_seed is None else {"data_seed": data_seed}),
                    "artefacts": [artefact_record(artefact) for artefact in needed],
                    "torch_threads": torch.get_num_threads()}
            with Timer() as timer:
                module, base, history, arch, *probabilities = self._fit(train_task, sources, seed, needed, spec)
        spec.update(arch=arch, base_fingerprint=base.fingerprint())
        return FittedModel(module, base.tokenizer, spec, history, timer.seconds, count_trainable(module),
                           *probabilities)

    def _fit(self, target: Task, sources: list, seed: int, artefacts: list[FittedModel], spec: dict):
        """Return (module, base encoder, history, arch[, probabilities]): ``arch`` is what ``build_module`` needs
        beyond the spec given here; ``artefacts`` are the fitted requirements, in the order ``requirements`` listed
        them; ``probabilities`` (split -> array), if given, are the module's on the target's splits, computed
        from cached features (see ``FittedModel.probabilities``)."""
        raise NotImplementedError

    @classmethod
    def build_module(cls, spec: dict, backbones: list[torch.nn.Module] | None = None) -> torch.nn.Module:
        """The module a spec describes, on ``backbones`` (pretrained ones when fitting) or on blank encoders
        built from the spec (when loading saved weights)."""
        raise NotImplementedError


def source_kind(source) -> str:
    """What a source is (``knowledge.SOURCE_KINDS``): a task, a given model, an adapter or knowledge features; a
    fitted fusionkit expert passed as a source counts as its task."""
    if isinstance(source, Task):
        return "task"
    if isinstance(source, FittedModel):
        return source.spec.get("source_kind", "task")
    return source.kind


def source_name(source) -> str:
    return source.spec.get("target") if isinstance(source, FittedModel) else source.name


def artefact_record(fitted) -> dict:
    """What a fitted artefact (an expert, a teacher) was trained on and how good it is on its own validation
    split: shown beside every verdict that uses it. Knowledge features say what they are (``record``)."""
    if not isinstance(fitted, FittedModel):
        return fitted.record()
    history = fitted.history
    return {"strategy": fitted.spec.get("strategy"), "task": fitted.spec.get("target"),
            "sources": fitted.spec.get("sources", []), "seed": fitted.spec.get("seed"),
            "train_size": fitted.spec.get("train_size"),
            "val_accuracy": history.val_metric[history.best_epoch] if history.val_metric else None}


def _source_identity(source) -> str:
    """A source is identified by its content (a task, a given model or adapter: ``fingerprint``), an already
    fitted expert by its spec."""
    if isinstance(source, FittedModel):
        return json.dumps(source.spec, sort_keys=True, default=str)
    return source.fingerprint()


@dataclass
class Artefact:
    """``trainer`` fitted on ``target`` (its stratified ``train_size`` subsample) with ``sources`` and ``seed``,
    kept under ``<workdir>/<folder>/``: trained once per work folder, loaded by every later ``provide``."""

    trainer: Strategy
    target: Task
    sources: tuple = ()
    seed: int = 0
    train_size: int | None = None
    folder: str = "models"
    data_seed: int | None = None  # draws the training subsample when set (``Strategy.fit``)

    def _train_task(self) -> Task:
        return self.target.subsample(self.train_size, self.seed if self.data_seed is None else self.data_seed)

    @property
    def key(self) -> str:
        """Same strategy, knobs, encoder, data (content fingerprints) and seed: the same key, wherever it is asked."""
        trainer = self.trainer
        identity = {"strategy": trainer.name,
                    "knobs": {k: v for k, v in trainer.knobs.to_dict().items() if k != "progress"},
                    "encoder": trainer.encoder_name, "max_length": trainer.max_length, "pooling": trainer.pooling,
                    # the weights, not only the name: other weights under the same name are another artefact
                    "base": base_fingerprint(trainer.encoder_name),
                    "target": self._train_task().fingerprint(),
                    "sources": [_source_identity(s) for s in self.sources], "seed": self.seed}
        return digest(identity)

    @property
    def path(self) -> Path:
        names = "+".join(str(source_name(s)) for s in self.sources)
        stem = f"{self.trainer.name}-{self.target.name}{'-' + names if names else ''}-s{self.seed}"
        return self.trainer.workdir / self.folder / f"{stem}-{self.key}"

    def provide(self) -> FittedModel:
        """The fitted artefact: loaded when it is saved whole; trained (and saved) when it is not there, or when
        what is there cannot be loaded (then it is moved to ``damaged/`` with a warning first). A process keeps the
        last few it loaded or trained (``_LOADED``) and hands out copies: a worker whose runs share experts reads
        each from disk once, and no run can change another's."""
        path = self.path
        kept = _kept(path)
        if kept is not None:
            return kept
        locks = self.trainer.workdir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        # Another process on the same work folder may be training it: wait for it rather than train it twice.
        with FileLock(locks / f"{self.folder}-{path.name}.lock"):
            if path.is_dir():
                try:
                    return _keep(path, FittedModel.load(path, device=self.trainer.device))
                except DataError as error:
                    move_aside(path, str(error))
            fitted = self.trainer.fit(self.target, list(self.sources), seed=self.seed, train_size=self.train_size,
                                      data_seed=self.data_seed)
            fitted.save(path)
            return _keep(path, fitted)


# Saved artefact folder -> (its weights and spec files' modification times and sizes, the fitted model, its frozen
# backbone and that backbone's fingerprint once asked for): the artefacts this process loaded or trained last, handed
# out as copies (``copy.deepcopy`` of the module: 0.05 s against 0.5 s to load a MiniLM expert). The kept model is
# never handed out, so it stays as saved. Keyed by the files' stamps, so an artefact rebuilt or damaged on disk is
# read again.
_LOADED: "OrderedDict[str, tuple[tuple, FittedModel, dict]]" = OrderedDict()
KEEP_LOADED = 8


def _stamp(path: Path) -> tuple | None:
    """The saved folder's weights and spec files, by modification time and size; None when one is missing."""
    try:
        return tuple((status.st_mtime_ns, status.st_size) for status in
                     ((path / WEIGHTS_FILE).stat(), (path / SPEC_FILE).stat()))
    except OSError:
        return None


def _copy(fitted: FittedModel) -> FittedModel:
    return replace(fitted, module=copy.deepcopy(fitted.module), spec=copy.deepcopy(fitted.spec),
                   probabilities=dict(fitted.probabilities))


def _kept(path: Path) -> FittedModel | None:
    entry = _LOADED.get(str(path))
    if entry is None or entry[0] != _stamp(path):
        return None
    _LOADED.move_to_end(str(path))
    return replace(_copy(entry[1]), origin=(str(path), entry[0]))


def _keep(path: Path, fitted: FittedModel) -> FittedModel:
    stamp = _stamp(path)
    if stamp is not None:
        _LOADED[str(path)] = (stamp, _copy(fitted), {})
        while len(_LOADED) > KEEP_LOADED:
            _LOADED.popitem(last=False)
        fitted.origin = (str(path), stamp)
    return fitted


def frozen_backbone(fitted: FittedModel) -> tuple[torch.nn.Module, str | None]:
    """``fitted``'s encoder as a frozen plain transformers model (``dense_backbone``) and, where known, the
    fingerprint of its weights, for code that only reads it (features of a frozen expert).

    For a model ``Artefact.provide`` handed out, both are made once per process from the copy the process keeps of
    the saved artefact (never from the caller's copy, which a run may have trained) and shared by every caller of
    this process: a representation run over three MiniLM experts then copies and hashes no 90 MB encoder (0.1 s
    each). Shared, so a caller must not train it or change it; anything else gets its own copy, fingerprint None.
    """
    entry = _LOADED.get(fitted.origin[0]) if fitted.origin else None
    if entry is None or entry[0] != fitted.origin[1]:
        return dense_backbone(fitted.module.backbone), None
    frozen = entry[2]
    if not frozen:
        model = dense_backbone(entry[1].module.backbone)
        frozen.update(model=model, fingerprint=weights_fingerprint(model))
    return frozen["model"], frozen["fingerprint"]
