"""A study as a plan: the runs still to do and the artefacts (experts, teachers) they need fitted first.

``make_plan`` lists every artefact once, in an order where each comes after those it needs, and each run
with the artefacts it needs. An executor then carries the plan out: ``LocalExecutor`` in this process, one
run after another; ``RayExecutor`` (``fusionkit.study.executors``) as Ray tasks, in parallel on this machine
or a cluster. Both fit a run the same way (``StudyRunner.run``) and store it under its lock, so any mix of
executors and drivers on one work folder trains each run and each artefact once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fusionkit.strategies.base import Artefact
from fusionkit.study.runner import StudyRunner
from fusionkit.study.store import run_key


@dataclass
class PlannedArtefact:
    """An artefact, and how to rebuild it in any process: from ``run``, follow ``path`` through the
    requirements (``(i,)``: the run's i-th; ``(i, j)``: that artefact's own j-th)."""

    key: str
    name: str
    run: dict
    path: tuple[int, ...]
    needs: list[str] = field(default_factory=list)


@dataclass
class StudyPlan:
    runs: list[dict]
    artefacts: dict[str, PlannedArtefact]  # in an order where each artefact follows those it needs
    run_needs: dict[str, list[str]]  # run key -> keys of the artefacts it needs
    systems: dict[str, list[str]] = field(default_factory=dict)  # run key -> the study's systems it serves

    @property
    def required(self) -> set[str]:
        return set(self.artefacts)


def artefact_at(runner: StudyRunner, run: dict, path: tuple[int, ...]) -> Artefact:
    """The artefact ``path`` leads to from ``run`` (see ``PlannedArtefact``)."""
    strategy, sources, train_size = runner.parts(run)
    train_task = runner.target.subsample(train_size, run["seed"])
    needs = strategy.requirements(train_task, sources, run["seed"])
    artefact = needs[path[0]]
    for index in path[1:]:
        artefact = _requirements(artefact)[index]
    return artefact


def _requirements(artefact: Artefact) -> list:
    train_task = artefact.target.subsample(artefact.train_size, artefact.seed)
    return artefact.trainer.requirements(train_task, list(artefact.sources), artefact.seed)


def make_plan(runner: StudyRunner, runs: list[dict], systems: dict[str, list[str]] | None = None) -> StudyPlan:
    artefacts: dict[str, PlannedArtefact] = {}

    def visit(artefact: Artefact, run: dict, path: tuple[int, ...]) -> str:
        key = artefact.key
        if key not in artefacts:
            needs = [visit(need, run, path + (index,)) for index, need in enumerate(_requirements(artefact))
                     if isinstance(need, Artefact)]
            artefacts[key] = PlannedArtefact(key, artefact.path.name, run, path, needs)  # after what it needs
        return key

    run_needs = {}
    for run in runs:
        strategy, sources, train_size = runner.parts(run)
        train_task = runner.target.subsample(train_size, run["seed"])
        run_needs[run_key(run)] = [visit(need, run, (index,)) for index, need in
                                   enumerate(strategy.requirements(train_task, sources, run["seed"]))
                                   if isinstance(need, Artefact)]
    for run in runs:  # a run that is itself an artefact (a teacher) is fitted by that artefact's task first
        own = runner.as_artefact(run).key
        if own in artefacts:
            run_needs[run_key(run)].append(own)
    return StudyPlan(runs, artefacts, run_needs, dict(systems or {}))
