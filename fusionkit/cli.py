"""The ``fusionkit`` command: ``report`` makes a report (from a profile or a study file), ``page`` writes a finished
report's page again (one self-contained file, a screenshot), ``study-template`` prints an example study file,
``tasks`` lists the tasks, ``export`` turns a run into a model standard tools load."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from fusionkit.errors import ConfigError, FusionkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fusionkit: fuse source-task knowledge into a pretrained encoder and evaluate it honestly.")


def parse_parameters(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as YAML, so ``seeds=[0,1]`` is a list, ``encoder=tiny`` a string and
    ``lr=1e-3`` a number."""
    from fusionkit._io import parse_yaml

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {pair!r} is not key=value (e.g. -p seeds=[0,1])")
        parsed[key.strip()] = parse_yaml(value, f"parameter {key.strip()!r}: value {value!r}")
    return parsed


@app.command()
def report(
    out: Path = typer.Option(..., help="report folder, e.g. reports/quick-cr"),
    study: Optional[Path] = typer.Option(None, help="a study file (YAML: target, sources, parameters, executor; "
                                                    "`fusionkit study-template` prints one); the options below "
                                                    "override its fields"),
    profile: Optional[str] = typer.Option(None, help="smoke, quick, matrix or full (fusionkit/profiles/*.yaml; "
                                                     "default: the study file's `extends`, else quick)"),
    target: Optional[str] = typer.Option(None, help="target task: a name or a .csv/.tsv/.jsonl/.parquet file "
                                                    "(default cr)"),
    text_column: Optional[str] = typer.Option(None, help="with a --target file: its text column (default text)"),
    label_column: Optional[str] = typer.Option(None, help="with a --target file: its label column (default label)"),
    sources: Optional[str] = typer.Option(None, help="comma-separated source tasks (default mr,subj,trec; models, "
                                                     "adapters and knowledge features go in a study file)"),
    targets: Optional[str] = typer.Option(None, help="a transfer matrix instead: comma-separated tasks, each a "
                                                     "target and a source for the others, or 'all' (every task "
                                                     "whose files are present); --target/--sources unused"),
    param: list[str] = typer.Option([], "--param", "-p", help="override a study parameter: -p key=value"),
    workdir: Optional[str] = typer.Option(None, help="run folder for experts, features and results "
                                                     "(default runs/<profile>-<target>, runs/<profile>-matrix)"),
    data_dir: Optional[str] = typer.Option(None, help="SentEval folder (default: FUSIONKIT_DATA, then the Hub)"),
    executor: Optional[str] = typer.Option(None, help="local (this process, the default) or ray (parallel runs, "
                                                      "or a Ray cluster)"),
    workers: Optional[int] = typer.Option(None, help="ray: runs at once on this machine (default: one per core)"),
    ray_address: Optional[str] = typer.Option(None, help="ray: a running cluster to use (default: RAY_ADDRESS, "
                                                         "else a local Ray is started)"),
    gpu_fraction: Optional[float] = typer.Option(None, help="ray on CUDA: the share of a GPU each run takes "
                                                            "(default 0.25)"),
    track: Optional[str] = typer.Option(None, help="mlflow: log the report and each of its runs to MLflow "
                                                   "(MLFLOW_TRACKING_URI, else ./mlruns; needs the "
                                                   "mlflow extra of fusionkit)"),
    single_file: bool = typer.Option(False, "--single-file", help="also write OUT/<name>.html: the page as one "
                                                                 "self-contained file (images inside) to mail"),
) -> None:
    """Execute the notebooks in order with papermill and write OUT/index.html."""
    from fusionkit.report import run_report  # here, not at the top: `fusionkit --help` need not load torch
    from fusionkit.study.study_file import load_study_file

    try:
        given = load_study_file(study) if study else {}
        if (text_column or label_column) and not target:
            raise ConfigError("--text-column and --label-column name the columns of a --target file; give one")
        if target and (text_column or label_column):
            target = {"path": target, "text_column": text_column or "text", "label_column": label_column or "label"}
        options = given.get("executor") or {"kind": "local"}
        if executor is not None:
            options = {"kind": executor}
            if executor == "ray":
                given = dict(workers=workers, address=ray_address, gpu_fraction=gpu_fraction)
                options.update({name: value for name, value in given.items() if value is not None})
        run_report(out, profile if profile is not None else given.get("profile", "quick"),
                   target or given.get("target") or "cr", sources if sources is not None else given.get("sources"),
                   {**given.get("overrides", {}), **parse_parameters(param)}, workdir or given.get("workdir"),
                   data_dir or given.get("data_dir"), executor=options, targets=targets or given.get("targets"),
                   track=track, single_file=single_file)
    except FusionkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def page(
    report: Path = typer.Argument(..., help="a finished report folder, e.g. reports/quick-cr"),
    single_file: bool = typer.Option(False, "--single-file", help="also write REPORT/<name>.html, self-contained"),
    screenshot: Optional[Path] = typer.Option(None, help="also save the top of the page (1280x900) to this PNG "
                                                         "(needs playwright and a Chromium)"),
) -> None:
    """Write a finished report's index.html again from its folder (CSVs, figures, provenance), running nothing."""
    from fusionkit.report import page as report_page

    try:
        typer.echo(f"wrote {report_page.rewrite_index(report)}")
        if single_file:
            typer.echo(f"wrote {report_page.write_single_file(report)}")
        if screenshot:
            typer.echo(f"wrote {report_page.screenshot(report / 'index.html', screenshot)}")
    except FusionkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command("study-template")
