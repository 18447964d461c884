"""Source experts: the base encoder adapted to one source task, trained once and reused by every strategy.

An expert is a fitted ``finetune`` (kind "full"), ``lora`` (kind "lora") or ``adapter`` (kind "adapter":
bottleneck adapters, AdapterFusion's stage 1) model on the source task, an
``Artefact`` kept under ``<workdir>/experts/``, keyed by (encoder, source content, kind, seed, train size,
knobs). It is early-stopped on its source's validation split, and its seed follows the run's, so a study's
seeds retrain the experts too: the training run, experts included, is the unit of replication. A strategy
that fuses sources carries ``ExpertKnobs`` as a knob group and asks ``expert_artefacts``
for its experts; the study asks the same function with the study's expert knobs, so both get the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import Encoder
from fusionkit.modeling.heads import dense_backbone, is_lora
from fusionkit.modeling.training import Knobs
from fusionkit.strategies import task_vectors
from fusionkit.strategies.base import Artefact, Control, FittedModel, frozen_backbone
from fusionkit.strategies.finetune import Adapter, Finetune, Lora
from fusionkit.strategies.knowledge import MODEL, LoraAdapter, PretrainedModel

EXPERT_TRAINERS = {"full": Finetune, "lora": Lora, "adapter": Adapter}


@dataclass
class ExpertKnobs(Knobs):
    """How source experts are trained; every strategy that uses sources carries these knobs."""

    expert_kind: str = "full"
    expert_train_size: int | None = 2000  # stratified subsample of the source's training split
    expert_epochs: int = 2
    expert_lr: float | None = None  # None: the default of the expert's strategy
    expert_seed: int | None = None  # None: the run's seed; a fixed value shares one expert across seeds
    expert_validation_size: int | None = None  # stratified subsample of the source's validation split (speed)
    expert_labels: str = "true"  # "shuffled": trained on permuted labels (the "just more training" control)
    expert_knobs: dict = field(default_factory=dict)


EXPERT_LABELS = ("true", "shuffled")


def shuffled_label_control(strategy) -> Control:
    """The same fusion over experts trained on their sources with the labels shuffled: the extra training, encoders
    and capacity without the sources' knowledge (STILTs' control for sequential transfer; a random-expert control
    for representation fusion and merging). Planned only where every source is a task."""
    return Control("shuffled-label source", strategy, {"expert_labels": "shuffled"}, keep_sources=True,
                   tasks_only=True)


def expert_artefacts(knobs: ExpertKnobs, settings: dict, sources: list, seed: int) -> list[Artefact | FittedModel]:
    """The expert of each source, trained as ``knobs`` say with the strategy ``settings`` (encoder, work folder...).
    A fitted model passed as a source is already an expert and is used as it is; a given model or adapter is
    loaded as one (``knowledge``); knowledge features pass through."""
    if knobs.expert_kind not in EXPERT_TRAINERS:
        raise ConfigError(f"expert_kind must be one of {sorted(EXPERT_TRAINERS)}, got {knobs.expert_kind!r}")
    train_knobs = {"epochs": knobs.expert_epochs, "progress": False, **knobs.expert_knobs}
    if knobs.expert_lr is not None:
        train_knobs["lr"] = knobs.expert_lr
    trainer = EXPERT_TRAINERS[knobs.expert_kind](train_knobs, **settings)
    if knobs.expert_labels not in EXPERT_LABELS:
        raise ConfigError(f"expert_labels must be one of {EXPERT_LABELS}, got {knobs.expert_labels!r}")
    expert_seed = seed if knobs.expert_seed is None else knobs.expert_seed

    def expert(source):
        if isinstance(source, Task):
            return Artefact(trainer, _expert_task(knobs, source, expert_seed), (), expert_seed,
                            _train_size(knobs, source), folder="experts")
        if isinstance(source, (PretrainedModel, LoraAdapter)):
            return source.expert(settings)
        return source  # a fitted expert, or knowledge features (the strategy reads them from the target)
    return [expert(source) for source in sources]


def expert_train_task(knobs: ExpertKnobs, source: Task, seed: int) -> Task:
    """The examples the expert of task ``source`` trains on for a run of ``seed`` (its training split is the
    expert's stratified subsample), as ``expert_artefacts`` plans it."""
    expert_seed = seed if knobs.expert_seed is None else knobs.expert_seed
    return _expert_task(knobs, source, expert_seed).subsample(_train_size(knobs, source), expert_seed)


def _expert_task(knobs: ExpertKnobs, source: Task, seed: int) -> Task:
    task = source.capped("validation", knobs.expert_validation_size)
    return task.with_shuffled_labels(seed) if knobs.expert_labels == "shuffled" else task


def _train_size(knobs: ExpertKnobs, source: Task) -> int | None:
    size = knobs.expert_train_size
    return size if size and size < len(source.train) else None


def check_same_base(expert: FittedModel, base_fingerprint: str) -> None:
    theirs = expert.spec.get("base_fingerprint")
    if theirs != base_fingerprint:
        raise ConfigError(
            f"expert {expert.spec.get('target')!r} was trained on base encoder '{expert.spec.get('encoder')}' "
            f"(fingerprint {theirs}), but this run's base encoder has fingerprint {base_fingerprint}: "
            f"experts must share the base encoder they are fused into"
        )


def check_expert(expert: FittedModel, base: Encoder, purpose: str) -> None:
    """That ``expert`` can be used where its encoder's weights meet the base encoder's (sequential transfer,
    merging): a fusionkit expert or an adapter must come from the same base weights; a given model must have the
    same architecture (every weight's name and shape) and vocabulary, since its weights replace or shift the base's."""
    if expert.spec.get("source_kind") != MODEL:
        check_same_base(expert, base.fingerprint())
        return
    theirs = {k: tuple(v.shape) for k, v in expert.module.backbone.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in base.model.state_dict().items()}
    name = expert.spec["target"]
    if theirs != ours:
        differ = sorted(set(theirs) ^ set(ours)) or [k for k in ours if theirs[k] != ours[k]]
        raise ConfigError(f"{purpose} needs the study encoder's architecture ({base.name!r}); source {name!r} "
                          f"({expert.spec['encoder']}) differs, e.g. at {differ[:3]}. Representation fusion takes "
                          f"any architecture")
    if expert.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise ConfigError(f"{purpose} needs the study encoder's vocabulary ({base.name!r}); source {name!r} "
                          f"({expert.spec['encoder']}) has another tokenizer. Representation fusion takes any model")


def expert_backbone(expert: FittedModel) -> torch.nn.Module:
    """The expert's encoder as a frozen plain transformers model (a LoRA expert is merged into dense weights)."""
    return dense_backbone(expert.module.backbone)


def frozen_expert_encoder(expert: FittedModel, name: str, pooling: str, max_length: int) -> Encoder:
    """The expert's encoder for reading its features (``expert-<name>``). Made once per process for an expert a
    study provided, and shared (``frozen_backbone``): never train it; ``expert_backbone`` gives a model to train."""
    model, fingerprint = frozen_backbone(expert)
    return Encoder(model, expert.tokenizer, f"expert-{name}", pooling, max_length, _fingerprint=fingerprint)


def expert_task_vector(expert: FittedModel, base_state: dict) -> dict:
    """finetuned - pretrained; a LoRA expert's vector comes straight from its low-rank factors."""
    backbone = expert.module.backbone
    if expert.spec.get("strategy") == Adapter.name:
        raise ConfigError(f"expert {expert.spec.get('target')!r} is a bottleneck adapter: it adds modules rather "
                          f"than moving the encoder's weights, so it has no task vector to merge; merge experts of "
                          f"kind 'full' or 'lora' (AdapterFusion fuses adapters)")
    if is_lora(backbone):
        from peft import get_peft_model_state_dict

        config = backbone.peft_config["default"]
        return task_vectors.lora_delta(get_peft_model_state_dict(backbone), config.lora_alpha / config.r)
    return task_vectors.task_vector(expert_backbone(expert).state_dict(), base_state)
