"""The protocol of a study: what is tuned, what each fused system is judged against, what is ablated.

Every planned run has a *role*:

* ``baseline``: a target-only arm (finetune, linear_probe...);
* ``fusion``: an arm that fuses knowledge from sources;
* ``control``: a fusion system's matched control (``Strategy.controls``): the same procedure without the
  knowledge, with the fusion system's chosen configuration, so the only difference is the knowledge;
* ``ablation``: a fusion system over several sources with one left out (leave-one-source-out), same configuration;
* ``variance``: with ``variance_split``, a fusion system or its matched control at a seed with another seed's
  training examples, so that the two sources of a gain's spread can be told apart.

Each fusion system also gets a *tuned control* (role ``control``, detail ``TUNED``): its matched control's
procedure tuned on its own, with the same budget on validation ("is fusion better than the best I could do without
it?"). It searches the fusion system's search space where that space, on the control's knobs, holds a whole budget
of configurations, and the control strategy's own ``search_space`` where it does not (merging searches the
task-vector scale, which its control, the probe, does not have). Tuned with the same budget, a control is as good
as its own tuning can make it; the matched control isolates the knowledge, the tuned one tests its worth.

A run whose result is the same for every seed (``Strategy.seed_free``, e.g. the linear probe on the whole training
split) is one run: it is planned for the first seed only, and the results say ``seed_free``.

Tuning, the same budget for every arm: each baseline and fusion system evaluates ``tuning_budget``
configurations of its search space (the strategy's ``search_space``, or the arm's own ``search``) on the
first seed, and the configuration with the best accuracy on the target's validation split is then run for
every seed (tune once, as papers do, so the cost stays linear in seeds). Configurations are drawn by
scikit-learn's ``ParameterSampler`` (seed 0): the whole grid when it has exactly ``tuning_budget`` points.
Test data never enters a choice.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Mapping

import pandas as pd

from fusionkit.data.tasks import Task
from fusionkit.errors import ConfigError, FusionkitWarning
from fusionkit.evaluation.gains import INCONCLUSIVE
from fusionkit.evaluation.sequential import SeedDesign
from fusionkit.evaluation.verdicts import compare_pairs
from fusionkit.strategies import STRATEGIES
from fusionkit.strategies.base import source_kind
from fusionkit.study.runner import Arm, StudyConfig, arm_knobs, resolved_knobs
from fusionkit.study.store import ResultsStore, run_key

# The protocol's version: bumped whenever the runs a study plans or the rule its verdicts follow change for the same
# parameters, so a report made under another version says so (its runs are not the ones today's code would plan).
# 2: sources drop tokenisation variants and near-duplicates of the evaluation texts (whole splits); every fusion
# system gets a tuned control (and representation and merge a random-expert one); profiles: 2,000-example experts,
# the small-n recipe. 3: verdicts read one simultaneous interval (Bonferroni over the family) with four outcomes
# (equivalent added), power is planned at the adjusted alpha, and seeds may come in stages.
PROTOCOL_VERSION = 3
BASELINE, FUSION, CONTROL, ABLATION = "baseline", "fusion", "control", "ablation"
VARIANCE = "variance"  # a run of the seed x data-seed grid that splits a verdict's variance (``variance_split``)
CROSSED = "crossed seeds"
TUNED = "tuned control"  # the detail of a fusion system's tuned control (its matched control tuned on its own)
TUNING_SEED_INDEX = 0  # configurations are compared on the first seed of the study


@dataclass
class PlannedRun:
    """One run as the study sees it: the ``system`` it counts for, its ``role``, and ``run``, what is trained
    (``run_key(run)`` is its id in the store; two systems that train the same thing share one run). For a
    control or ablation, ``of`` is the fusion system it serves and ``detail`` what it takes away."""

    system: str
    role: str
    run: dict
    of: str = ""
    detail: str = ""
    configuration: dict | None = None  # the tuned knobs' values
    primary: bool = False  # a control that is the fusion system's matched control (its verdict's reference)
    seed_free: bool = False  # its result is the same for every seed: planned once (see ``StudyDesign.seed_free``)

    @property
    def key(self) -> str:
        return run_key(self.run)


def configurations(arm: Arm, budget: int) -> list[dict]:
    """The ``budget`` configurations (knob -> value) the arm is tuned over; ``[{}]`` (its knobs as given)
    for a budget of 1. A search space smaller than the budget is a ConfigError: the arm could not get the
    same budget as the others."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if budget == 1:
        return [{}]
    space = arm.search if arm.search is not None else STRATEGIES[arm.strategy].search_space
    size = len(ParameterGrid(space)) if space else 0
    if size < budget:
        raise ConfigError(f"arm {arm.system!r}: its search space {space} has {size} configuration(s), fewer than "
                          f"the study's tuning_budget {budget}; every arm gets the same budget, so give the arm a "
                          f"larger 'search' or lower tuning_budget")
    unknown = sorted(set(space) - STRATEGIES[arm.strategy].Knobs.knob_names())
    if unknown:
        raise ConfigError(f"arm {arm.system!r}: its search space names unknown knob(s) {unknown}")
    return [dict(sorted(point.items())) for point in ParameterSampler(space, n_iter=budget, random_state=0)]


