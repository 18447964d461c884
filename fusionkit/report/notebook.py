"""What every notebook of one report shares: its parameters, where outputs go, and the one-call setup."""
from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fusionkit._io import atomic_write
from fusionkit.data import Task, tasks_present
from fusionkit.errors import ConfigError
from fusionkit.report.plots import save_figure
from fusionkit.study.profiles import matrix_configs, profile_parameters, study_config
from fusionkit.study.executors import make_executor, run_studies, run_study
from fusionkit.study.runner import load_study_tasks
from fusionkit.study.sources import (check_given_sources, check_sources, is_task, knowledge_columns, load_entry_task,
                                     source_name,
                                     task_name)
from fusionkit.study.progress import forward_warnings
from fusionkit.study.store import ResultsStore
from fusionkit.strategies import STRATEGIES

DEFAULT_PROFILE = "quick"


def notebooks_dir() -> Path:
    """The numbered notebooks shipped with the package (``fusionkit.notebooks``, the repository's notebooks/)."""
    return Path(str(importlib.resources.files("fusionkit.notebooks")))


def _default_root() -> Path:
    # A notebook opened in Jupyter runs inside the notebooks folder: keep its runs beside that folder, where
    # `fusionkit report` started from the repository keeps them too, not among the notebooks.
    cwd = Path.cwd()
    return cwd.parent if cwd.resolve() == notebooks_dir().resolve() else cwd


@dataclass
class NotebookRun:
    """What every notebook of one report shares: the study parameters and where outputs go."""

    profile: str
    target: str | dict  # a task name, a file path, or {path, text_column, label_column, name}
    sources: list  # tasks, or other knowledge ({model: ...}, {adapter: ...}, {features: [...]})
    workdir: Path
    out_dir: Path
    data_dir: str | None = None
    overrides: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: {"kind": "local"})  # make_executor's arguments

    @property
    def parameters(self) -> dict:
        return profile_parameters(self.profile, self.overrides)

    @property
    def target_name(self) -> str:
        return task_name(self.target)

    @property
    def source_names(self) -> list[str]:
        return [source_name(entry) for entry in self.sources]

    def tasks(self) -> list:
        """The target and every source task as loaded (whole: no caps), for a first look at the data."""
        knowledge = knowledge_columns(self.sources)
        return [load_entry_task(self.target, self.data_dir, knowledge),
                *(load_entry_task(entry, self.data_dir) for entry in self.sources if is_task(entry))]

    def study_tasks(self) -> list:
        """The target and the source tasks as the study uses them (capped; sources without the target's
        evaluation texts)."""
        target, sources = load_study_tasks(self.study("fusion"))
        return [target, *(source for source in sources if isinstance(source, Task))]

    def run_study(self, part: str, progress: bool = True):
        """The results of one part of the study ("baselines" or "fusion"), run on this report's executor."""
        return run_study(self.study(part), progress=progress, executor=make_executor(**self.executor))

    def study(self, part: str):
        return study_config(self.profile, part, self.target, self.sources, str(self.workdir), self.data_dir,
                            self.overrides)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.workdir / "results")

    def save(self, figure, name: str, caption: str):
        return save_captioned(self.out_dir, figure, name, caption)

    def write_table(self, frame, name: str) -> Path:
        return write_table(self.out_dir, frame, name)


def save_captioned(out_dir: Path, figure, name: str, caption: str):
    """Save a figure as PNG and SVG under out_dir/figures, note its caption, and return it for display."""
    folder = out_dir / "figures"
    save_figure(figure, folder, name)
    manifest_path = folder / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[name] = caption
    atomic_write(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return figure


def write_table(out_dir: Path, frame, name: str) -> Path:
    """``frame`` as out_dir/<name>.csv (without the index)."""
    path = out_dir / f"{name}.csv"
    atomic_write(path, frame.to_csv(index=False))
    return path


@dataclass
class MatrixRun:
    """What the matrix notebook of one report works with: the pool (every task a target, every other task its
    source), the study parameters, and where outputs go (``fusionkit.study.matrix_configs``)."""

    profile: str
    targets: list[str]
    workdir: Path
    out_dir: Path
    data_dir: str | None = None
    overrides: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: {"kind": "local"})
    sources: list = field(default_factory=list)  # knowledge beside the pool, a source of every target

    @property
    def parameters(self) -> dict:
        return profile_parameters(self.profile, self.overrides)

    @property
    def target_names(self) -> list[str]:
        return [task_name(entry) for entry in self.targets]

    def configs(self):
        """One study per target, in the pool's order."""
        return matrix_configs(self.profile, self.targets, str(self.workdir), self.data_dir, self.overrides,
                              self.sources)

    def run_studies(self, progress: bool = True):
        """Every target's study, run together on this report's executor (see ``run_studies``)."""
        return run_studies(self.configs(), progress=progress, executor=make_executor(**self.executor))

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.workdir / "results")

    def save(self, figure, name: str, caption: str):
        return save_captioned(self.out_dir, figure, name, caption)

    def write_table(self, frame, name: str) -> Path:
        return write_table(self.out_dir, frame, name)


def notebook_run(profile: str | None = None, target: str = "cr", sources=("mr", "subj", "trec"),
                 workdir: str | None = None, out_dir: str | None = None, data_dir: str | None = None,
                 overrides: dict | None = None, executor: dict | None = None) -> NotebookRun:
    """Resolve a notebook's parameters; None falls back to FUSIONKIT_PROFILE / FUSIONKIT_WORKDIR / FUSIONKIT_OUT
    (so nbval can pick the smoke profile) and then to the defaults."""
    profile = _profile(profile)
    parameters = profile_parameters(profile, overrides)  # every parameter is checked here, before any work
    if isinstance(sources, str):
        sources = [name.strip() for name in sources.split(",") if name.strip()]
    _check_tasks(target, sources, parameters)
    workdir, out_dir, executor = _outputs(workdir, f"{profile or 'study'}-{task_name(target)}", out_dir, executor)
    return NotebookRun(profile, target, list(sources), workdir, out_dir, data_dir, dict(overrides or {}), executor)