def study_template() -> None:
    """Print a commented example study file: `fusionkit study-template > my_study.yaml`, then edit it."""
    from fusionkit.study.study_file import TEMPLATE

    typer.echo(TEMPLATE.read_text(encoding="utf-8"), nl=False)


@app.command()
def tasks(data_dir: Optional[str] = typer.Option(None, help="folder to look in (default: FUSIONKIT_DATA)")) -> None:
    """List the registered tasks and where each would be loaded from."""
    from fusionkit.data import TASKS

    folder = data_dir or os.environ.get("FUSIONKIT_DATA")
    typer.echo(f"data folder: {folder or '(none: tasks come from the Hugging Face Hub)'}")
    for definition in TASKS.values():
        files = list(definition.files.values())
        present = [name for name in files if folder and (Path(folder) / name).is_file()]
        if present == files:
            where = f"local: {', '.join(files)}"
        elif present:  # the loader refuses a partial copy rather than mix it with the Hub's
            where = f"incomplete local copy: {', '.join(sorted(set(files) - set(present)))} missing (an error)"
        else:
            where = f"hub: {definition.hub.dataset_id}" + (f" (local files {', '.join(files)} not found)" if folder else "")
        typer.echo(f"{definition.name:6} {len(definition.label_names)} labels  {definition.description}\n       {where}")


@app.command()
def export(
    run_id: str = typer.Argument(..., help="the run's id: the run_id column of the report's results.csv or tuning.csv"),
    to: Path = typer.Option(..., help="folder to write the model to: a new or empty folder, or a previous export "
                                      "(replaced whole); never the current folder or a file"),
    report: Path = typer.Option(..., "--report", help="the report folder whose provenance.json describes the study"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a --to folder that holds other files, whole"),
) -> None:
    """Refit a stored run from its report's record and export it as a folder that transformers,
    sentence-transformers and peft load without fusionkit."""
    from fusionkit.study.export_run import export_run

    try:
        exported = export_run(run_id, to, report, overwrite)
    except FusionkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"run {run_id} ({exported.system}): test accuracy stored {exported.stored_accuracy:.6f}, "
               f"refitted {exported.refit_accuracy:.6f}\nexported to {exported.path}")
