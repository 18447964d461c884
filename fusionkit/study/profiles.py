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
import importlib.resources
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Union

import pydantic

from fusionkit._io import listed, read_yaml, shown
from fusionkit.errors import ConfigError, FusionkitWarning
from fusionkit.modeling.encoders import encoder_max_length
from fusionkit.strategies import STRATEGIES
from fusionkit.study.design import configurations
from fusionkit.study.runner import Arm, StudyConfig
from fusionkit.study.sources import task_file, task_name

# The parameters that StudyConfig takes as they are; the others (sizes, arms) are turned into its arms.
STUDY_CONFIG_FIELDS = {f.name for f in fields(StudyConfig)} - {"target", "sources", "arms", "workdir", "data_dir",
                                                               "train_sizes", "held_out_tasks", "task_files",
                                                               "seed_design"}

PROFILE_FOLDER = Path(str(importlib.resources.files("fusionkit"))) / "profiles"


def _load_profiles() -> dict[str, dict]:
    """The built-in profiles: the study files (without target and sources) in fusionkit/profiles/, shipped with the
    package so a user can copy one (``fusionkit.study.study_file`` reads a study file)."""
    return {path.stem: read_yaml(path, "profile") for path in sorted(PROFILE_FOLDER.glob("*.yaml"), key=_profile_order)}


def _profile_order(path: Path) -> int:
    order = ["smoke", "quick", "matrix", "full"]  # from seconds to a GPU; any other file after them
    return order.index(path.stem) if path.stem in order else len(order)


PROFILES: dict[str, dict] = _load_profiles()
NO_PROFILE = ""  # a study file that extends no profile: it gives every parameter itself

PositiveInt = Annotated[int, pydantic.Field(strict=True, gt=0)]
SEED_LIMIT = 2**32 - 1  # numpy's and scikit-learn's random_state take seeds up to this
Seed = Annotated[int, pydantic.Field(strict=True, ge=0, le=SEED_LIMIT)]
MIN_MAX_LENGTH = 8  # tokens: [CLS], [SEP] and a few words; below it every text is cut to nothing


class SeedStages(pydantic.BaseModel):
    """Seeds in stages (a group-sequential design, ``evaluation.sequential``): every system runs seeds 0..first-1,
    then at each of ``looks`` looks the systems still undecided get more, up to ``max``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    first: Annotated[int, pydantic.Field(strict=True, ge=2)]
    max: Annotated[int, pydantic.Field(strict=True, ge=2, le=1000)]
    looks: Annotated[int, pydantic.Field(strict=True, ge=1, le=20)]

    @pydantic.model_validator(mode="after")
    def _fits(self):
        if self.first > self.max:
            raise ValueError(f"first ({self.first}) must be at most max ({self.max})")
        if self.looks > 1 and self.max - self.first < self.looks - 1:
            raise ValueError(f"{self.looks} looks need at least {self.looks - 1} seeds between first and max")
        return self


# A list of seeds or their stages, told apart by type, so an error names only the form that was given.
SEED_FORMS = ("seed list", "seed stages")
SeedsParameter = Annotated[
    Union[Annotated[Annotated[list[Seed], pydantic.Field(min_length=1)], pydantic.Tag(SEED_FORMS[0])],
          Annotated[SeedStages, pydantic.Tag(SEED_FORMS[1])]],
    pydantic.Discriminator(lambda value: SEED_FORMS[1] if isinstance(value, (dict, SeedStages)) else SEED_FORMS[0])]


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
    seeds: SeedsParameter
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
    threads: PositiveInt = 1  # torch CPU threads of every run, whichever executor carries it (StudyConfig.threads)
    # The first k seeds crossed with k data seeds for every fusion system and its matched control: how much of a
    # gain's spread comes from the training examples drawn (StudyConfig.variance_split); None: not run.
    variance_split: Annotated[int, pydantic.Field(strict=True, ge=2)] | None = None
    # Source training and test examples (each) on which every run with an encoder of its own, and every source
    # expert, is probed for the source's skill: what fusion kept of it (StudyConfig.retention_examples); None: not.
    retention_examples: PositiveInt | None = None
    # The verdict rule: intervals simultaneous at 1 - alpha over the primary comparisons, and a gain of at least
    # min_effect points (helps/hurts) or an interval inside +/- min_effect (equivalent).
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
            where = ".".join(str(part) for part in item["loc"] if part not in SEED_FORMS)
            if item["type"] == "extra_forbidden":
                problems.append(f"unknown study parameter {where!r}; known: {', '.join(sorted(STUDY_PARAMETERS))}")
            else:
                message = item["msg"].replace("Value error, ", "")
                problems.append(f"parameter {where}: {message}, got {shown(item['input'])}")
        raise ConfigError(listed(problems)) from None
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
    split, seeds = validated.get("variance_split"), validated["seeds"]
    first = seeds["first"] if isinstance(seeds, dict) else len(seeds)
    if split is not None and split > first:
        raise ConfigError(f"parameter variance_split: {split} seeds crossed with {split} data seeds need at least "
                          f"{split} seeds in the study's first look, which has {first}")
    cap = validated["task_train_cap"]
    if cap is not None and validated["fusion_size"] > cap:
        # The study fits a size beyond the training split on the whole split: the report must look for that size.
        warnings.warn(f"parameter fusion_size {validated['fusion_size']} is larger than task_train_cap {cap}: the "
                      f"fusion runs use the whole capped training split, n={cap}", FusionkitWarning, stacklevel=3)
        validated["fusion_size"] = cap
    return validated


def profile_parameters(profile: str, overrides: dict | None = None) -> dict:
    """The profile's parameters (none for ``NO_PROFILE``) with ``overrides`` on top, every one checked (``StudyParameters``, the encoder's
    length limit, each arm's knobs) before any work: a ConfigError names the parameter, value and what is allowed."""
    if profile != NO_PROFILE and profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    parameters = copy.deepcopy(PROFILES.get(profile, {}))
    parameters.update(copy.deepcopy(overrides or {}))
    return _check(parameters)


# What a transfer matrix runs on every target, at the profile's fusion size: the target-only baselines, sequential
# transfer from each source, and two families over all the sources (the systems a profile names so).
MATRIX_SYSTEMS = ("finetune", "linear_probe", "sequential", "representation pooled-attention", "merge task_arithmetic")


def matrix_configs(profile: str, pool: list[str], workdir: str, data_dir: str | None = None,
                   overrides: dict | None = None, knowledge: list | None = None) -> list[StudyConfig]:
    """One study per task of ``pool``, with every other task of the pool as its sources: the profile's arms named
    in ``MATRIX_SYSTEMS`` at its fusion size, one work folder for all (each expert is trained once and serves
    every target), and no source holding a text of any pool task's validation or test split. ``knowledge``:
    further sources of every target beside the pool (models, adapters, knowledge features: ``study.sources``)."""
    if len(pool) < 3 or len({task_name(entry) for entry in pool}) < len(pool):
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
    # A pool task may be a file: every study knows every pool file by name, since each holds out all of them.
    files = {file.task_name: file.model_dump() for file in map(task_file, pool) if file is not None}
    names = [task_name(entry) for entry in pool]
    return [StudyConfig(target=target, sources=[*(entry for entry in pool if entry is not target), *(knowledge or [])],
                        arms=copy.deepcopy(arms), workdir=workdir, data_dir=data_dir, held_out_tasks=names,
                        task_files=files, **study)
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
