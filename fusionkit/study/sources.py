"""What a study's target and sources are, as a user writes them, checked before any work.

A task is a registered name (``cr``), a path to a file (``data/my.csv``, columns ``text`` and ``label``), or
``{"path": ..., "text_column": ..., "label_column": ..., "name": ...}``. A source is a task, or one of::

    {"model": "path/or/hub-id", "name": ...}      a fine-tuned transformers model, used frozen as it is
    {"adapter": "path/to/lora", "name": ...}      a peft LoRA adapter on the study's encoder
    {"features": ["col", ...], "name": ...}       knowledge features: columns of the target's own file

(``fusionkit.strategies.knowledge`` says how each is fused.) Every entry is validated by pydantic; an error names
the entry, the field, the value and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

import pydantic

from fusionkit.data.tasks import TASKS, Task, load_task, load_task_from_files
from fusionkit._io import listed, shown
from fusionkit.errors import ConfigError
from fusionkit.strategies.knowledge import KnowledgeFeatures, LoraAdapter, PretrainedModel

Name = Annotated[str, pydantic.Field(min_length=1, pattern=r"^[^,/\\]+$")]  # shown in tables and system names


class TaskFile(pydantic.BaseModel):
    """A task from the user's own file(s): CSV, TSV, JSONL or parquet (validation and test carved when absent)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    path: Annotated[str, pydantic.Field(min_length=1)]
    text_column: str = "text"
    label_column: str = "label"
    name: Name | None = None
    validation: str | None = None
    test: str | None = None

    @property
    def task_name(self) -> str:
        return self.name or Path(self.path).stem


