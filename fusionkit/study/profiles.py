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
from typing import Annotated

import pydantic

from fusionkit.errors import ConfigError
from fusionkit.modeling.encoders import encoder_max_length
from fusionkit.strategies import STRATEGIES
from fusionkit.study.runner import StudyConfig

# The parameters that StudyConfig takes as they are; the others (sizes, arms) are turned into its arms.
STUDY_CONFIG_FIELDS = {f.name for f in fields(StudyConfig)} - {"target", "sources", "arms", "workdir", "data_dir",
                                                               "train_sizes"}

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

PositiveInt = Annotated[int, pydantic.Field(strict=True, gt=0)]
Seed = Annotated[int, pydantic.Field(strict=True, ge=0)]
MIN_MAX_LENGTH = 8  # tokens: [CLS], [SEP] and a few words; below it every text is cut to nothing


class ArmParameters(pydantic.BaseModel):
    """One arm as a profile writes it (see ``runner.Arm``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    system: Annotated[str, pydantic.Field(min_length=1)]
    strategy: str
    knobs: dict = {}
    per_source: bool = False
    train_sizes: Annotated[list[PositiveInt | None], pydantic.Field(min_length=1)] | None = None

    @pydantic.field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
        return name


class StudyParameters(pydantic.BaseModel):
    """Every parameter a profile sets and ``-p key=value`` may override, with what is allowed."""

    model_config = pydantic.ConfigDict(extra="forbid")
    encoder: Annotated[str, pydantic.Field(min_length=1)]
    seeds: Annotated[list[Seed], pydantic.Field(min_length=1)]
    max_length: Annotated[int, pydantic.Field(strict=True, ge=MIN_MAX_LENGTH)]
    task_train_cap: PositiveInt | None = None
    validation_cap: PositiveInt | None = None
    test_cap: PositiveInt | None = None
    cka_examples: PositiveInt = 256
    train_knobs: dict = {}
    expert_knobs: dict = {}
    fusion_size: PositiveInt
    baseline_arms: list[ArmParameters]
    fusion_arms: list[ArmParameters]
    arm_knobs: dict[str, dict] = {}


STUDY_PARAMETERS = tuple(StudyParameters.model_fields)


def _check(parameters: dict) -> None:
    """ConfigError naming each parameter that is not allowed, its value, and what is allowed."""
    try:
        StudyParameters.model_validate(parameters)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                problems.append(f"unknown study parameter {where!r}; known: {', '.join(sorted(STUDY_PARAMETERS))}")
            else:
                problems.append(f"parameter {where}: {item['msg'].replace('Value error, ', '')}, got {item['input']!r}")
        raise ConfigError("; ".join(problems)) from None
    limit = encoder_max_length(parameters["encoder"])
    if parameters["max_length"] > limit:
        raise ConfigError(f"parameter max_length: encoder {parameters['encoder']!r} reads at most {limit} tokens, "
                          f"got {parameters['max_length']}")
    for arm in [*parameters["baseline_arms"], *parameters["fusion_arms"]]:
        knobs_class = STRATEGIES[arm["strategy"]].Knobs
        shared = {**parameters["train_knobs"], **parameters["expert_knobs"]}
        given = {k: v for k, v in shared.items() if k in knobs_class.knob_names()}
        extra = parameters["arm_knobs"].get(arm["system"], {})
        try:
            knobs_class.from_knobs({**given, **extra, **arm.get("knobs", {})})
        except ConfigError as error:
            raise ConfigError(f"arm {arm['system']!r} ({arm['strategy']}): {error}") from None


def profile_parameters(profile: str, overrides: dict | None = None) -> dict:
    """The profile's parameters with ``overrides`` on top, every one checked (``StudyParameters``, the encoder's
    length limit, each arm's knobs) before any work: a ConfigError names the parameter, value and what is allowed."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    parameters = copy.deepcopy(PROFILES[profile])
    parameters.setdefault("fusion_arms", copy.deepcopy(FUSION_ARMS))
    parameters.update(copy.deepcopy(overrides or {}))
    _check(parameters)
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
    study = {key: value for key, value in parameters.items() if key in STUDY_CONFIG_FIELDS}
    return StudyConfig(target=target, sources=list(sources), arms=arms, workdir=workdir, data_dir=data_dir, **study)
