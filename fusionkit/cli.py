"""The ``fusionkit`` command: ``fusionkit report`` regenerates a report, ``fusionkit tasks`` lists the tasks."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import typer
import yaml

from fusionkit.errors import ConfigError, FusionkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fusionkit: fuse source-task knowledge into a pretrained encoder and evaluate it honestly.")


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: ``1e-3`` is a float (PyYAML's YAML 1.1 needs ``1.0e-3``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def parse_parameters(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as YAML, so ``seeds=[0,1]`` is a list, ``encoder=tiny`` a string and
    ``lr=1e-3`` a number."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {pair!r} is not key=value (e.g. -p seeds=[0,1])")
        try:
            parsed[key.strip()] = yaml.load(value, Loader=_Loader)
        except yaml.YAMLError as error:
            raise ConfigError(f"parameter {key.strip()!r}: value {value!r} is not valid YAML ({error})") from None
    return parsed


@app.command()
def report(
    profile: str = typer.Option("quick", help="smoke, quick, matrix or full (see fusionkit.study.profiles)"),
    target: str = typer.Option("cr", help="target task"),
    sources: str = typer.Option("mr,subj,trec", help="comma-separated source tasks"),
    targets: Optional[str] = typer.Option(None, help="a transfer matrix instead: comma-separated tasks, each a "
                                                     "target and a source for the others, or 'all' (every task "
                                                     "whose files are present); --target/--sources unused"),
    out: Path = typer.Option(..., help="report folder, e.g. reports/quick-cr"),
    param: list[str] = typer.Option([], "--param", "-p", help="override a study parameter: -p key=value"),
    workdir: Optional[str] = typer.Option(None, help="run folder for experts, features and results "
                                                     "(default runs/<profile>-<target>, runs/<profile>-matrix)"),
    data_dir: Optional[str] = typer.Option(None, help="SentEval folder (default: FUSIONKIT_DATA, then the Hub)"),
    executor: str = typer.Option("local", help="local (this process) or ray (parallel runs, or a Ray cluster)"),
    workers: Optional[int] = typer.Option(None, help="ray: runs at once on this machine (default: one per core)"),
    ray_address: Optional[str] = typer.Option(None, help="ray: a running cluster to use (default: RAY_ADDRESS, "
                                                         "else a local Ray is started)"),
    gpu_fraction: float = typer.Option(0.25, help="ray on CUDA: the share of a GPU each run takes"),
    track: Optional[str] = typer.Option(None, help="mlflow: log the report and each of its runs to MLflow "
                                                   "(MLFLOW_TRACKING_URI, else ./mlruns; needs the "
                                                   "mlflow extra of fusionkit)"),
) -> None:
    """Execute the notebooks in order with papermill and write OUT/index.html."""
    from fusionkit.report import run_report  # here, not at the top: `fusionkit --help` need not load torch

    options = {"kind": executor}
    if executor == "ray":
        options.update(workers=workers, address=ray_address, gpu_fraction=gpu_fraction)
    try:
        run_report(out, profile, target, sources, parse_parameters(param), workdir, data_dir, executor=options,
                   targets=targets, track=track)
    except FusionkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def tasks(data_dir: Optional[str] = typer.Option(None, help="folder to look in (default: FUSIONKIT_DATA)")) -> None:
    """List the registered tasks and where each would be loaded from."""
    from fusionkit.data import TASKS

    folder = data_dir or os.environ.get("FUSIONKIT_DATA")
    typer.echo(f"data folder: {folder or '(none: tasks come from the Hugging Face Hub)'}")
    for definition in TASKS.values():
        files = list(definition.files.values())
        if folder and all((Path(folder) / name).is_file() for name in files):
            where = f"local: {', '.join(files)}"
        else:
            where = f"hub: {definition.hub.dataset_id}" + (f" (local files {', '.join(files)} not found)" if folder else "")
        typer.echo(f"{definition.name:6} {len(definition.label_names)} labels  {definition.description}\n       {where}")


@app.command()
def export(
    run_id: str = typer.Argument(..., help="the run's id: the run_id column of the report's results.csv or tuning.csv"),
    to: Path = typer.Option(..., help="folder to write the model to (replaced whole)"),
    report: Path = typer.Option(..., "--report", help="the report folder whose provenance.json describes the study"),
) -> None:
    """Refit a stored run from its report's record and export it as a folder that transformers,
    sentence-transformers and peft load without fusionkit."""
    from fusionkit.study.export_run import export_run

    try:
        exported = export_run(run_id, to, report)
    except FusionkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"run {run_id} ({exported.system}): test accuracy stored {exported.stored_accuracy:.6f}, "
               f"refitted {exported.refit_accuracy:.6f}\nexported to {exported.path}")
