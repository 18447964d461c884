"""What every notebook of one report shares: its parameters, where outputs go, and the one-call setup."""
from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fusionkit._io import atomic_write
from fusionkit.report.plots import save_figure
from fusionkit.study.profiles import profile_parameters, study_config
from fusionkit.study.store import ResultsStore

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
    target: str
    sources: list[str]
    workdir: Path
    out_dir: Path
    data_dir: str | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def parameters(self) -> dict:
        return profile_parameters(self.profile, self.overrides)

    def study(self, part: str):
        return study_config(self.profile, part, self.target, self.sources, str(self.workdir), self.data_dir,
                            self.overrides)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.workdir / "results")

    def save(self, figure, name: str, caption: str):
        """Save a figure as PNG and SVG under out_dir/figures, note its caption, and return it for display."""
        folder = self.out_dir / "figures"
        save_figure(figure, folder, name)
        manifest_path = folder / "figures.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        manifest[name] = caption
        atomic_write(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
        return figure

    def write_table(self, frame, name: str) -> Path:
        path = self.out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        return path


def notebook_run(profile: str | None = None, target: str = "cr", sources=("mr", "subj", "trec"),
                 workdir: str | None = None, out_dir: str | None = None, data_dir: str | None = None,
                 overrides: dict | None = None) -> NotebookRun:
    """Resolve a notebook's parameters; None falls back to FUSIONKIT_PROFILE / FUSIONKIT_WORKDIR / FUSIONKIT_OUT
    (so nbval can pick the smoke profile) and then to the defaults."""
    profile = profile or os.environ.get("FUSIONKIT_PROFILE") or DEFAULT_PROFILE
    profile_parameters(profile, overrides)  # an unknown profile or parameter fails here, before any work
    if isinstance(sources, str):
        sources = [name.strip() for name in sources.split(",") if name.strip()]
    root = _default_root()
    workdir = Path(workdir or os.environ.get("FUSIONKIT_WORKDIR") or root / "runs" / f"{profile}-{target}")
    out_dir = Path(out_dir or os.environ.get("FUSIONKIT_OUT") or workdir / "report")
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    return NotebookRun(profile, target, list(sources), workdir, out_dir, data_dir, dict(overrides or {}))




def setup_notebook(profile: str | None = None, target: str = "cr", sources=("mr", "subj", "trec"),
                   workdir: str | None = None, out_dir: str | None = None, data_dir: str | None = None,
                   overrides: dict | None = None) -> NotebookRun:
    """The first call of every notebook: resolve its parameters (see ``notebook_run``), set table display, and
    say what this report studies and where its files go."""
    import pandas as pd

    pd.set_option("display.precision", 3)
    run = notebook_run(profile, target, sources, workdir, out_dir, data_dir, overrides)
    print(f"profile {run.profile}: target {run.target}, sources {run.sources}\n"
          f"work folder {run.workdir}\noutputs {run.out_dir}")
    return run