def control_configurations(arm: Arm, control, budget: int) -> list[dict]:
    """The configurations a fusion arm's tuned control is tuned over (``budget`` of them): the arm's search space on
    the control strategy's knobs when it holds ``budget`` points, else the control strategy's own search space."""
    from sklearn.model_selection import ParameterGrid

    if budget == 1:
        return [{}]
    space = arm.search if arm.search is not None else STRATEGIES[arm.strategy].search_space
    known = control.strategy.Knobs.knob_names()
    projected = {knob: values for knob, values in (space or {}).items() if knob in known}
    own = Arm(f"{arm.system}: {TUNED}", control.strategy.name,
              search=projected if projected and len(ParameterGrid(projected)) >= budget else None)
    return configurations(own, budget)


class StudyDesign:
    """The runs of one study on its (capped) target and sources, in two steps: ``tuning_runs`` first, then,
    once they are stored, ``final_runs`` with each arm's chosen configuration."""

    def __init__(self, config: StudyConfig, target: Task, sources: list[Task]):
        if not isinstance(config.tuning_budget, int) or config.tuning_budget < 1:
            raise ConfigError(f"tuning_budget must be a positive integer, got {config.tuning_budget!r}")
        self.config, self.target, self.sources = config, target, sources
        self.data = {"target": target.fingerprint(), "sources": {s.name: s.fingerprint() for s in sources}}
        self._warn_unusable_sources()

    def usable_sources(self, arm: Arm) -> list:
        """The study's sources the arm's strategy can fuse (knowledge features only through representation)."""
        kinds = STRATEGIES[arm.strategy].usable_kinds(arm.knobs)
        return [s for s in self.sources if source_kind(s) in kinds]

    def _warn_unusable_sources(self) -> None:
        for arm in self.config.arms:
            if not STRATEGIES[arm.strategy].needs_sources:
                continue
            left = [f"{s.name} ({source_kind(s)})" for s in self.sources if s not in self.usable_sources(arm)]
            if left:
                warnings.warn(f"arm {arm.system!r} ({arm.strategy}) runs without {', '.join(left)}: it fuses only "
                              f"{', '.join(STRATEGIES[arm.strategy].usable_kinds(arm.knobs))} sources", FusionkitWarning,
                              stacklevel=3)

    def _run(self, strategy: str, knobs: dict, sources: list[Task], seed: int, size: int,
             data_seed: int | None = None) -> dict:
        config = self.config
        run = {"target": config.target, "sources": [s.name for s in sources], "strategy": strategy, "knobs": knobs,
               "seed": seed, "train_size": size, "encoder": config.encoder, "max_length": config.max_length,
               "data": self.data}
        return run if data_seed is None else {**run, "data_seed": data_seed}  # (the study's own runs: no key)

    def systems(self):
        """(arm, system name, its sources, train size) for every tuned system of the study."""
        for arm in self.config.arms:
            needs = STRATEGIES[arm.strategy].needs_sources
            usable = self.usable_sources(arm)
            source_sets = ([(f"{arm.system} ({s.name})", [s]) for s in usable] if arm.per_source
                           else [(arm.system, usable if needs else [])] if usable or not needs else [])
            # None and sizes beyond the split all mean the whole split: plan (and train) that size once.
            n_train = len(self.target.train)
            sizes = dict.fromkeys(min(size or n_train, n_train) for size in arm.train_sizes or self.config.train_sizes)
            for size in sizes:
                for system, sources in source_sets:
                    yield arm, system, sources, size

    def seed_free(self, run: dict) -> bool:
        """Whether the run's result is the same for every seed, as its strategy says (``Strategy.seed_free``)."""
        return STRATEGIES[run["strategy"]].seed_free(run["train_size"] >= len(self.target.train))

    def _role(self, arm: Arm) -> str:
        return FUSION if STRATEGIES[arm.strategy].needs_sources else BASELINE

    def tuning_runs(self) -> list[PlannedRun]:
        """Every configuration of every tuned system, on the first seed: the baselines, the fusion systems and
        each fusion system's tuned control."""
        seed = self.config.seeds[TUNING_SEED_INDEX]
        runs = []
        for arm, system, sources, size in self.systems():
            runs += [PlannedRun(system, self._role(arm), self._run(arm.strategy, arm_knobs(arm, self.config, point),
                                                                   sources, seed, size), configuration=point)
                     for point in configurations(arm, self.config.tuning_budget)]
            if self._role(arm) == FUSION:
                runs += self._tuned_control(arm, system, sources, seed, size)
        return runs

    def _tuned_control(self, arm: Arm, system: str, sources: list, seed: int, size: int,
                       point: dict | None = None) -> list[PlannedRun]:
        """The tuning runs of the fusion system's tuned control (or, given ``point``, its run at that configuration):
        the matched control's strategy, the arm's knobs it shares, then the configuration."""
        control = STRATEGIES[arm.strategy].controls()[0]
        points = [point] if point is not None else control_configurations(arm, control, self.config.tuning_budget)
        base = control.knobs_from(arm_knobs(arm, self.config))
        return [PlannedRun(f"{system}: {TUNED}", CONTROL,
                           self._run(control.strategy.name, resolved_knobs(control.strategy.name, {**base, **p}),
                                     sources if control.keep_sources else [], seed, size),
                           system, TUNED, configuration=p)
                for p in points]

    def validation_scores(self, store: ResultsStore) -> dict[str, float]:
        """Run id -> validation accuracy of every tuning run, read from the store (where the runner put it)."""
        scores = {}
        for planned in self.tuning_runs():
            score = store.record(planned.key)["scores"].get("val_accuracy")
            if score is None:
                raise ConfigError(f"run {planned.key} ({planned.system}) was stored without a validation accuracy: "
                                  f"it predates tuning; use a new work folder")
            scores[planned.key] = score
        return scores

    def chosen(self, scores: Mapping[str, float] | None) -> dict[tuple[str, int], PlannedRun]:
        """(system, train size) -> its tuning run with the best validation accuracy in ``scores`` (run id ->
        accuracy; the first configuration on a tie); with a tuning budget of 1, the only one (scores unused)."""
        best: dict[tuple[str, int], tuple[float, PlannedRun]] = {}
        for planned in self.tuning_runs():
            where = (planned.system, planned.run["train_size"])
            score = 0.0 if self.config.tuning_budget == 1 else scores[planned.key]
            if where not in best or score > best[where][0]:
                best[where] = (score, planned)
        return {where: planned for where, (_, planned) in best.items()}

    def final_runs(self, scores: Mapping[str, float] | None, seeds: int | None = None,
                   stopped: Mapping[str, int] | None = None) -> list[PlannedRun]:
        """Every seed of every system with its configuration chosen on ``scores`` (see ``chosen``), with the fusion
        systems' matched controls and leave-one-source-out ablations (each with the fusion system's configuration);
        a seed-free run for the first seed only.

        Seeds in stages (``config.seed_design``): ``seeds`` is the look's seed count, which the fusion systems not in
        ``stopped`` (system -> the seed count it stopped at) run with their controls and ablations; the baselines,
        outside the verdicts' family, run the first look's seeds. ``seeds`` None: every seed of ``config.seeds``."""
        chosen = self.chosen(scores)
        planned = []
        first_seed = self.config.seeds[TUNING_SEED_INDEX]
        stopped = stopped or {}
        design = self.config.seed_design
        first_look = design.looks[0] if design is not None and design.staged_design else len(self.config.seeds)

        def plan(run: PlannedRun) -> None:
            run.seed_free = self.seed_free(run.run)
            serves = run.of or run.system
            count = (len(self.config.seeds) if seeds is None else
                     first_look if run.role == BASELINE else stopped.get(serves, seeds))
            if run.run["seed"] not in self.config.seeds[:count]:
                return
            if run.run["seed"] == first_seed or not run.seed_free:
                planned.append(run)

        for arm, system, sources, size in self.systems():
            best = chosen[(system, size)]
            knobs, role = best.run["knobs"], best.role
            for seed in self.config.seeds:
                plan(PlannedRun(system, role, self._run(arm.strategy, knobs, sources, seed, size),
                                configuration=best.configuration))
                if role != FUSION:
                    continue
                for run in self._crossed(arm, system, sources, seed, size, knobs, best.configuration):
                    plan(run)
                for index, control in enumerate(STRATEGIES[arm.strategy].controls()):
                    if not arm.runs_control(index, control.role, sources, self.usable_sources(arm)):
                        continue
                    if control.tasks_only and any(source_kind(s) != "task" for s in sources):
                        continue
                    run = self._run(control.strategy.name,
                                    resolved_knobs(control.strategy.name, control.knobs_from(knobs)),
                                    sources if control.keep_sources else [], seed, size)
                    plan(PlannedRun(f"{system}: {control.role}", CONTROL, run, system, control.role,
                                    best.configuration, primary=index == 0))
                tuned = chosen[(f"{system}: {TUNED}", size)]
                for run in self._tuned_control(arm, system, sources, seed, size, tuned.configuration):
                    plan(run)
                if arm.leave_one_out and len(sources) > 1:
                    for left_out in sources:
                        kept = [s for s in sources if s is not left_out]
                        plan(PlannedRun(f"{system}: without {left_out.name}", ABLATION,
                                        self._run(arm.strategy, knobs, kept, seed, size), system,
                                        f"without {left_out.name}", best.configuration))
        return planned

    def _crossed(self, arm: Arm, system: str, sources: list, seed: int, size: int, knobs: dict,
                 configuration: dict | None) -> list[PlannedRun]:
        """With ``config.variance_split`` = k and ``seed`` among the first k seeds: the fusion system and its matched
        control at this seed with each other data seed of the first k (role VARIANCE; the same seed and data seed is
        the study's own run), so every (seed, data seed) pair of the k x k grid is run by both sides."""
        k = self.config.variance_split
        seeds = self.config.seeds[:k or 0]
        if not k or seed not in seeds or self.seed_free(self._run(arm.strategy, knobs, sources, seed, size)):
            return []
        control = STRATEGIES[arm.strategy].controls()[0]
        control_knobs = resolved_knobs(control.strategy.name, control.knobs_from(knobs))
        runs = []
        for data_seed in seeds:
            if data_seed == seed:
                continue
            runs += [PlannedRun(f"{system}: {CROSSED}", VARIANCE,
                                self._run(arm.strategy, knobs, sources, seed, size, data_seed), system,
                                f"data seed {data_seed}", configuration),
                     PlannedRun(f"{system}: {control.role}, {CROSSED}", VARIANCE,
                                self._run(control.strategy.name, control_knobs,
                                          sources if control.keep_sources else [], seed, size, data_seed),
                                system, f"data seed {data_seed}", configuration)]
        return runs

    def tuning_table(self, scores: Mapping[str, float]) -> pd.DataFrame:
        """Every configuration tried: system, train size, the configuration, its run id and validation accuracy,
        and whether it was chosen."""
        # by system: two systems may share a run (tuned controls of several merges are the same probes) and choose
        # differently, and each row says what its own system chose
        chosen = {where: planned.key for where, planned in self.chosen(scores).items()}
        rows = [{"system": p.system, "train_size": p.run["train_size"], "configuration": json.dumps(p.configuration),
                 "run_id": p.key, "val_accuracy": scores.get(p.key),
                 "chosen": chosen[(p.system, p.run["train_size"])] == p.key}
                for p in self.tuning_runs()]
        return pd.DataFrame(rows, columns=["system", "train_size", "configuration", "run_id", "val_accuracy", "chosen"])