def _profile(profile: str | None) -> str:
    """The profile a notebook runs: the one given ("" is none: a study file that gives every parameter), else
    FUSIONKIT_PROFILE (nbval's smoke runs), else the default."""
    return profile if profile is not None else os.environ.get("FUSIONKIT_PROFILE") or DEFAULT_PROFILE


def _outputs(workdir: str | None, default_workdir: str, out_dir: str | None,
             executor: dict | None) -> tuple[Path, Path, dict]:
    """The work and report folders (from the arguments, else FUSIONKIT_WORKDIR / FUSIONKIT_OUT, else
    runs/<default_workdir> and <workdir>/report), each checked writable, and the executor's options, checked:
    all before any work."""
    workdir = Path(workdir or os.environ.get("FUSIONKIT_WORKDIR") or _default_root() / "runs" / default_workdir)
    out_dir = Path(out_dir or os.environ.get("FUSIONKIT_OUT") or workdir / "report")
    check_writable_folder(workdir, "work folder")
    check_writable_folder(out_dir / "figures", "report folder")
    executor = dict(executor or {"kind": "local"})
    make_executor(**executor)  # an unknown executor or option fails here
    return workdir, out_dir, executor


def matrix_run(profile: str | None = None, targets=None, workdir: str | None = None, out_dir: str | None = None,
               data_dir: str | None = None, overrides: dict | None = None, executor: dict | None = None,
               sources=None) -> MatrixRun:
    """Resolve the matrix notebook's parameters as ``notebook_run`` does; ``targets`` (a list or "a,b,c") is the
    pool, by default every registered task whose files are in the data folder; ``sources``, further knowledge
    every target fuses beside the pool. Default work folder: runs/<profile>-matrix (runs/matrix for the matrix
    profile)."""
    profile = _profile(profile)
    parameters = profile_parameters(profile, overrides)
    if isinstance(targets, str):
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    targets = list(targets or tasks_present(data_dir))
    if isinstance(sources, str):
        sources = [name.strip() for name in sources.split(",") if name.strip()]
    for target in targets:
        _check_tasks(target, [*(t for t in targets if t != target), *(sources or [])], parameters)
    default = "matrix" if profile == "matrix" else f"{profile or 'study'}-matrix"
    workdir, out_dir, executor = _outputs(workdir, default, out_dir, executor)
    run = MatrixRun(profile, targets, workdir, out_dir, data_dir, dict(overrides or {}), executor, list(sources or []))
    run.configs()  # a pool of fewer than 3 tasks, or a profile without the matrix's systems, fails here
    return run


def setup_matrix_notebook(profile: str | None = None, targets=None, workdir: str | None = None,
                          out_dir: str | None = None, data_dir: str | None = None, overrides: dict | None = None,
                          executor: dict | None = None, sources=None) -> MatrixRun:
    """The first call of the matrix notebook (see ``matrix_run``), as ``setup_notebook`` is for the others."""
    _quiet_notebook()
    run = matrix_run(profile, targets, workdir, out_dir, data_dir, overrides, executor, sources)
    beside = f", and {[source_name(s) for s in run.sources]} beside them" if run.sources else ""
    print(f"profile {run.profile}: transfer matrix over {run.target_names} (each a target, the others its sources"
          f"{beside}), executor {run.executor['kind']}\nwork folder {run.workdir}\noutputs {run.out_dir}")
    return run


def _check_tasks(target, sources: list, parameters: dict) -> None:
    check_sources(target, sources, known=True)  # unknown tasks, missing files, malformed entries, a name twice...
    # ...and every model's and adapter's files (and architecture, where an arm needs the encoder's)
    check_given_sources(sources, parameters["encoder"],
                        {arm["system"]: STRATEGIES[arm["strategy"]] for arm in parameters["fusion_arms"]})
    fusing = sorted({arm["strategy"] for arm in parameters["fusion_arms"] if STRATEGIES[arm["strategy"]].needs_sources})
    if fusing and not sources:
        raise ConfigError(f"parameter sources is empty, but the fusion arms ({', '.join(fusing)}) fuse knowledge from "
                          f"source tasks: give at least one (e.g. --sources mr,subj)")


def check_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and write a probe file in it, so a read-only or impossible folder fails in the first
    second (a ConfigError naming it), not after a run was trained."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fusionkit-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{what} '{folder}' cannot be created or written: {err.strerror or err}") from None




def _quiet_notebook() -> None:
    import warnings

    import pandas as pd

    forward_warnings()  # fusionkit's warnings reach the terminal of `fusionkit report` and the page

    pd.set_option("display.precision", 3)
    # Noise that says nothing about the study and prints this machine's paths into the executed notebook.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def setup_notebook(profile: str | None = None, target: str = "cr", sources=("mr", "subj", "trec"),
                   workdir: str | None = None, out_dir: str | None = None, data_dir: str | None = None,
                   overrides: dict | None = None, executor: dict | None = None) -> NotebookRun:
    """The first call of every notebook: resolve its parameters (see ``notebook_run``), set table display, and
    say what this report studies and where its files go."""
    _quiet_notebook()
    run = notebook_run(profile, target, sources, workdir, out_dir, data_dir, overrides, executor)
    print(f"profile {run.profile}: target {run.target_name}, sources {run.source_names}, executor "
          f"{run.executor['kind']}\n"
          f"work folder {run.workdir}\noutputs {run.out_dir}")
    return run
