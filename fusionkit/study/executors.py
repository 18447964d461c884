"""Carrying out a study: ``run_study`` plans it and hands the plan to an executor, ``local`` (this process, one
run after another) or ``ray`` (Ray tasks).

With Ray, each artefact and each run is a task with declared resources: CPUs (the study's ``threads``, torch's
thread count in every executor, so parallel tasks do not oversubscribe the cores and a run gives the same numbers
on Ray as in this process) and, on CUDA, a fraction of a GPU
(``gpu_fraction=0.25``: four small runs share one GPU). An artefact task starts when the artefacts it needs
exist, a run task when its artefacts do; independent runs run side by side. ``ray.init()`` starts a local Ray
unless ``address`` (or ``RAY_ADDRESS``) names a running cluster, whose workers must all see the work folder.

Faults: a worker killed mid-task is retried by Ray (``max_retries``); a run's record is written atomically
under the run's lock, so the store ends with each run once and no partial record. A run that raises fails the
study with the run's name and the worker's traceback.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from fusionkit._io import digest
from fusionkit.errors import ConfigError, TrainingError
from fusionkit.study.design import StudyDesign, decided, primary_comparisons, results_frame
from fusionkit.study.plan import StudyPlan, artefact_at, make_plan
from fusionkit.study.progress import Progress, report_schedule
from fusionkit.study.runner import BUSY, TRAINED, StudyConfig, StudyRunner, fit_and_store, load_study_tasks
from fusionkit.study.store import ResultsStore, run_key


def describe(run: dict, systems: dict[str, list[str]] | None = None) -> str:
    """The run in words: the study's systems it serves (or its strategy and sources), seed, size and target."""
    key = run_key(run)
    sources = f" from {','.join(run['sources'])}" if run["sources"] else ""
    names = ", ".join((systems or {}).get(key, [])) or f"{run['strategy']}{sources}"
    return f"run {key} ({names}, seed {run['seed']}, n={run['train_size']}, target {run['target']})"


Job = tuple[StudyPlan, StudyRunner]  # a plan and the runner of its study (one per target)


@dataclass
class Schedule:
    """How busy an executor's workers were: seconds spent fitting (experts, runs) over slot-seconds (each phase's
    wall time x its workers), summed over the phases it carried out."""

    busy_seconds: float = 0.0
    slot_seconds: float = 0.0

    def add(self, busy: float, slots: float) -> None:
        self.busy_seconds += busy
        self.slot_seconds += slots
        report_schedule(busy, slots)

    @property
    def busy_fraction(self) -> float | None:
        return self.busy_seconds / self.slot_seconds if self.slot_seconds > 0 else None


class LocalExecutor:
    """In this process: the artefacts in order, then the runs (a run another process holds is waited for)."""

    name = "local"

    def __init__(self):
        self.schedule = Schedule()

    def close(self) -> None:
        """Nothing to release (``RayExecutor.close`` shuts down its Ray)."""

    def execute(self, jobs: list[Job], progress: bool = True, phase: str = "runs") -> int:
        """Carry out the plans, one study after another; returns how many runs this process trained. ``phase``
        names this step of the study in the progress lines (``study.progress``)."""
        from tqdm.auto import tqdm

        trained, began = 0, time.perf_counter()
        for plan, runner in jobs:
            counter = Progress(runner.config.target, phase, len(plan.artefacts), len(plan.runs))
            for artefact in plan.artefacts.values():
                artefact_at(runner, artefact.run, artefact.path).provide()
                counter.step("experts")
            outcomes = {}
            for run in tqdm(plan.runs, disable=not progress, desc=f"study {runner.config.target}"):
                outcomes[run_key(run)] = fit_and_store(runner, run, plan.required, wait=False)
                if outcomes[run_key(run)] != BUSY:
                    counter.step("runs")
            for run in plan.runs:  # another process was training it: wait for it (or train it, if that process died)
                if outcomes[run_key(run)] == BUSY:
                    outcomes[run_key(run)] = fit_and_store(runner, run, plan.required, wait=True)
                    counter.step("runs")
            trained += sum(outcome == TRAINED for outcome in outcomes.values())
        wall = time.perf_counter() - began
        self.schedule.add(wall, wall)  # one worker, never idle between its own steps
        return trained


_RUNNERS: dict[str, StudyRunner] = {}


def _worker_runner(config: StudyConfig) -> StudyRunner:
    """One runner per study per worker process: tasks and the base encoder load once, not once per task."""
    key = digest(asdict(config))
    if key not in _RUNNERS:
        target, sources = load_study_tasks(config)
        _RUNNERS[key] = StudyRunner(config, target, sources, ResultsStore(Path(config.workdir) / "results"))
    return _RUNNERS[key]


