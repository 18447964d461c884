"""A whole study in one YAML file: ``fusionkit report --study my_study.yaml --out reports/mine``.

The file names the target (or ``targets``, a transfer matrix), the sources (``fusionkit.study.sources``: tasks,
models, adapters, knowledge features), the executor, and any study parameter (``StudyParameters``: encoder, arms,
seeds, sizes, caps...). ``extends: quick`` starts from a built-in profile, themselves such files without a target
(``fusionkit/profiles/*.yaml``); without it, the file gives every parameter. Everything is validated (pydantic)
before any work, and an error names the file, the field, the value and what is allowed.
``fusionkit study-template`` prints a commented example (``TEMPLATE``).
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from fusionkit._io import listed, read_yaml, shown
from fusionkit.errors import ConfigError
from fusionkit.study.profiles import NO_PROFILE, PROFILES, STUDY_PARAMETERS, profile_parameters
from fusionkit.study.sources import check_sources

TEMPLATE = Path(str(importlib.resources.files("fusionkit"))) / "study_template.yaml"


class ExecutorSettings(pydantic.BaseModel):
    """How the runs are carried out (``fusionkit.study.executors.make_executor``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    kind: Literal["local", "ray"] = "local"
    workers: Annotated[int, pydantic.Field(gt=0)] | None = None
    address: str | None = None
    gpu_fraction: Annotated[float, pydantic.Field(gt=0, le=1)] | None = None  # None: RayExecutor's default

    @pydantic.model_validator(mode="after")
    def _options_of_its_kind(self):
        given = sorted(name for name in ("workers", "address", "gpu_fraction") if getattr(self, name) is not None)
        if self.kind == "local" and given:
            raise ValueError(f"the local executor takes no options (workers, address and gpu_fraction are ray's), "
                             f"got {given}")
        return self


class StudyFile(pydantic.BaseModel):
    """The fields of a study file besides the study parameters (which ``profile_parameters`` checks)."""

    model_config = pydantic.ConfigDict(extra="allow")
    extends: str | None = None
    target: object = None
    targets: Annotated[list, pydantic.Field(min_length=3)] | None = None
    sources: list | None = None
    executor: ExecutorSettings | None = None
    workdir: str | None = None
    data_dir: str | None = None


def load_study_file(path: str | Path) -> dict:
    """The study a file describes, checked: ``profile`` (what it extends, "" for none), ``overrides`` (its study
    parameters), ``target``, ``targets``, ``sources``, ``executor`` (make_executor's options), ``workdir`` and
    ``data_dir`` (None where the file does not say)."""
    where = f"study file '{path}'"
    data = read_yaml(path, "study file")
    try:
        study = StudyFile.model_validate(data)
    except pydantic.ValidationError as error:
        problems = listed([f"field {'.'.join(str(p) for p in item['loc'])}: {item['msg']}, got {shown(item['input'])}"
                           for item in error.errors(include_url=False)])
        raise ConfigError(f"{where}: {problems}") from None
    overrides = dict(study.model_extra or {})
    unknown = sorted(set(overrides) - set(STUDY_PARAMETERS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; a study file has extends, target, targets, sources, "
                          f"executor, workdir, data_dir and the study parameters {', '.join(STUDY_PARAMETERS)}")
    if study.extends is not None and study.extends not in PROFILES:
        raise ConfigError(f"{where}: field extends: unknown profile {study.extends!r}; built-in profiles: "
                          f"{', '.join(PROFILES)}")
    if study.target is not None and study.targets is not None:
        raise ConfigError(f"{where}: give either target (one study) or targets (a transfer matrix), not both")
    profile = study.extends or NO_PROFILE
    try:
        profile_parameters(profile, overrides)
        for target in study.targets or ([study.target] if study.target is not None else []):
            check_sources(target, study.sources or [], known=True)  # in a matrix: knowledge beside the pool
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    executor = study.executor.model_dump(exclude_none=True) if study.executor else None
    return {"profile": profile, "overrides": overrides, "target": study.target, "targets": study.targets,
            "sources": study.sources, "executor": executor, "workdir": study.workdir, "data_dir": study.data_dir}