def role_pairs(results: pd.DataFrame, role: str, primary: bool | None = None,
               tuned: bool | None = None) -> list[tuple[str, str]]:
    """(served system, system) for the rows of one role: a control's or an ablation's fusion system first.
    ``primary``: only matched controls (True) or only the others (False); ``tuned``: only tuned controls (True)
    or none of them (False)."""
    rows = results[results["role"] == role]
    if primary is not None:
        rows = rows[rows["primary_control"] == primary]
    if tuned is not None:
        rows = rows[(rows["detail"] == TUNED) == tuned]
    return list(dict.fromkeys(zip(rows["of"], rows["system"])))


def primary_comparisons(results: pd.DataFrame, alpha: float, min_effect: float, design: SeedDesign | None = None,
                        metric: str = "accuracy") -> pd.DataFrame:
    """The study's verdicts: every fusion system against its matched control, across seeds, as one family
    (``verdicts.compare_pairs``: intervals simultaneous over the family and, with seeds in stages, over the looks).
    What a staged study stops on (``decided``) and what its report states are this one table."""
    return compare_pairs(results, role_pairs(results, CONTROL, primary=True), metric=metric, alpha=alpha,
                         min_effect=min_effect, design=design)


def decided(comparisons: pd.DataFrame) -> set[tuple[str, str]]:
    """(target, fusion system) of every system whose comparisons (one per train size) all have a verdict other than
    inconclusive (helps, hurts or equivalent): a staged study gives it no more seeds."""
    open_ = comparisons.assign(open=comparisons["verdict"] == INCONCLUSIVE).groupby(["target", "system"])["open"].any()
    return {key for key, still_open in open_.items() if not still_open}


def results_frame(store: ResultsStore, planned: list[PlannedRun]) -> pd.DataFrame:
    """One row per planned run (a run serving two systems appears under each): the store's record with the
    study's ``system``, ``role``, ``of``, ``detail``, ``primary_control``, ``configuration`` and ``seed_free``
    columns."""
    frame = store.to_frame()
    columns = ["run_id", "system", "role", "of", "detail", "primary_control", "configuration", "seed_free"]
    plan = pd.DataFrame([{"run_id": p.key, "system": p.system, "role": p.role, "of": p.of, "detail": p.detail,
                          "primary_control": p.primary, "configuration": json.dumps(p.configuration or {}),
                          "seed_free": p.seed_free} for p in planned], columns=columns)
    plan = plan.drop_duplicates(["run_id", "system"])
    stored = frame.drop(columns=[c for c in columns[1:] if c in frame])
    return plan.merge(stored, on="run_id", how="inner", validate="many_to_one")
