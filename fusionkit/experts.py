"""Source experts: a model adapted to one source task, trained once and reused by every strategy.

An expert is a fitted ``finetune`` (kind "full") or ``lora`` (kind "lora") model on the source task,
saved under ``<workdir>/experts/<name>`` keyed by (encoder, source, kind, seed, train size, knobs).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from fusionkit.errors import ConfigError
from fusionkit.fusion.base import FittedModel
from fusionkit.tasks import Task

EXPERT_KINDS = {"full": "finetune", "lora": "lora"}


@dataclass
class ExpertKnobs:
    """How source experts are trained; every strategy that uses sources carries these knobs."""

    expert_kind: str = "full"
    expert_train_size: int | None = 2000  # stratified subsample of the source's training split
    expert_epochs: int = 2
    expert_lr: float | None = None  # None: the default of the expert's strategy
    expert_seed: int | None = None  # None: the run's seed; a fixed value shares one expert across seeds
    expert_knobs: dict = field(default_factory=dict)


def check_same_base(expert: FittedModel, base_fingerprint: str, where: str = "") -> None:
    theirs = expert.spec.get("base_fingerprint")
    if theirs != base_fingerprint:
        raise ConfigError(
            f"expert {where or expert.spec.get('target')!r} was trained on base encoder "
            f"'{expert.spec.get('encoder')}' (fingerprint {theirs}), but this run's base encoder has "
            f"fingerprint {base_fingerprint}: experts must share the base encoder they are fused into"
        )


def get_expert(source: Task | FittedModel, strategy, seed: int, base_fingerprint: str) -> FittedModel:
    """The expert for ``source`` under ``strategy``'s settings: loaded from disk if trained before."""
    from fusionkit.fusion import get_strategy

    if isinstance(source, FittedModel):
        check_same_base(source, base_fingerprint)
        return source
    knobs = strategy.knobs
    if knobs.expert_kind not in EXPERT_KINDS:
        raise ConfigError(f"expert_kind must be one of {sorted(EXPERT_KINDS)}, got {knobs.expert_kind!r}")
    train_knobs = {"epochs": knobs.expert_epochs, **knobs.expert_knobs, "progress": knobs.progress}
    if knobs.expert_lr is not None:
        train_knobs["lr"] = knobs.expert_lr
    train_size = knobs.expert_train_size if knobs.expert_train_size and knobs.expert_train_size < len(
        source.train) else None
    trainer = get_strategy(EXPERT_KINDS[knobs.expert_kind], train_knobs, encoder=strategy.encoder_name,
                           workdir=strategy.workdir, device=strategy.device, max_length=strategy.max_length,
                           pooling=strategy.pooling)
    expert_seed = seed if knobs.expert_seed is None else knobs.expert_seed
    expert = trainer.fit_cached(source, seed=expert_seed, train_size=train_size, folder="experts")
    check_same_base(expert, base_fingerprint, f"{source.name} ({knobs.expert_kind})")
    return expert


def expert_backbone(expert: FittedModel) -> torch.nn.Module:
    """The expert's encoder as a plain transformers model (a LoRA expert is merged into dense weights)."""
    backbone = copy.deepcopy(expert.module.backbone)
    if hasattr(backbone, "merge_and_unload"):
        backbone = backbone.merge_and_unload()
    for param in backbone.parameters():
        param.requires_grad_(False)
    return backbone.eval()