class ModelSource(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    model: Annotated[str, pydantic.Field(min_length=1)]
    name: Name | None = None


class AdapterSource(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    adapter: Annotated[str, pydantic.Field(min_length=1)]
    name: Name | None = None


class FeatureSource(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    features: Union[str, Annotated[list[Annotated[str, pydantic.Field(min_length=1)]], pydantic.Field(min_length=1)]]
    name: Name | None = None

    @property
    def columns(self) -> list[str]:
        return [self.features] if isinstance(self.features, str) else list(self.features)


TaskEntry = Union[Annotated[str, pydantic.Field(min_length=1)], TaskFile]
SourceEntry = Union[Annotated[str, pydantic.Field(min_length=1)], TaskFile, ModelSource, AdapterSource, FeatureSource]


def _validated(adapter: pydantic.TypeAdapter, value, what: str):
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as error:
        problems = listed([f"{'.'.join(str(p) for p in item['loc']) or 'value'}: {item['msg']}"
                           for item in error.errors(include_url=False)])
        raise ConfigError(f"{what} {shown(value)} is not allowed ({problems}). A task is a name ({', '.join(TASKS)}), "
                          f"a file path, or {{path, text_column, label_column, name}}; a source is a task or "
                          f"{{model: ...}}, {{adapter: ...}} or {{features: [columns]}}, each with an optional name") \
            from None


_TASK = pydantic.TypeAdapter(TaskEntry)
_SOURCE = pydantic.TypeAdapter(SourceEntry)
_NAME = pydantic.TypeAdapter(Name)


def task_file(entry) -> TaskFile | None:
    """The file a task entry names (None for a task by name)."""
    entry = _validated(_TASK, entry, "task")
    if isinstance(entry, TaskFile):
        return entry
    if entry.lower() not in TASKS and Path(entry).suffix:
        return TaskFile(path=entry)
    return None


def task_name(entry) -> str:
    file = task_file(entry)
    return (entry.lower() if entry.lower() in TASKS else entry) if file is None else file.task_name


def check_known(entry) -> None:
    """A ConfigError for a task named neither a registered task nor a file, or naming a file that is not there."""
    file = task_file(entry)
    if file is None and entry.lower() not in TASKS:
        raise ConfigError(f"unknown task {entry!r}; known tasks: {', '.join(sorted(TASKS))} (or a path to a "
                          f".csv/.tsv/.jsonl/.parquet file)")
    for role, path in (("file", file and file.path), ("validation file", file and file.validation),
                       ("test file", file and file.test)):
        if path and not Path(path).is_file():
            raise ConfigError(f"task {task_name(entry)!r}: {role} '{path}' not found (from '{Path.cwd()}')")


def check_given_sources(sources: list, encoder: str, strategies: dict[str, type]) -> None:
    """Every model and adapter source's files, before any work: a local folder holds a readable config and
    safetensors weights (``PretrainedModel.check``, ``LoraAdapter.check``), and a model fused by a strategy that
    puts its weights in the study encoder's place (``same_architecture``: ``strategies``, system -> strategy
    class) has that encoder's architecture. A ConfigError names the source and what is wrong."""
    from fusionkit.modeling.encoders import architecture, encoder_config

    needing = sorted(system for system, strategy in strategies.items() if strategy.same_architecture)
    for entry in sources:
        if is_task(entry):
            continue
        source = knowledge_source(entry)
        if not isinstance(source, (PretrainedModel, LoraAdapter)):
            continue
        theirs = source.check()
        if theirs is None or not needing:
            continue
        ours = architecture(encoder_config(encoder))
        differ = {name: (theirs[name], ours[name]) for name in ours if theirs[name] != ours[name]}
        if differ:
            shown_differences = ", ".join(f"{name} {a!r} (the encoder's {b!r})" for name, (a, b) in differ.items())
            raise ConfigError(f"source {source.name!r} ('{source.path}') has another architecture than the study "
                              f"encoder {encoder!r}: {shown_differences}; the arms {needing} put its weights in the "
                              f"encoder's place and need the same one. Representation fusion takes any architecture")


def parse_source(entry):
    """The validated source entry (a task name or TaskFile, ModelSource, AdapterSource, FeatureSource)."""
    return _validated(_SOURCE, entry, "source")


def source_name(entry) -> str:
    parsed = parse_source(entry)
    if isinstance(parsed, (str, TaskFile)):
        return task_name(parsed)
    if parsed.name:
        return parsed.name
    if isinstance(parsed, FeatureSource):
        if len(parsed.columns) > 1:
            raise ConfigError(f"knowledge features from several columns {parsed.columns} need a name: "
                              f"{{features: [...], name: ...}}")
        return _validated(_NAME, parsed.columns[0], "the name of knowledge features (their column; give another "
                                                     "with {features: ..., name: ...})")
    return Path(str(getattr(parsed, "model", None) or parsed.adapter).rstrip("/")).name


def check_sources(target, sources: list, known: bool = False) -> list[str]:
    """The sources' names, each entry checked (``known``: tasks too, by name); two sources with one name, or the
    target among its own sources, is a ConfigError."""
    if known:
        for entry in [target, *(s for s in sources if is_task(s))]:
            check_known(parse_source(entry))
    names = [source_name(entry) for entry in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"two sources are named {repeated}: give each a distinct name")
    target = task_name(target)
    if target in names:
        raise ConfigError(f"the target {target!r} is also among the sources {names}: a task cannot transfer to itself")
    return names


def knowledge_columns(sources: list) -> dict[str, list[str]]:
    """Knowledge feature source name -> the target's columns it reads."""
    return {source_name(entry): parse_source(entry).columns for entry in sources
            if isinstance(parse_source(entry), FeatureSource)}


def load_entry_task(entry, data_dir: str | None = None, knowledge: dict[str, list[str]] | None = None) -> Task:
    """A task entry's task: a registered task, or a user file (with ``knowledge`` columns read from it)."""
    file = task_file(entry)
    if file is None:
        if knowledge:
            raise ConfigError(f"knowledge features {sorted(knowledge)} are columns of the target's own file, but "
                              f"the target {entry!r} is a registered task without such columns: give the target as "
                              f"a file ({{path: ..., text_column: ..., label_column: ...}})")
        return load_task(entry, data_dir=data_dir)
    return load_task_from_files(file.path, file.validation, file.test, file.text_column, file.label_column,
                                name=file.task_name, knowledge_columns=knowledge or None)


def knowledge_source(entry):
    """A source entry that is not a task, as the strategies take it: a PretrainedModel, LoraAdapter or
    KnowledgeFeatures (a task is loaded with ``load_entry_task``)."""
    parsed, name = parse_source(entry), source_name(entry)
    if isinstance(parsed, ModelSource):
        return PretrainedModel(name, parsed.model)
    if isinstance(parsed, AdapterSource):
        return LoraAdapter(name, parsed.adapter)
    if isinstance(parsed, FeatureSource):
        return KnowledgeFeatures(name, tuple(parsed.columns))
    raise ConfigError(f"source {name!r} is a task: load it with load_entry_task")


def is_task(entry) -> bool:
    return isinstance(parse_source(entry), (str, TaskFile))


def entry_kind(entry) -> str:
    """task, model, adapter or features (``strategies.knowledge.SOURCE_KINDS``), read from the entry alone."""
    return "task" if is_task(entry) else knowledge_source(entry).kind