# A task's torch threads are the study's (StudyConfig.threads), set where the run or expert is fitted
# (``fit_and_store``, ``Strategy.fit``): the same count as in this process, so the same numbers.
# Each returns what it did and the seconds it was busy doing it (the executor's ``Schedule``).
def _artefact_task(config: StudyConfig, run: dict, path: tuple[int, ...], *needed) -> tuple[str, float]:
    began = time.perf_counter()
    artefact = artefact_at(_worker_runner(config), run, path)
    artefact.provide()
    return artefact.key, time.perf_counter() - began


def _run_task(config: StudyConfig, run: dict, required: frozenset, *needed) -> tuple[str, float]:
    began = time.perf_counter()
    outcome = fit_and_store(_worker_runner(config), run, set(required), wait=True)
    return outcome, time.perf_counter() - began


@dataclass
class RayExecutor:
    """Ray tasks: ``workers`` tasks at once on this machine (default: as many as the cores hold tasks of the study's
    ``threads``), each taking ``threads`` CPUs; on CUDA each task also takes ``gpu_fraction`` of a GPU."""

    workers: int | None = None
    address: str | None = None
    gpu_fraction: float = 0.25
    max_retries: int = 2
    _started: bool = field(default=False, init=False, repr=False)  # whether this executor started the Ray it uses
    schedule: Schedule = field(default_factory=Schedule, init=False, repr=False)
    name = "ray"

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}")
        if not 0 < self.gpu_fraction <= 1:
            raise ConfigError(f"gpu_fraction must be in (0, 1], got {self.gpu_fraction!r}")

    def _init(self, threads: int) -> None:
        import ray

        if ray.is_initialized():
            return
        self._started = True  # so close() shuts down the Ray this executor started, and no other
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            workers = self.workers or max(1, (os.cpu_count() or 1) // threads)
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)

    def execute(self, jobs: list[Job], progress: bool = True, phase: str = "runs") -> int:
        """Carry out the plans on Ray, every study's runs side by side (the studies of a matrix share the
        workers); returns how many runs this driver's tasks trained. ``phase`` as ``LocalExecutor.execute``'s."""
        import ray
        from tqdm.auto import tqdm

        threads = max(runner.config.threads for _, runner in jobs)
        self._init(threads)
        gpus = self.gpu_fraction if torch.cuda.is_available() else 0
        pending = {}  # ref -> ("experts" or "runs", the run it fits, its plan)
        for plan, runner in jobs:
            config, refs = runner.config, {}
            options = dict(num_cpus=config.threads, num_gpus=gpus, max_retries=self.max_retries)
            artefact_remote = ray.remote(_artefact_task).options(**options)
            run_remote = ray.remote(_run_task).options(**options)
            for key, artefact in plan.artefacts.items():  # in dependency order: the refs they need exist already
                refs[key] = artefact_remote.remote(config, artefact.run, artefact.path,
                                                   *(refs[k] for k in artefact.needs))
                pending[refs[key]] = ("experts", artefact.run, plan)
            pending.update({run_remote.remote(config, run, frozenset(plan.required),
                                              *(refs[k] for k in plan.run_needs[run_key(run)])): ("runs", run, plan)
                            for run in plan.runs})
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        targets = ", ".join(dict.fromkeys(runner.config.target for _, runner in jobs))
        counter = Progress(targets, phase, sum(len(plan.artefacts) for plan, _ in jobs),
                           sum(len(plan.runs) for plan, _ in jobs))
        trained, busy, began = 0, 0.0, time.perf_counter()
        with tqdm(total=counter.totals["runs"], disable=not progress, desc=f"study {targets} on Ray") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                what, run, plan = pending.pop(done[0])
                try:
                    outcome, seconds = ray.get(done[0])
                    busy += seconds
                except ray.exceptions.RayError as error:
                    for ref in pending:
                        ray.cancel(ref)
                    raise TrainingError(f"{describe(run, plan.systems)} failed on a Ray worker:\n{error}") from None
                counter.step(what)
                if what == "runs":
                    trained += outcome == TRAINED
                    bar.update(1)
                    bar.set_postfix(running=min(len(pending), slots))
        self.schedule.add(busy, (time.perf_counter() - began) * slots)
        return trained

    def close(self) -> None:
        """Shut down the Ray this executor started (a cluster it joined, or a Ray the caller started, stays):
        shut down here, while the process is alive, Ray's processes end quietly; left to the end of a notebook
        kernel, they are killed mid-shutdown and print C++ stack dumps on the terminal."""
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def make_executor(kind: str | LocalExecutor | RayExecutor = "local", **options) -> LocalExecutor | RayExecutor:
    """An executor by name ("local" or "ray", with RayExecutor's options), or one given as it is."""
    if not isinstance(kind, str):
        return kind
    if kind == "local":
        if options:
            raise ConfigError(f"the local executor takes no options, got {sorted(options)}")
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(**options)
    raise ConfigError(f"unknown executor {kind!r}; choose 'local' or 'ray'")


