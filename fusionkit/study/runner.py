"""A study: strategies x seeds x train sizes on one target, every run stored once (resumable).

``run_study`` is what notebooks 02 and 04 call; ``design`` says which runs a study makes (tuning, matched
controls, ablations). A run already in the results store is not redone, so a killed study picks up where
it stopped; experts, fitted teachers and features are reused from the same work folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from filelock import Timeout

from fusionkit._io import stream_digest
from fusionkit.data.overlap import EvaluationIndex
from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError, TrainingError
from fusionkit.evaluation.gains import Cost
from fusionkit.evaluation.metrics import score_all
from fusionkit.evaluation.sequential import SeedDesign
from fusionkit.evaluation.similarity import layerwise_cka
from fusionkit.modeling.encoders import Encoder, load_encoder
from fusionkit.modeling.heads import TextCollator, dense_backbone, inference_size, model_flops
from fusionkit.modeling.training import torch_threads
from fusionkit.strategies import STRATEGIES, Artefact, get_strategy
from fusionkit.strategies.base import source_name as source_name_of
from fusionkit.study.sources import (check_sources, is_task, knowledge_columns, knowledge_source, load_entry_task,
                                     source_name, task_file, task_name)
from fusionkit.study.store import ResultsStore, run_key


@dataclass
class Arm:
    """One line of a study: a system (the name tables and figures show), a strategy and its knobs.
    ``per_source`` runs it once per source; ``train_sizes`` (if set) replaces the study's sizes for this arm.
    ``search`` (knob -> values) replaces the strategy's search space; ``controls`` names which of the strategy's
    further controls run besides the matched one (None: all), and ``further_controls_for`` for the per-source
    systems of how many of the study's first sources (None: all; the first source listed is the study's main
    hypothesis); ``leave_one_out`` also runs it without each of its sources in turn."""

    system: str
    strategy: str
    knobs: dict = field(default_factory=dict)
    per_source: bool = False
    train_sizes: list | None = None
    search: dict | None = None
    controls: list | None = None
    further_controls_for: int | None = None
    leave_one_out: bool = False

    def runs_control(self, index: int, role: str, sources: list, study_sources: list) -> bool:
        """Whether the strategy's ``index``-th control (``role``) runs for this arm's system on ``sources``: the
        first (the matched control, the verdict's reference) always does."""
        if index == 0:
            return True
        if self.controls is not None and role not in self.controls:
            return False
        if self.per_source and self.further_controls_for is not None:
            return study_sources.index(sources[0]) < self.further_controls_for
        return True


@dataclass
class StudyConfig:
    """One study. ``target`` is a task (a registered name, a file path, or ``{path, text_column, label_column,
    name}``); after construction it is the task's name and a file's description is kept in ``task_files``.
    ``sources`` are tasks or other knowledge (``fusionkit.study.sources``), as the user wrote them."""

    target: str
    sources: list
    arms: list[Arm]
    # A list (every system runs every seed) or {first, max, looks}: seeds in stages, 0..max-1, given at each look
    # only to the systems whose primary comparison is still undecided (``evaluation.sequential``); after
    # construction the list of every seed the study may run, with the looks in ``seed_design``.
    seeds: list[int] | dict = field(default_factory=lambda: [0, 1, 2])
    train_sizes: list = field(default_factory=lambda: [256])
    encoder: str = "minilm"
    max_length: int = 64
    workdir: str = "runs/default"
    data_dir: str | None = None
    task_train_cap: int | None = None  # cap every task's train split (smoke runs)
    validation_cap: int | None = None  # cap the target's validation split: early stopping evaluates it often
    test_cap: int | None = None
    train_knobs: dict = field(default_factory=dict)  # given to every arm that trains with the loop
    expert_knobs: dict = field(default_factory=dict)  # given to every arm that uses sources
    cka_examples: int = 256  # target test texts on which base and adapted encoders are compared
    tuning_budget: int = 1  # configurations every tuned arm evaluates on the first seed (1: the defaults)
    # Tasks whose validation and test texts no source may contain (None: the target's). A transfer matrix names
    # its whole pool, so each source's data, and so its experts, are the same whichever target they serve.
    held_out_tasks: list[str] | None = None
    task_files: dict = field(default_factory=dict)  # task name -> its TaskFile fields (tasks given as files)
    # torch CPU threads of every run and expert, whichever executor carries it: one thread count, the same
    # floating-point sums, so the same run gives the same numbers in this process and on Ray (a Ray task takes
    # this many CPUs). Not part of a run's key; each record says what it ran with.
    threads: int = 1
    # Seeds 0..k-1 crossed with data seeds 0..k-1 for every fusion system and its matched control (None: not run):
    # the variance of each verdict's gain split between the training examples drawn and the rest (Bouthillier et
    # al. 2021); the diagonal is the study's own runs.
    variance_split: int | None = None
    # Source training and test examples (each) on which every run with an encoder of its own is probed for each
    # source task's skill, and the source experts likewise (``source_scores.source_skill_references``): what fusion
    # kept of the source skill. None: not measured. Not part of a run's key: a run stored without it has none.
    retention_examples: int | None = None
    # The verdict rule (declared before the study): what a staged design stops on, and what the report judges by.
    alpha: float = 0.05
    min_effect: float = 0.0
    seed_design: SeedDesign | None = None  # set from ``seeds``

    def __post_init__(self):
        self.seed_design = SeedDesign.from_parameter(self.seeds)
        if isinstance(self.seeds, dict):
            self.seeds = list(range(self.seed_design.max_seeds))
        file = task_file(self.target)
        if file is not None:
            self.task_files = {**self.task_files, file.task_name: file.model_dump()}
            self.target = file.task_name
        self.target = task_name(self.target)
        self.sources = list(self.sources)
        check_sources(self.target, self.sources)
        self.arms = [a if isinstance(a, Arm) else Arm(**a) for a in self.arms]
        for arm in self.arms:
            if arm.strategy not in STRATEGIES:
                raise ConfigError(f"arm '{arm.system}': unknown strategy '{arm.strategy}'; "
                                  f"known strategies: {', '.join(STRATEGIES)}")

    @property
    def source_names(self) -> list[str]:
        return [source_name(entry) for entry in self.sources]

    def task(self, name: str, knowledge: dict | None = None) -> Task:
        """A task of the study by name (a file the study was given, or a registered task)."""
        return load_entry_task(self.task_files.get(name, name), self.data_dir, knowledge)


def load_study_tasks(config: StudyConfig) -> tuple[Task, list]:
    """The target and the sources, with the study's caps applied (fixed seed: every run sees the same data),
    and every source task without the texts of the target's validation and test splits (the same text, a
    tokenisation variant or a near-duplicate: ``data.overlap.EvaluationIndex``): knowledge fused from a source must
    not include the sentences the target is judged on. With
    ``held_out_tasks``, without those tasks' validation and test texts too (every target of a matrix).
    A source that is not a task (a model, an adapter, knowledge features) comes as ``knowledge_source`` gives it;
    knowledge features are read with the target's file."""
    whole_target = config.task(config.target, knowledge_columns(config.sources))
    target = (whole_target.capped("validation", config.validation_cap).capped("test", config.test_cap)
              .capped("train", config.task_train_cap))
    # Whole evaluation splits, not the capped ones: no source holds any validation or test text of a held-out task.
    judged_on = [whole_target, *(config.task(name) for name in config.held_out_tasks or [] if name != config.target)]
    texts = {task.name: [text for split in (task.validation, task.test) for text in split["text"][:]]
             for task in judged_on}
    sources = []
    for entry in config.sources:
        if not is_task(entry):
            sources.append(knowledge_source(entry))
            continue
        source = load_entry_task(entry, config.data_dir).capped("train", config.task_train_cap)
        others = sorted(other for other in texts if other != source.name)  # a source's own splits stay its own
        sources.append(_decontaminated(source, [text for other in others for text in texts[other]], others))
    return target, sources


# (source content, held-out texts) -> the source without them: a study loads its tasks in every notebook and Ray
# worker, and matching a source against the index (MinHash signatures) is the costly part. Keyed by content, so
# changed data is matched again.
_DECONTAMINATED: dict[tuple[str, str], Task] = {}
_KEEP = 64


def _decontaminated(source: Task, held_out: list[str], held_out_tasks: list[str]) -> Task:
    key = (source.fingerprint(), stream_digest(held_out))
    if key not in _DECONTAMINATED:
        if len(_DECONTAMINATED) >= _KEEP:
            _DECONTAMINATED.clear()
        why = (f"the same text as, a tokenisation variant of, or a near-duplicate of a validation or test text of "
               f"{' or '.join(held_out_tasks)}")
        _DECONTAMINATED[key] = source.without_matches(EvaluationIndex(held_out), why)
    return _DECONTAMINATED[key]


def resolved_knobs(strategy: str, knobs: dict) -> dict:
    """Every knob of the strategy, ``knobs`` over its defaults. Defaults are spelled out so that a run's key
    changes when a default does: a stored run is reused only if it was trained with the same settings.
    ``progress`` is left out: it changes no result. So is a knob added after runs were stored, while it has the
    value that does what those runs did (``Knobs.ADDED``): a stored run stays the run it was."""
    knob_class = STRATEGIES[strategy].Knobs
    resolved = knob_class.from_knobs(knobs).to_dict()
    resolved.pop("progress", None)
    for name, value in knob_class.ADDED.items():
        if resolved.get(name) == value:
            resolved.pop(name)
    return resolved


def arm_knobs(arm: Arm, config: StudyConfig, configuration: dict | None = None) -> dict:
    """Every knob of the arm's strategy, resolved: a tuning ``configuration`` over the arm's own knobs over the
    study's shared training and expert knobs (only those the strategy has) over the strategy's defaults."""
    known = STRATEGIES[arm.strategy].Knobs.knob_names()
    shared = {**config.train_knobs, **config.expert_knobs}
    return resolved_knobs(arm.strategy, {**{k: v for k, v in shared.items() if k in known}, **arm.knobs,
                                         **(configuration or {})})


def strategy_settings(config: StudyConfig) -> dict:
    """What every strategy of the study (and every expert it trains) runs with."""
    return {"encoder": config.encoder, "workdir": config.workdir, "max_length": config.max_length,
            "threads": config.threads}


def cka_texts(target: Task, config: StudyConfig) -> list[str]:
    """The target test texts on which every run's encoder is compared with the base encoder."""
    return list(target.test["text"][:])[:config.cka_examples]


def adapted_encoder(fitted, base: Encoder) -> Encoder | None:
    """The fitted model's own encoder (fine-tuned, merged, with adapters), frozen; None when it has none
    (representation fusion keeps the base and the experts frozen beside each other)."""
    backbone = getattr(fitted.module, "backbone", None)
    if backbone is None:
        return None
    return Encoder(dense_backbone(backbone), base.tokenizer, "adapted", base.pooling, base.max_length)


def encoder_cka(adapted: Encoder | None, base: Encoder, texts: list[str],
                base_layers: np.ndarray) -> list[list[float]] | None:
    """Linear CKA of every (base layer, adapted layer) pair on the same texts; None without an encoder of the
    run's own. ``base_layers``: the base encoder's per-layer features of ``texts``, computed once per study since
    they are the same for every run."""
    if adapted is None:
        return None
    after = adapted.encode(texts, layers=list(range(base.num_layers + 1)))
    return layerwise_cka(base_layers, after).round(6).tolist()


def retention_sets(sources: list, examples: int) -> dict[str, Task]:
    """Each source task cut to ``examples`` training and test examples (stratified, seed 0: the same for every run
    and reference), on which an encoder's skill at the source is probed."""
    return {source.name: source.capped("train", examples).capped("test", examples) for source in sources
            if isinstance(source, Task)}


def source_skill(encoder: Encoder, sets: dict[str, Task]) -> dict[str, float]:
    """Per source task: the test accuracy of a logistic probe (C=1) fitted on the encoder's features of the source's
    training examples. Run on a fused model's encoder and on the source's expert, it says how much of the source
    skill fusion kept (forgetting: ``evaluation.gains.forgetting``)."""
    from fusionkit.strategies.linear_probe import fit_logistic_head

    skill = {}
    for name, task in sets.items():
        features = {"train": encoder.encode(list(task.train["text"][:])),
                    "validation": encoder.encode(list(task.test["text"][:]))}
        labels = {"train": np.asarray(task.train["label"][:]), "validation": np.asarray(task.test["label"][:])}
        _, history = fit_logistic_head(features, labels, task.num_labels, c=1.0, max_iter=2000, seed=0)
        skill[name] = round(history.val_metric[0], 6)  # the probe's accuracy on the source's test examples
    return skill


INFERENCE_SAMPLE = 64  # test texts the inference cost is timed on when the test probabilities are cached
# Texts a run whose architecture (strategy, knobs, number of sources) was already timed in this process predicts, to
# check its cached test probabilities against its module's: the cost is the architecture's, timed once per process.
CHECK_SAMPLE = 4
# (strategy, knobs, number of sources, encoder, max length, test texts, threads) -> ms per test example, as timed
# in this process on INFERENCE_SAMPLE test texts (frozen-encoder strategies only; the others predict the whole set).
INFERENCE_MS: dict[tuple, float] = {}


class StudyRunner:
    """Fits the runs of one study. A run that another run needs fitted first (a ``sequential`` run that
    ``distill`` uses as a teacher) is fitted through the artefact cache, so it is trained only once."""

    def __init__(self, config: StudyConfig, target: Task, sources: list[Task], store: ResultsStore):
        self.config, self.target, self.store = config, target, store
        self.by_name = {source_name_of(s): s for s in sources}
        self.base = load_encoder(config.encoder, max_length=config.max_length)
        with torch_threads(config.threads):  # the CKA's reference, the same in every executor
            self.base_layers = self.base.encode(cka_texts(target, config), layers=list(range(self.base.num_layers + 1)))
        self.test_tokens = sum(TextCollator(self.base.tokenizer, config.max_length).lengths(target.test["text"][:]))
        self.test_fingerprint = stream_digest(target.test["text"][:])
        self.retention = retention_sets(sources, config.retention_examples) if config.retention_examples else {}
        self._base_skill: dict[str, float] | None = None

    def source_skill(self, encoder: Encoder) -> dict[str, float]:
        """``source_skill`` of a run's encoder; an encoder with the base's weights (a probe's) has the base's skill,
        probed once per runner."""
        if encoder.fingerprint() != self.base.fingerprint():
            return source_skill(encoder, self.retention)
        if self._base_skill is None:
            self._base_skill = source_skill(self.base, self.retention)
        return self._base_skill

    def parts(self, run: dict):
        """The run's strategy, its source tasks, and its train size (None: the whole training split)."""
        strategy = get_strategy(run["strategy"], run["knobs"], **strategy_settings(self.config))
        train_size = run["train_size"] if run["train_size"] < len(self.target.train) else None
        return strategy, [self.by_name[n] for n in run["sources"]], train_size

    def as_artefact(self, run: dict) -> Artefact:
        """The run's fitted model as an artefact: what another run needing it (a teacher) asks for."""
        strategy, sources, train_size = self.parts(run)
        return Artefact(strategy, self.target, tuple(sources), run["seed"], train_size, data_seed=run.get("data_seed"))

    def validation_accuracy(self, fitted) -> float:
        """The criterion every configuration is chosen by, the same for every strategy: the fitted model's accuracy
        on the target's (whole or capped) validation split. Every strategy early-stops or selects on that split, so
        its history holds it already (the kept epoch's score); it is computed only where the history has none."""
        history = fitted.history
        if history.val_metric and 0 <= history.best_epoch < len(history.val_metric):
            return float(history.val_metric[history.best_epoch])
        validation = self.target.validation
        return float((fitted.predict(validation) == np.asarray(validation["label"][:])).mean())

    def run(self, run: dict, required: set[str]) -> None:
        """Fit the run (through the artefact cache when another run needs its model) and store its record."""
        as_artefact = self.as_artefact(run)
        if as_artefact.key in required:
            fitted = as_artefact.provide()
        else:
            fitted = as_artefact.trainer.fit(self.target, list(as_artefact.sources), seed=run["seed"],
                                             train_size=as_artefact.train_size, data_seed=run.get("data_seed"))
        test, labels = self.target.test, np.asarray(self.target.test["label"][:])
        # Inference cost from the module itself: timed on the whole test set when the module predicts it anyway;
        # where a frozen-encoder strategy computed the test probabilities from its cached features, on a sample
        # of the test examples, whose probabilities must then match the cached ones (the same numbers). Examples,
        # not bare texts: a model that fuses knowledge features reads them from the examples' columns.
        probs = fitted.probabilities.get("test")
        shape = (run["strategy"], json.dumps(run["knobs"], sort_keys=True), len(run["sources"]), run["encoder"],
                 run["max_length"], self.test_fingerprint, torch.get_num_threads())
        known = probs is not None and shape in INFERENCE_MS
        timed = test if probs is None else test.select(range(min(CHECK_SAMPLE if known else INFERENCE_SAMPLE,
                                                                 len(test))))
        start = time.perf_counter()
        timed_probs = fitted.predict_proba(timed)
        infer_ms = 1000 * (time.perf_counter() - start) / len(timed)
        if probs is None:
            probs = timed_probs
        elif not np.allclose(probs[:len(timed)], timed_probs, atol=1e-4):
            raise TrainingError(f"{run['strategy']}: its cached test probabilities differ from its module's")
        elif known:  # the same architecture was timed in this process: its cost, whatever the seed
            infer_ms = INFERENCE_MS[shape]
        else:
            INFERENCE_MS[shape] = infer_ms
        cost = Cost(fitted.num_trainable_params, fitted.train_seconds, infer_ms,
                    model_flops(fitted.module, fitted.history.tokens, self.test_tokens),
                    *inference_size(fitted.module))
        val_accuracy = self.validation_accuracy(fitted)
        adapted = adapted_encoder(fitted, self.base)
        details = {"arch": fitted.spec["arch"], "history": fitted.history.to_dict(),
                   "artefacts": fitted.spec.get("artefacts", []), "torch_threads": torch.get_num_threads(),
                   "cka_base_vs_adapted": encoder_cka(adapted, self.base, cka_texts(self.target, self.config),
                                                      self.base_layers)}
        if self.retention and adapted is not None:
            details["source_skill"] = self.source_skill(adapted)
        self.store.put(run_key(run), {**run, "details": details},
                       {**score_all(labels, probs), "val_accuracy": val_accuracy}, cost.as_dict(), labels, probs)


TRAINED, FOUND, BUSY = "trained", "found", "busy"


def fit_and_store(runner: StudyRunner, run: dict, required: set[str], wait: bool) -> str:
    """Fit and store ``run`` under its lock unless it is stored by then (FOUND: another process stored it);
    BUSY, without waiting, when another process holds the lock and ``wait`` is False. Every executor fits
    runs through here, so no run is trained twice whatever executors and drivers share the work folder."""
    key = run_key(run)
    try:
        with runner.store.lock(key, timeout=-1 if wait else 0):
            if runner.store.has(key):
                return FOUND
            torch.manual_seed(run["seed"])
            with torch_threads(runner.config.threads):  # fitting, inference and the CKA alike
                runner.run(run, required)
            return TRAINED
    except Timeout:
        return BUSY
