"""Named study sizes: ``smoke`` (CI, seconds), ``quick`` (a real report on 2 CPU cores), ``full`` (a GPU).

A profile fixes the encoder, seeds, train sizes, caps and the arms of the baseline and fusion notebooks
(``arm_knobs`` adds knobs to the arms it names by system);
``study_config`` turns one into a :class:`~fusionkit.study.StudyConfig` for a target and its sources, and
any field can be overridden (``fusionkit report -p seeds=[0,1]``). A train size of ``None`` means the
target's whole training split.
"""
from __future__ import annotations

import copy
from dataclasses import fields

from fusionkit.errors import ConfigError
from fusionkit.study.runner import StudyConfig

# Fusion arms shared by every profile; only their sizes and knobs change between profiles.
FUSION_ARMS = [
    {"system": "sequential", "strategy": "sequential", "per_source": True},
    # The fusion layer trains on cached features: many cheap epochs, unlike the profiles' fine-tuning epochs.
    {"system": "representation sum", "strategy": "representation",
     "knobs": {"mode": "sum", "layers": "last", "epochs": 30, "patience": 5}},
    {"system": "representation attention", "strategy": "representation",
     "knobs": {"mode": "attention", "layers": "all", "epochs": 30, "patience": 5}},
    {"system": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic"}},
    {"system": "merge ties", "strategy": "merge", "knobs": {"method": "ties"}},
    {"system": "multitask", "strategy": "multitask"},
    {"system": "distill", "strategy": "distill"},
]

PROFILES: dict[str, dict] = {
    "smoke": {
        "encoder": "tiny", "seeds": [0, 1], "max_length": 32,
        "task_train_cap": 120, "validation_cap": 40, "test_cap": 80, "cka_examples": 32,
        "train_knobs": {"epochs": 2, "batch_size": 16},
        "expert_knobs": {"expert_train_size": 60, "expert_epochs": 1, "expert_seed": 0},
        "fusion_size": 60,
        "baseline_arms": [
            {"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [30, 60, None]},
            {"system": "finetune", "strategy": "finetune", "train_sizes": [30, 60]},
            {"system": "lora", "strategy": "lora", "train_sizes": [60]},
            {"system": "scratch", "strategy": "scratch", "train_sizes": [60]},
        ],
        "arm_knobs": {"multitask": {"source_train_size": 60, "batches_per_epoch": 4}},
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
            {"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [32, 128, 512, None]},
            {"system": "finetune", "strategy": "finetune", "train_sizes": [32, 128]},
            {"system": "lora", "strategy": "lora", "train_sizes": [128]},
            {"system": "scratch", "strategy": "scratch", "train_sizes": [128]},
        ],
        # TIES costs 3x task arithmetic on CPU (a top-k over every weight); the full profile runs it.
        "fusion_arms": [arm for arm in FUSION_ARMS if arm["system"] != "merge ties"],
        "arm_knobs": {"multitask": {"source_train_size": 500, "batches_per_epoch": 16}},
    },
    "full": {
        "encoder": "minilm", "seeds": [0, 1, 2, 3, 4], "max_length": 128, "cka_examples": 512,
        "train_knobs": {"epochs": 4, "batch_size": 32},
        "expert_knobs": {"expert_train_size": None, "expert_epochs": 2, "expert_seed": 0},
        "fusion_size": 512,
        "baseline_arms": [
            {"system": name, "strategy": name, "train_sizes": [32, 128, 512, None]}
            for name in ("linear_probe", "finetune", "lora", "scratch")
        ],
        "arm_knobs": {"multitask": {"source_train_size": None}},
    },
}

_STUDY_FIELDS = {f.name for f in fields(StudyConfig)} - {"target", "sources", "arms"}
_PROFILE_ONLY = {"fusion_size", "baseline_arms", "fusion_arms", "arm_knobs"}


def profile_parameters(profile: str, overrides: dict | None = None) -> dict:
    """The profile's parameters with ``overrides`` on top (unknown keys are an error that lists the known ones)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    parameters = copy.deepcopy(PROFILES[profile])
    parameters.setdefault("fusion_arms", copy.deepcopy(FUSION_ARMS))
    for key, value in (overrides or {}).items():
        if key not in _STUDY_FIELDS | _PROFILE_ONLY:
            raise ConfigError(f"unknown study parameter {key!r}; known: {', '.join(sorted(_STUDY_FIELDS | _PROFILE_ONLY))}")
        parameters[key] = value
    return parameters


def study_config(profile: str, part: str, target: str, sources: list[str], workdir: str,
                 data_dir: str | None = None, overrides: dict | None = None) -> StudyConfig:
    """The study of one notebook: ``part`` is "baselines" (target only) or "fusion" (with the sources)."""
    parameters = profile_parameters(profile, overrides)
    if part == "baselines":
        arms = copy.deepcopy(parameters["baseline_arms"])
    elif part == "fusion":
        arms = copy.deepcopy(parameters["fusion_arms"])
        for arm in arms:
            arm.setdefault("train_sizes", [parameters["fusion_size"]])
    else:
        raise ConfigError(f"part must be 'baselines' or 'fusion', got {part!r}")
    extra_knobs = parameters.get("arm_knobs", {})
    systems = {arm["system"] for arm in [*parameters["baseline_arms"], *parameters["fusion_arms"]]}
    unknown = sorted(set(extra_knobs) - systems)
    if unknown and "arm_knobs" in (overrides or {}):  # a profile's own arm_knobs may outlive an arm a user dropped
        raise ConfigError(f"arm_knobs names system(s) {unknown} that the profile does not run; its systems: "
                          f"{', '.join(sorted(systems))}")
    for arm in arms:
        arm["knobs"] = {**extra_knobs.get(arm["system"], {}), **arm.get("knobs", {})}
    study = {key: value for key, value in parameters.items() if key in _STUDY_FIELDS}
    return StudyConfig(target=target, sources=list(sources), arms=arms, workdir=workdir, data_dir=data_dir, **study)
