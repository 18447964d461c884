"""A study's source experts, and how transferable each source looks for the target before any fusion.

The experts are trained with the study's expert knobs through the same cache the fusion strategies use,
so scoring them here trains nothing that notebook 04 would train again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fusionkit._io import atomic_write, digest
from fusionkit.data.tasks import Task
from fusionkit.evaluation.transferability import hscore, leep, logme, nce, text_embedding_similarity
from fusionkit.modeling.encoders import Encoder, load_encoder
from fusionkit.modeling.training import torch_threads
from fusionkit.strategies.base import Artefact, FittedModel
from fusionkit.strategies.experts import (ExpertKnobs, check_same_base, expert_artefacts, frozen_expert_encoder,
                                         expert_train_task)
from fusionkit.strategies.base import source_name
from fusionkit.strategies.knowledge import MODEL, TASK
from fusionkit.study.runner import (StudyConfig, load_study_tasks, retention_sets, source_skill,
                                    strategy_settings)


# Part of the cached table's name: bumped when a score's definition changes, so no stale table is reused
# (2: the regularised H-score gained its (1 - alpha) factor; 3: text-embedding similarity).
SCORES_VERSION = 3


def source_experts(config: StudyConfig, sources: list, base: Encoder, seed: int | None = None) -> dict:
    """One expert per source, trained (or loaded) exactly as the study's fusion arms ask for it on ``seed``
    (None: the study's first seed; experts are retrained for every seed). A given model or adapter is its own
    expert; knowledge features stay what they are."""
    seed = config.seeds[0] if seed is None else seed
    settings = {**strategy_settings(config), "pooling": base.pooling, "device": None}
    needs = expert_artefacts(ExpertKnobs.from_knobs(config.expert_knobs), settings, sources, seed)
    experts = {source_name(source): need.provide() if isinstance(need, Artefact) else need
               for source, need in zip(sources, needs)}
    for expert in experts.values():
        if isinstance(expert, FittedModel) and expert.spec.get("source_kind") != MODEL:
            check_same_base(expert, base.fingerprint())
    return experts


def study_experts(config: StudyConfig, seed: int | None = None) -> dict[str, FittedModel]:
    """The study's source experts of one seed (None: the first), on its (capped) source tasks."""
    _, sources = load_study_tasks(config)
    return source_experts(config, sources, load_encoder(config.encoder, max_length=config.max_length), seed)


def expert_geometry(config: StudyConfig, seed: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The geometry of the study's task experts of one seed (None: the first): the cosine similarity of their task
    vectors (expert weights minus the base's) overall and per layer, and TIES's sign-conflict rate at the merge
    profile's density 0.2 (``evaluation.geometry``). Given models and knowledge features are left out (no task
    vector on this base). Needs at least 2 task experts."""
    from fusionkit.evaluation.geometry import layer_cosines, sign_conflict_rate, task_vector_cosines
    from fusionkit.strategies.experts import expert_task_vector

    base = load_encoder(config.encoder, max_length=config.max_length)
    _, sources = load_study_tasks(config)
    experts = {name: expert for name, expert in source_experts(config, sources, base, seed).items()
               if isinstance(expert, FittedModel) and expert.spec.get("source_kind", TASK) == TASK}
    base_state = base.model.state_dict()
    names = list(experts)
    vectors = [{key: tensor.detach().cpu().numpy() for key, tensor in expert_task_vector(expert, base_state).items()}
               for expert in experts.values()]
    return (task_vector_cosines(vectors, names), layer_cosines(vectors, names),
            sign_conflict_rate(vectors, names, density=0.2))


def source_skill_references(config: StudyConfig, seeds: list[int]) -> pd.DataFrame:
    """The source skill fusion starts from, by the retention probe that every run with an encoder of its own gets
    (``runner.source_skill`` on ``retention_examples`` of each source task): the base encoder's (seed None) and each
    source's own expert's on every seed in ``seeds`` (experts are per seed; loaded from the study's cache). Columns
    seed, source, reference ("base" or "expert"), accuracy; empty when the study measures no retention."""
    columns = ["seed", "source", "reference", "accuracy"]
    if not config.retention_examples:
        return pd.DataFrame(columns=columns)
    base = load_encoder(config.encoder, max_length=config.max_length)
    _, sources = load_study_tasks(config)
    sets = retention_sets(sources, config.retention_examples)
    with torch_threads(config.threads):
        rows = [(None, name, "base", accuracy) for name, accuracy in source_skill(base, sets).items()]
        for seed in seeds:
            for name, expert in source_experts(config, sources, base, seed).items():
                if name in sets and isinstance(expert, FittedModel):
                    encoder = frozen_expert_encoder(expert, name, base.pooling, base.max_length)
                    rows.append((seed, name, "expert", source_skill(encoder, {name: sets[name]})[name]))
    return pd.DataFrame(rows, columns=columns)


@dataclass
class SourceTextIndex:
    """The study's target (capped as the study runs it) with the base encoder's embeddings of its test texts and of
    the training texts that the first seed's expert of each task source trained on (``source_text_index``)."""

    target: Task
    test: np.ndarray
    embeddings: dict[str, np.ndarray]
    texts: dict[str, list[str]]

    def nearest(self, sources) -> pd.DataFrame | None:
        """For each test text, the nearest training text among the named ``sources`` (those that are tasks), by
        cosine similarity (``evaluation.flips.nearest_texts``): columns source, index, similarity, source_text.
        None when no named source is a task (given models and knowledge features have no texts)."""
        from fusionkit.evaluation.flips import nearest_texts

        names = [name for name in sources if name in self.embeddings]
        if not names:
            return None
        nearest = nearest_texts(self.test, {name: self.embeddings[name] for name in names})
        nearest["source_text"] = [self.texts[name][int(index)]
                                  for name, index in zip(nearest["source"], nearest["index"])]
        return nearest


def source_text_index(config: StudyConfig) -> SourceTextIndex:
    """Reads the study's tasks and base encoder once and embeds, through the study's feature cache, the target's test
    texts and each task source's expert training texts of the first seed (``experts.expert_train_task``)."""
    from fusionkit.modeling.features import FeatureCache

    seed = config.seeds[0]
    target, sources = load_study_tasks(config)
    knobs = ExpertKnobs.from_knobs(config.expert_knobs)
    tasks = {source.name: expert_train_task(knobs, source, seed) for source in sources if isinstance(source, Task)}
    base = load_encoder(config.encoder, max_length=config.max_length)
    cache = FeatureCache(Path(config.workdir) / "features")
    with torch_threads(config.threads):
        embeddings = {name: cache.features(base, task.train["text"][:], name, f"expert-train-s{seed}")
                      for name, task in tasks.items()}
        test = cache.features(base, target.test["text"][:], target.name, "test")
    texts = {name: list(task.train["text"][:]) for name, task in tasks.items()}
    return SourceTextIndex(target, test, embeddings, texts)


TEXTEMB_TEXTS = 1000  # source training texts (a stratified sample) whose mean embedding stands for the source


def transferability_table(target: Task, experts: dict[str, FittedModel], base: Encoder, n_examples: int,
                          seed: int = 0, sources: dict[str, Task] | None = None) -> pd.DataFrame:
    """LogME, H-score, LEEP and NCE of each source expert on a stratified sample of the target's train split.

    LogME and H-score read the expert's pooled features; LEEP its source-label probabilities; NCE its hard
    source labels. The base encoder's LogME and H-score are given as the row "none (base)": a source whose
    features score below it is not expected to help. The sample is the one a low-resource user would have.
    Knowledge features are scored as they are (LogME, H-score); a source without a label head over source
    labels (a bare encoder, an adapter, features) has no LEEP or NCE (NaN). ``textemb`` (``sources``: name ->
    task) is the cosine of the base encoder's mean embeddings of the source's training texts (a stratified sample
    of up to ``TEXTEMB_TEXTS``) and of the sample's; a source that is not a task has none.
    """
    sample = target.subsample(n_examples, seed) if n_examples < len(target.train) else target
    texts, labels = list(sample.train["text"][:]), np.asarray(sample.train["label"][:])
    base_features = base.encode(texts)
    rows = [{"source": "none (base)", "logme": logme(base_features, labels), "hscore": hscore(base_features, labels),
             "leep": np.nan, "nce": np.nan, "textemb": np.nan}]
    for name, expert in experts.items():
        if not isinstance(expert, FittedModel):  # knowledge features of the target's own examples
            features = sample.knowledge(name, "train").astype(np.float64)
            rows.append({"source": name, "logme": logme(features, labels), "hscore": hscore(features, labels),
                         "leep": np.nan, "nce": np.nan, "textemb": np.nan})
            continue
        encoder = frozen_expert_encoder(expert, name, base.pooling, base.max_length)
        features = encoder.encode(texts)
        row = {"source": name, "logme": logme(features, labels), "hscore": hscore(features, labels),
               "leep": np.nan, "nce": np.nan, "textemb": np.nan}
        source = (sources or {}).get(name)
        if source is not None:
            kept = source.subsample(TEXTEMB_TEXTS, seed) if TEXTEMB_TEXTS < len(source.train) else source
            row["textemb"] = text_embedding_similarity(base.encode(kept.train["text"][:]), base_features)
        if expert.spec.get("has_label_head", True):
            source_probs = expert.predict_proba(texts)
            row.update(leep=leep(source_probs, labels), nce=nce(source_probs.argmax(1), labels))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["n_examples"] = len(labels)
    return table


def expert_table(experts: dict) -> pd.DataFrame:
    """What each expert is: its source, training size, best validation accuracy on the source, cost (a given
    model or adapter was trained elsewhere: none of these are known; knowledge features are not an expert)."""
    rows = []
    for name, expert in experts.items():
        if not isinstance(expert, FittedModel):
            rows.append({"source": name, "kind": "knowledge features", "columns": ", ".join(expert.columns)})
            continue
        history = expert.history
        rows.append({"source": name, "kind": expert.spec["strategy"], "train_size": expert.spec["train_size"],
                     "source_val_accuracy": max(history.val_metric) if history.val_metric else np.nan,
                     "epochs_run": len(history.val_metric), "train_seconds": expert.train_seconds,
                     "trainable_params": expert.num_trainable_params})
    return pd.DataFrame(rows)


def expert_quality(config: StudyConfig, seed: int | None = None) -> pd.DataFrame:
    """``expert_table`` of the study's experts of one seed (None: the first), with each trained expert judged on its
    own source: its accuracy on the source's test split, against two linear probes of the base encoder on the same
    test split (logistic regression on cached frozen features, C=1): one fitted on the examples the expert trained
    on, one on the source's whole training split. ``clears_probe``: the expert beats the probe on its own examples,
    the floor an expert must clear to carry knowledge the base encoder lacks."""
    from fusionkit.modeling.features import FeatureCache
    from fusionkit.strategies.linear_probe import fit_logistic_head

    seed = config.seeds[0] if seed is None else seed
    _, sources = load_study_tasks(config)
    base = load_encoder(config.encoder, max_length=config.max_length)
    experts = source_experts(config, sources, base, seed)
    table = expert_table(experts)
    cache = FeatureCache(Path(config.workdir) / "features")
    by_name = {source.name: source for source in sources if isinstance(source, Task)}
    rows = []
    for name, expert in experts.items():
        source = by_name.get(name)
        if source is None or not isinstance(expert, FittedModel) or not expert.spec.get("has_label_head", True):
            rows.append({})
            continue
        labels = {split: np.asarray(data["label"][:]) for split, data in source.splits.items()}
        test_accuracy = float((expert.predict(source.test) == labels["test"]).mean())
        features = cache.task_features(base, source)
        own = source.subsample(expert.spec["train_size"], expert.spec["seed"])  # the expert's own examples
        own_features = {"train": cache.features(base, own.train["text"][:], source.name, f"train-n{len(own.train)}"
                                                f"-s{expert.spec['seed']}"),
                        "validation": features["validation"]}
        own_labels = {"train": np.asarray(own.train["label"][:]), "validation": labels["validation"]}
        probes = {}
        for which, (x, y) in {"same_examples": (own_features, own_labels), "whole_split": (features, labels)}.items():
            head, _ = fit_logistic_head(x, y, source.num_labels, c=1.0, max_iter=2000, seed=seed)
            probes[which] = float((head(torch.as_tensor(features["test"])).argmax(1).numpy() == labels["test"]).mean())
        rows.append({"source_test_accuracy": test_accuracy,
                     "probe_same_examples_test_accuracy": probes["same_examples"],
                     "probe_whole_split_test_accuracy": probes["whole_split"],
                     "probe_whole_split_train_size": len(source.train),
                     "clears_probe": test_accuracy > probes["same_examples"]})
    return pd.concat([table, pd.DataFrame(rows, index=table.index)], axis=1)


def study_transferability(config: StudyConfig, n_examples: int) -> pd.DataFrame:
    """The study's transferability table, computed once and kept as CSV in its work folder (named by
    everything it depends on: encoder, expert knobs, the tasks' content and the sample size)."""
    target, sources = load_study_tasks(config)
    identity = [config.encoder, config.max_length, config.expert_knobs, target.fingerprint(),
                [s.fingerprint() for s in sources], n_examples, SCORES_VERSION]
    path = Path(config.workdir) / f"transferability-{config.target}-n{n_examples}-{digest(identity)}.csv"
    if path.is_file():
        return pd.read_csv(path)
    base = load_encoder(config.encoder, max_length=config.max_length)
    table = transferability_table(target, source_experts(config, sources, base), base, n_examples,
                                  sources={s.name: s for s in sources if isinstance(s, Task)})
    atomic_write(path, table.to_csv(index=False))  # a killed run leaves no half table to be read as finished
    return table