def run_study(config: StudyConfig, progress: bool = True, executor="local"):
    """Run every planned run not yet stored (see ``fusionkit.study.design``: the tuning runs first, then every
    seed of each chosen configuration with its controls and ablations); returns the results table of this
    study's runs, one row per system and run, with ``attrs["tuning"]`` (every configuration tried and its
    validation accuracy) and ``attrs["runs_trained"]`` (how many this call trained).

    ``executor``: "local" (this process), "ray", or an executor from ``fusionkit.study.executors``. Several
    processes may share one work folder (two reports, several drivers): each run and artefact is trained
    under a lock, a run another process is training is waited for and counted as found, and one whose
    process died without storing it is trained here.
    """
    return run_studies([config], progress, executor)


def _staged_final_runs(studies: list, scores: list, seed_design, execute) -> tuple[list, int]:
    """The final runs of studies whose seeds come in stages: at each look, the runs of that look's seeds for every
    fusion system still undecided (with its controls and ablations), then the primary comparisons over every study
    at once (one family: ``design.primary_comparisons``), and the systems they decide stop there. Returns each
    study's planned runs and how many were trained. Deterministic: run again over a full store, it plans the same."""
    stopped: list[dict[str, int]] = [{} for _ in studies]
    trained, looks = 0, seed_design.looks
    config = studies[0][0]
    for index, seeds in enumerate(looks):
        finals = [design.final_runs(study_scores, seeds, stop)
                  for (*_, design), study_scores, stop in zip(studies, scores, stopped)]
        trained += execute(finals, f"look {index + 1} of {len(looks)}: {seeds} seeds for the undecided systems")
        if index == len(looks) - 1:
            break
        results = pd.concat([results_frame(store, final) for (_, _, _, store, _), final in zip(studies, finals)],
                            ignore_index=True)
        comparisons = primary_comparisons(results, config.alpha, config.min_effect, seed_design)
        done = decided(comparisons)
        for (study_config, *_), stop in zip(studies, stopped):
            for target, system in done:
                if target == study_config.target:
                    stop.setdefault(system, seeds)
    return finals, trained


def run_studies(configs: list[StudyConfig], progress: bool = True, executor="local"):
    """``run_study`` for several studies at once (the targets of a transfer matrix, sharing one work folder):
    every study's tuning runs go to the executor together, then every study's final runs, so parallel workers
    are never idle between targets. Returns the studies' results tables concatenated (``attrs`` as
    ``run_study``'s, the tuning table with a ``target`` column)."""
    executor = make_executor(executor)
    studies = []
    for config in configs:
        target, sources = load_study_tasks(config)
        studies.append((config, target, sources, ResultsStore(Path(config.workdir) / "results"),
                        StudyDesign(config, target, sources)))
    runners: dict[int, StudyRunner] = {}

    def execute(planned_by_study: list[list], phase: str) -> int:
        """Fit the planned runs not yet stored (each once, whatever systems it serves); how many were trained."""
        jobs = []
        for index, ((config, target, sources, store, _), planned) in enumerate(zip(studies, planned_by_study)):
            todo = list({p.key: p.run for p in planned if not store.has(p.key)}.values())
            if not todo:
                continue
            systems: dict[str, list[str]] = {}
            for p in planned:
                systems.setdefault(p.key, []).append(p.system)
            if index not in runners:  # (setdefault would build a runner, loading the encoder, on every phase)
                runners[index] = StudyRunner(config, target, sources, store)
            jobs.append((make_plan(runners[index], todo, systems), runners[index]))
        return executor.execute(jobs, progress, phase) if jobs else 0

    try:
        trained = execute([design.tuning_runs() for *_, design in studies], "tuning on validation")
        # the tuning runs are all stored now: each arm's choice is known
        scores = [design.validation_scores(store) for *_, store, design in studies]
        seed_design = configs[0].seed_design
        if not seed_design.staged_design:
            finals = [design.final_runs(study_scores) for (*_, design), study_scores in zip(studies, scores)]
            trained += execute(finals, "final runs (every seed, with controls)")
        else:
            finals, more = _staged_final_runs(studies, scores, seed_design, execute)
            trained += more
    finally:
        executor.close()
    frames, tuning = [], []
    for (config, _, _, store, design), study_scores, final in zip(studies, scores, finals):
        frames.append(results_frame(store, final))
        table = design.tuning_table(study_scores)
        table.insert(0, "target", config.target)
        tuning.append(table)
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["tuning"] = pd.concat(tuning, ignore_index=True)
    frame.attrs["runs_trained"] = trained  # by this call; the others were found stored
    frame.attrs["busy_fraction"] = executor.schedule.busy_fraction  # of its workers' time, fitting
    return frame
