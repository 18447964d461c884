"""Named study sizes: ``smoke`` (CI, seconds), ``quick`` (a real report on 2 CPU cores), ``full`` (a GPU), and
``matrix`` (a transfer matrix over a pool of tasks on 2 CPU cores, see ``matrix_configs``).

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
from fusionkit.study.design import configurations
from fusionkit.study.runner import Arm, StudyConfig

# The parameters that StudyConfig takes as they are; the others (sizes, arms) are turned into its arms.
STUDY_CONFIG_FIELDS = {f.name for f in fields(StudyConfig)} - {"target", "sources", "arms", "workdir", "data_dir",
                                                               "train_sizes", "held_out_tasks"}

# Fusion arms shared by every profile; only their sizes and knobs change between profiles.
FUSION_ARMS = [
    {"system": "sequential", "strategy": "sequential", "per_source": True},
    # The fusion layer trains on cached features: many cheap epochs, unlike the fine-tuning families.
    {"system": "representation sum", "strategy": "representation", "leave_one_out": True,
     "knobs": {"mode": "sum", "layers": "last", "patience": 5}},
    {"system": "representation pooled-attention", "strategy": "representation", "leave_one_out": True,
     "knobs": {"mode": "attention", "layers": "all", "patience": 5}},
    {"system": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic"},
     "leave_one_out": True},
    {"system": "merge ties", "strategy": "merge", "knobs": {"method": "ties"}},
    {"system": "multitask", "strategy": "multitask"},
    {"system": "distill", "strategy": "distill"},
]

# The quick profile's search spaces: two configurations for every arm (tuning_budget 2), each grid whole.
# Fine-tuning families search the step size over 6 epochs (early stopping picks the epoch); frozen-encoder
# families search what their head has: C for the probe, the step for the fusion layer, the task-vector scale
# (0 included: the base encoder; 0.5, within the range Ilharco et al. 2023 find for several task vectors).
# A first quick report with three configurations per arm never chose lr 2e-5, C 10 or lr 3e-4 on validation.
QUICK_FINETUNE_SEARCH = {"lr": [5e-5, 1e-4], "epochs": [6]}
QUICK_SEARCH = {"finetune": QUICK_FINETUNE_SEARCH, "sequential": QUICK_FINETUNE_SEARCH,
                "multitask": QUICK_FINETUNE_SEARCH, "distill": QUICK_FINETUNE_SEARCH,
                "lora": {"lr": [1e-3, 2e-3], "epochs": [6]},
                "linear_probe": {"c": [0.1, 1.0]},
                "representation": {"lr": [1e-3, 3e-3], "epochs": [30]},
                "merge": {"scale": [0.0, 0.5], "c": [1.0]}}


def _quick_fusion_arm(arm: dict) -> dict:
    """A fusion arm as the quick profile runs it: its search space, the shuffled-label control for the first
    source only (the study's main hypothesis) and leave-one-source-out for one representation arm."""
    arm = {**arm, "search": QUICK_SEARCH[arm["strategy"]]}
    if arm.get("per_source"):
        arm["further_controls_for"] = 1
    if arm["system"] == "representation sum":
        arm["leave_one_out"] = False
    return arm


def _with_search(arms: list[dict], spaces: dict) -> list[dict]:
    return [{**arm, "search": spaces[arm["strategy"]]} for arm in arms]


PROFILES: dict[str, dict] = {
    "smoke": {
        "encoder": "tiny", "seeds": [0, 1], "max_length": 32, "tuning_budget": 2,
        "task_train_cap": 120, "validation_cap": 40, "test_cap": 80, "cka_examples": 32,
        "train_knobs": {"batch_size": 16},
        "expert_knobs": {"expert_train_size": 60, "expert_epochs": 1, "expert_validation_size": 40},
        "fusion_size": 60,
        "baseline_arms": [
            {"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [30, 60, None]},
            {"system": "finetune", "strategy": "finetune", "train_sizes": [30, 60]},
            {"system": "lora", "strategy": "lora", "train_sizes": [60]},
            {"system": "scratch", "strategy": "scratch", "train_sizes": [60]},
        ],
        # Small spaces keep the smoke study to seconds; two configurations each, as the budget says.
        "fusion_arms": _with_search(FUSION_ARMS, {**{name: {"lr": [1e-4, 3e-4], "epochs": [1]} for name in
                                                     ("sequential", "multitask", "distill")},
                                                  "representation": {"lr": [1e-3, 3e-3], "epochs": [3]},
                                                  "merge": {"scale": [0.0, 1.0], "c": [1.0]}}),
        "arm_knobs": {"multitask": {"source_train_size": 60, "batches_per_epoch": 4},
                      "distill": {"unlabelled_size": 30}},
    },
    "quick": {
        "encoder": "minilm", "seeds": [0, 1, 2, 3, 4], "max_length": 64, "tuning_budget": 2,
        "cka_examples": 128,
        "train_knobs": {"patience": 2, "batch_size": 16},
        # Experts early-stop on 256 examples of their source's validation split (speed; recorded in the spec).
        "expert_knobs": {"expert_train_size": 400, "expert_epochs": 2, "expert_validation_size": 256},
        "fusion_size": 128,
        "baseline_arms": _with_search([
            {"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [32, 128, 512, None]},
            {"system": "finetune", "strategy": "finetune", "train_sizes": [128]},
        ], QUICK_SEARCH),
        # What 2 CPU cores fit in 30 minutes with 5 seeds: TIES (a top-k over every weight), multitask and
        # distillation (several times fine-tuning's steps, and their controls) run in the full profile.
        "fusion_arms": [_quick_fusion_arm(arm) for arm in FUSION_ARMS
                        if arm["system"] not in ("merge ties", "multitask", "distill")],
        "arm_knobs": {"multitask": {"source_train_size": 500, "batches_per_epoch": 16},
                      "distill": {"unlabelled_size": 512}},
    },
    # A transfer matrix over a pool of tasks (``matrix_configs``): every task a target, every other one a source,
    # 3 seeds at n=128. Its compute goes to the pairs (20 sequential systems on 5 tasks), so every arm gets a
    # tuning budget of 1: the configuration below, the same for every target and none chosen on test data (the
    # fine-tuning step is the default; 6 epochs with early stopping, as quick searches; the merge scale 0.5, within
    # the range Ilharco et al. 2023 find for several task vectors). Validation and test are capped for speed.
    "matrix": {
        "encoder": "minilm", "seeds": [0, 1, 2], "max_length": 64, "tuning_budget": 1,
        # Forward passes are the cost on CPU: early stopping reads 100 validation examples an epoch, experts 128.
        "validation_cap": 100, "test_cap": 400, "cka_examples": 64,
        "train_knobs": {"patience": 2, "batch_size": 16},
        "expert_knobs": {"expert_train_size": 400, "expert_epochs": 2, "expert_validation_size": 128},
        "fusion_size": 128,
        "baseline_arms": [
            {"system": "linear_probe", "strategy": "linear_probe", "train_sizes": [128]},
            {"system": "finetune", "strategy": "finetune", "train_sizes": [128], "knobs": {"epochs": 6}},
        ],
        "fusion_arms": [
            {"system": "sequential", "strategy": "sequential", "per_source": True, "further_controls_for": 0,
             "knobs": {"epochs": 6}},
            {"system": "representation pooled-attention", "strategy": "representation",
             "knobs": {"mode": "attention", "layers": "all", "patience": 5}},
            {"system": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic",
                                                                             "scale": 0.5}},
        ],
    },
    "full": {
        "encoder": "minilm", "seeds": [0, 1, 2, 3, 4], "max_length": 128, "cka_examples": 512, "tuning_budget": 4,
        "train_knobs": {"batch_size": 32},
        "expert_knobs": {"expert_train_size": None, "expert_epochs": 3},
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
    search: dict[str, Annotated[list, pydantic.Field(min_length=1)]] | None = None
    controls: list[str] | None = None
    further_controls_for: Annotated[int, pydantic.Field(strict=True, ge=0)] | None = None
    leave_one_out: bool = False

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
    tuning_budget: PositiveInt = 1
    # The verdict rule: the seed-level test at alpha (Holm-adjusted) and a gain of at least min_effect points.
    alpha: Annotated[float, pydantic.Field(gt=0, lt=1)] = 0.05
    min_effect: Annotated[float, pydantic.Field(ge=0)] = 1.0


STUDY_PARAMETERS = tuple(StudyParameters.model_fields)


def _check(parameters: dict) -> dict:
    """The parameters with every default filled in, or a ConfigError naming each parameter that is not allowed,
    its value, and what is allowed."""
    try:
        validated = StudyParameters.model_validate(parameters).model_dump()
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
        extra = parameters.get("arm_knobs", {}).get(arm["system"], {})
        try:
            knobs_class.from_knobs({**given, **extra, **arm.get("knobs", {})})
        except ConfigError as error:
            raise ConfigError(f"arm {arm['system']!r} ({arm['strategy']}): {error}") from None
        roles = [control.role for control in STRATEGIES[arm["strategy"]].controls()]
        unknown = sorted(set(arm.get("controls") or []) - set(roles))
        if unknown:
            raise ConfigError(f"arm {arm['system']!r}: unknown control(s) {unknown}; {arm['strategy']} has "
                              f"{roles or 'none'}")
        configurations(Arm(**arm), parameters.get("tuning_budget", 1))  # a ConfigError when the space is too small
    return validated


def profile_parameters(profile: str, overrides: dict | None = None) -> dict:
    """The profile's parameters with ``overrides`` on top, every one checked (``StudyParameters``, the encoder's
    length limit, each arm's knobs) before any work: a ConfigError names the parameter, value and what is allowed."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    parameters = copy.deepcopy(PROFILES[profile])
    parameters.setdefault("fusion_arms", copy.deepcopy(FUSION_ARMS))
    parameters.update(copy.deepcopy(overrides or {}))
    return _check(parameters)


# What a transfer matrix runs on every target, at the profile's fusion size: the target-only baselines, sequential
# transfer from each source, and two families over all the sources (the systems a profile names so).
MATRIX_SYSTEMS = ("finetune", "linear_probe", "sequential", "representation pooled-attention", "merge task_arithmetic")


def matrix_configs(profile: str, pool: list[str], workdir: str, data_dir: str | None = None,
                   overrides: dict | None = None) -> list[StudyConfig]:
    """One study per task of ``pool``, with every other task of the pool as its sources: the profile's arms named
    in ``MATRIX_SYSTEMS`` at its fusion size, one work folder for all (each expert is trained once and serves
    every target), and no source holding a text of any pool task's validation or test split."""
    if len(pool) < 3 or len(set(pool)) < len(pool):
        raise ConfigError(f"a transfer matrix needs at least 3 distinct tasks (targets), got {pool}")
    parameters = profile_parameters(profile, overrides)
    arms = [arm for arm in [*parameters["baseline_arms"], *parameters["fusion_arms"]]
            if arm["system"] in MATRIX_SYSTEMS]
    missing = sorted(set(MATRIX_SYSTEMS) - {arm["system"] for arm in arms})
    if missing:
        raise ConfigError(f"profile {profile!r} has no arm for the matrix system(s) {missing}; a matrix runs "
                          f"{', '.join(MATRIX_SYSTEMS)}")
    extra_knobs = parameters.get("arm_knobs", {})
    for arm in arms:
        arm["train_sizes"] = [parameters["fusion_size"]]
        arm["knobs"] = {**extra_knobs.get(arm["system"], {}), **arm.get("knobs", {})}
    study = {key: value for key, value in parameters.items() if key in STUDY_CONFIG_FIELDS}
    return [StudyConfig(target=target, sources=[task for task in pool if task != target], arms=copy.deepcopy(arms),
                        workdir=workdir, data_dir=data_dir, held_out_tasks=list(pool), **study)
            for target in pool]


def study_config(profile: str, part: str, target: str, sources: list[str], workdir: str,
                 data_dir: str | None = None, overrides: dict | None = None) -> StudyConfig:
    """The study of one notebook: ``part`` is "baselines" (target only) or "fusion" (with the sources)."""
    parameters = profile_parameters(profile, overrides)
    if part == "baselines":
        arms = copy.deepcopy(parameters["baseline_arms"])
    elif part == "fusion":
        arms = copy.deepcopy(parameters["fusion_arms"])
        for arm in arms:
            if arm.get("train_sizes") is None:
                arm["train_sizes"] = [parameters["fusion_size"]]
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
