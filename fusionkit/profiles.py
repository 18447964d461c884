"""Named study sizes: ``smoke`` (CI, seconds), ``quick`` (a real report on 2 CPU cores), ``full`` (a GPU).

A profile fixes the encoder, seeds, train sizes, caps and the arms of the baseline and fusion notebooks;
``study_config`` turns one into a :class:`~fusionkit.study.StudyConfig` for a target and its sources, and
any field can be overridden (``fusionkit report -p seeds=[0,1]``). A train size of ``None`` means the
target's whole training split.
"""
from __future__ import annotations

import copy
from dataclasses import fields

from fusionkit.errors import ConfigError
from fusionkit.study import StudyConfig

# Fusion arms shared by every profile; only their sizes and knobs change between profiles.
FUSION_ARMS = [
    {"label": "sequential", "strategy": "sequential", "per_source": True},
    # The fusion layer trains on cached features: many cheap epochs, unlike the profiles' fine-tuning epochs.
    {"label": "representation sum", "strategy": "representation",
     "knobs": {"mode": "sum", "layers": "last", "epochs": 30, "patience": 5}},
    {"label": "representation attention", "strategy": "representation",
     "knobs": {"mode": "attention", "layers": "all", "epochs": 30, "patience": 5}},
    {"label": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic"}},
    {"label": "merge ties", "strategy": "merge", "knobs": {"method": "ties"}},
    {"label": "multitask", "strategy": "multitask"},
    {"label": "distill", "strategy": "distill"},
]

PROFILES: dict[str, dict] = {
    "smoke": {
        "encoder": "tiny", "seeds": [0, 1], "max_length": 32,
        "task_train_cap": 120, "validation_cap": 40, "test_cap": 80, "cka_examples": 32,
        "train_knobs": {"epochs": 2, "batch_size": 16},
        "expert_knobs": {"expert_train_size": 60, "expert_epochs": 1, "expert_seed": 0},
        "fusion_size": 60,
        "baseline_arms": [
            {"label": "linear_probe", "strategy": "linear_probe", "train_sizes": [30, 60, None]},
            {"label": "finetune", "strategy": "finetune", "train_sizes": [30, 60]},
            {"label": "lora", "strategy": "lora", "train_sizes": [60]},
            {"label": "scratch", "strategy": "scratch", "train_sizes": [60]},
        ],
        "multitask_knobs": {"source_train_size": 60, "batches_per_epoch": 4},
    },
    "quick": {
        "encoder": "minilm", "seeds": [0, 1, 2], "max_length": 64,
        # A validation split as large as the largest fine-tuned train size (as in few-shot practice, e.g. LM-BFF):
        # early stopping scores it every epoch (MiniLM on 2 cores: 1.4 s at 200 examples, 0.9 s at 128).
        "validation_cap": 128, "cka_examples": 128,
        # 6 epochs with early stopping: at n=128, 3 epochs left fine-tuning ~14 points below its converged accuracy.
        "train_knobs": {"epochs": 6, "patience": 2, "batch_size": 16},
        # One expert per source (seed 0) shared by every seed: the seeds then vary the target side only.
        "expert_knobs": {"expert_train_size": 500, "expert_epochs": 2, "expert_seed": 0},
        "fusion_size": 128,
        "baseline_arms": [
            {"label": "linear_probe", "strategy": "linear_probe", "train_sizes": [32, 128, 512, None]},
            {"label": "finetune", "strategy": "finetune", "train_sizes": [32, 128]},
            {"label": "lora", "strategy": "lora", "train_sizes": [128]},
            {"label": "scratch", "strategy": "scratch", "train_sizes": [128]},
        ],
        # TIES costs 3x task arithmetic on CPU (a top-k over every weight); the full profile runs it.
        "fusion_arms": [arm for arm in FUSION_ARMS if arm["label"] != "merge ties"],
        "multitask_knobs": {"source_train_size": 500, "batches_per_epoch": 16},
    },
    "full": {
        "encoder": "minilm", "seeds": [0, 1, 2, 3, 4], "max_length": 128, "cka_examples": 512,
        "train_knobs": {"epochs": 4, "batch_size": 32},
        "expert_knobs": {"expert_train_size": None, "expert_epochs": 2, "expert_seed": 0},
        "fusion_size": 512,
        "baseline_arms": [
            {"label": name, "strategy": name, "train_sizes": [32, 128, 512, None]}
            for name in ("linear_probe", "finetune", "lora", "scratch")
        ],
        "multitask_knobs": {"source_train_size": None},
    },
}

_STUDY_FIELDS = {f.name for f in fields(StudyConfig)} - {"target", "sources", "arms"}
_PROFILE_ONLY = {"fusion_size", "baseline_arms", "fusion_arms", "multitask_knobs"}


def profile_settings(profile: str, overrides: dict | None = None) -> dict:
    """The profile's settings with ``overrides`` on top (unknown keys are an error that lists the known ones)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    settings = copy.deepcopy(PROFILES[profile])
    settings.setdefault("fusion_arms", copy.deepcopy(FUSION_ARMS))
    for key, value in (overrides or {}).items():
        if key not in _STUDY_FIELDS | _PROFILE_ONLY:
            raise ConfigError(f"unknown study parameter {key!r}; known: {', '.join(sorted(_STUDY_FIELDS | _PROFILE_ONLY))}")
        settings[key] = value
    return settings


def study_config(profile: str, part: str, target: str, sources: list[str], workdir: str,
                 data_dir: str | None = None, overrides: dict | None = None) -> StudyConfig:
    """The study of one notebook: ``part`` is "baselines" (target only) or "fusion" (with the sources)."""
    settings = profile_settings(profile, overrides)
    if part == "baselines":
        arms = settings["baseline_arms"]
    elif part == "fusion":
        arms = copy.deepcopy(settings["fusion_arms"])
        for arm in arms:
            arm.setdefault("train_sizes", [settings["fusion_size"]])
            if arm["strategy"] == "multitask":
                arm["knobs"] = {**settings["multitask_knobs"], **arm.get("knobs", {})}
    else:
        raise ConfigError(f"part must be 'baselines' or 'fusion', got {part!r}")
    study = {key: value for key, value in settings.items() if key in _STUDY_FIELDS}
    return StudyConfig(target=target, sources=list(sources), arms=arms, workdir=workdir, data_dir=data_dir, **study)
