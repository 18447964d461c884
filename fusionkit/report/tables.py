"""Tables for the evaluation notebook, from the results table of a study (``ResultsStore.to_frame()``).

Each function takes the runs as a DataFrame and returns a small DataFrame (or arrays) ready to show or
plot; the statistics themselves live in ``evaluation`` (``stats``, ``gains``, ``verdicts``).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fusionkit.errors import FusionkitWarning, InputError
from fusionkit.evaluation.metrics import check_columns
from fusionkit.evaluation.stats import crossed_variance_components, friedman_nemenyi, paired_t
from fusionkit.evaluation.gains import FAILED_FAR_BELOW, aulc, failed_runs, learning_curve
from fusionkit.strategies import STRATEGIES
from fusionkit.study.design import CONTROL, CROSSED, VARIANCE, role_pairs
from fusionkit.study.sources import entry_kind

COST_COLUMNS = ("trainable_params", "train_seconds", "infer_ms_per_example")


def by_system(results: pd.DataFrame) -> pd.DataFrame:
    """The runs with each study arm's system name as its strategy (the plots group by strategy and sources)."""
    check_columns(results, ["system"])
    return results.assign(strategy=results["system"], sources="")


def results_table(results: pd.DataFrame, metric: str = "accuracy", confidence: float = 0.95) -> pd.DataFrame:
    """One row per system and train size: mean metric over seeds with its t-interval, ECE, NLL and mean costs.
    ``seed_free`` marks a deterministic run (its result is the same for every seed, ``Strategy.seed_free``): the
    study runs it once, so its row has n_seeds 1 and no interval."""
    check_columns(results, ["target", "system", "train_size", metric, "ece", "nll", *COST_COLUMNS])
    results = _without_attrs(results)
    curve = learning_curve(results, metric, by=("target", "system"), confidence=confidence)
    keys = ["target", "system", "train_size"]
    extras = results.groupby(keys)[["ece", "nll", *COST_COLUMNS]].mean().reset_index()
    if "seed_free" in results:
        extras = extras.merge(results.groupby(keys)["seed_free"].all().reset_index(), on=keys)
    else:
        extras["seed_free"] = False
    table = curve.merge(extras, on=keys)
    return table.rename(columns={"mean": metric}).sort_values(["target", "train_size", metric],
                                                              ascending=[True, True, False], ignore_index=True)


def _without_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its ``attrs``: a study's results keep tables there, which pandas compares (and fails to)
    on every merge or concat of frames that carry them."""
    plain = frame.copy(deep=False)
    plain.attrs = {}
    return plain


def curve_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The runs of the systems trained at 2 or more train sizes: those that have a learning curve."""
    check_columns(results, ["system", "train_size"])
    sizes = results.groupby("system")["train_size"].nunique()
    return results[results["system"].isin(sizes[sizes >= 2].index)].reset_index(drop=True)


def aulc_table(results: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Normalised area under the learning curve (log2 train size) of the systems run at 2 or more sizes, all of a
    target's over the same ``sizes``: those every compared system was run at (a curve over more or larger sizes
    would not be comparable). A system that leaves fewer than 2 sizes shared is left out (``comparable_systems``), its
    row saying so in ``note`` with no AULC."""
    curve = learning_curve(results, metric, by=("target", "system"))
    rows = []
    for target, panel in curve.groupby("target"):
        sizes = {system: set(group["train_size"]) for system, group in panel.groupby("system")
                 if group["train_size"].nunique() >= 2}
        compared = comparable_systems(sizes)
        shared = sorted(set.intersection(*(sizes[s] for s in compared))) if compared else []
        for system in sorted(sizes):
            if system in compared:
                group = panel[(panel["system"] == system) & panel["train_size"].isin(shared)]
                rows.append({"target": target, "system": system, "sizes": _sizes(shared),
                             "aulc": aulc(group["train_size"], group["mean"]), "note": ""})
            else:
                rows.append({"target": target, "system": system, "sizes": "", "aulc": np.nan,
                             "note": f"left out: run at {_sizes(sizes[system])}, fewer than 2 of them among the "
                                     f"sizes {_sizes(shared)} shared by {', '.join(compared)}"})
    return pd.DataFrame(rows, columns=["target", "system", "sizes", "aulc", "note"]).sort_values(
        "aulc", ascending=False, na_position="last", ignore_index=True)


def _sizes(sizes) -> str:
    return ",".join(str(size) for size in sorted(sizes))


def comparable_systems(sizes: dict[str, set]) -> list[str]:
    """The systems (name -> the train sizes it was run at) whose shared sizes number 2 or more: all of them where
    they allow it, else leaving out one at a time the system whose absence shares the most sizes (on a tie, the
    one run at the fewest sizes)."""
    kept = sorted(sizes)

    def shared(systems) -> int:
        return len(set.intersection(*(sizes[s] for s in systems)))

    while len(kept) > 1 and shared(kept) < 2:
        kept.remove(max(kept, key=lambda s: (shared([o for o in kept if o != s]), -len(sizes[s]), s)))
    return kept


def _details(results: pd.DataFrame) -> list[dict]:
    check_columns(results, ["details"])
    return [json.loads(cell) if isinstance(cell, str) else (cell or {}) for cell in results["details"]]


def cka_by_layer(results: pd.DataFrame) -> pd.DataFrame:
    """Per system, the mean over runs of CKA(base layer i, adapted layer i): where each method changed the encoder.

    Representation fusion (no encoder of its own) has no rows; the linear probe's frozen encoder gives 1.
    """
    rows = []
    for system, details in zip(results["system"], _details(results)):
        matrix = details.get("cka_base_vs_adapted")
        if matrix:
            rows += [{"system": system, "layer": i, "cka": row[i]} for i, row in enumerate(matrix)]
    table = pd.DataFrame(rows, columns=["system", "layer", "cka"])
    return table.groupby(["system", "layer"], as_index=False)["cka"].mean()


def artefact_quality(results: pd.DataFrame) -> pd.DataFrame:
    """Every artefact (expert, teacher) each run used, with its accuracy on its own task's validation split:
    system, seed, strategy, task (an expert's source, e.g. "mr" or "mr-shuffled"; a teacher's target and the
    sources it went through, e.g. "cr via mr"), val_accuracy."""
    rows = [{"system": system, "seed": seed, "strategy": artefact.get("strategy"),
             "task": artefact.get("task") + (f" via {'+'.join(artefact['sources'])}"
                                             if artefact.get("sources") else ""),
             "val_accuracy": artefact.get("val_accuracy")}
            for system, seed, details in zip(results["system"], results["seed"], _details(results))
            for artefact in details.get("artefacts", [])]
    return pd.DataFrame(rows, columns=["system", "seed", "strategy", "task", "val_accuracy"])


def expert_quality(results: pd.DataFrame) -> pd.DataFrame:
    """One row per system that used artefacts: ``experts``, each one's mean validation accuracy on its own task
    over the seeds, its range and how many were trained, e.g. "mr 0.72 [0.70-0.74] x5"."""
    used = artefact_quality(results).dropna(subset=["val_accuracy"])
    rows = []
    for system, group in used.groupby("system", sort=False):
        summary = group.groupby("task")["val_accuracy"].agg(["mean", "min", "max", "count"])
        rows.append({"system": system, "experts": "; ".join(
            f"{task} {row['mean']:.2f} [{row['min']:.2f}-{row['max']:.2f}] x{int(row['count'])}"
            for task, row in summary.iterrows())})
    return pd.DataFrame(rows, columns=["system", "experts"])


SECONDS_COLUMNS = ("train_seconds", "expert_seconds", "train_seconds_with_experts", "train_seconds_amortised")
INFERENCE_COLUMNS = ("inference_params", "encoders_at_inference", "infer_ms_per_example", "model_flops")


def _artefact_identity(record: dict) -> str:
    """What a run's record says of an artefact it used (``artefact_record``), as one comparable string."""
    return json.dumps([record.get(k) for k in ("strategy", "task", "sources", "seed", "train_size", "val_accuracy")])


def saved_artefacts(workdir: str | Path) -> dict[str, list[tuple[Path, dict]]]:
    """Every artefact saved in a work folder (``<workdir>/<folder>/<name>/config.json``: experts, teachers), by
    ``_artefact_identity`` of the record a run keeps of it, each with its folder and spec."""
    found: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted(Path(workdir).glob("*/*/config.json")):
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged artefact: the runs that used it are then reported without their experts' cost
        history = spec.get("history") if isinstance(spec, dict) else None
        if not isinstance(history, dict) or "train_seconds" not in spec:
            continue
        scores = history.get("val_metric") or []
        record = {"strategy": spec.get("strategy"), "task": spec.get("target"), "sources": spec.get("sources", []),
                  "seed": spec.get("seed"), "train_size": spec.get("train_size"),
                  "val_accuracy": scores[history.get("best_epoch", -1)] if scores else None}
        found.setdefault(_artefact_identity(record), []).append((path.parent, spec))
    return found


def run_costs(results: pd.DataFrame, workdir: str | Path) -> pd.DataFrame:
    """``results`` with what each run cost including the artefacts it was fitted on (its experts, a teacher and the
    teacher's experts), found in ``workdir`` by the records its ``details`` keep of them: ``train_seconds`` (the run
    alone), ``expert_seconds`` (its artefacts), ``train_seconds_with_experts`` (both) and
    ``train_seconds_amortised`` (the run, plus each artefact's seconds divided by the runs of ``results`` that use
    it). An artefact the study did not train (a given model, knowledge features) costs nothing here; a trained one
    that is not in ``workdir`` leaves its runs' expert columns NaN, with a warning."""
    check_columns(results, ["run_id", "train_seconds"])
    saved = saved_artefacts(workdir)
    missing: set[str] = set()

    def trained(records: list[dict]) -> dict[Path, float] | None:
        """Folder -> own train seconds of every trained artefact the records lead to (None when one is missing)."""
        folders: dict[Path, float] = {}
        for record in records:
            if record.get("strategy") not in STRATEGIES:
                continue
            matches = saved.get(_artefact_identity(record))
            if not matches:
                missing.add(f"{record.get('strategy')} on {record.get('task')} (seed {record.get('seed')})")
                return None
            folder, spec = matches[0]
            below = trained(spec.get("artefacts", []))
            if below is None:
                return None
            folders.update({folder: float(spec["train_seconds"]), **below})
        return folders

    used = {run_id: trained(details.get("artefacts", []))
            for run_id, details in zip(results["run_id"], _details(results))}
    users = pd.Series([folder for folders in used.values() for folder in folders or {}]).value_counts()
    expert = {run_id: np.nan if folders is None else sum(folders.values()) for run_id, folders in used.items()}
    shares = {run_id: np.nan if folders is None else sum(s / users[f] for f, s in folders.items())
              for run_id, folders in used.items()}
    if missing:
        warnings.warn(f"artefacts not found under '{workdir}': {'; '.join(sorted(missing))}; the runs that used them "
                      f"are shown without their cost", FusionkitWarning, stacklevel=2)
    costs = results.assign(expert_seconds=results["run_id"].map(expert))
    return costs.assign(train_seconds_with_experts=costs["train_seconds"] + costs["expert_seconds"],
                        train_seconds_amortised=costs["train_seconds"] + results["run_id"].map(shares))


def cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """One row per system and train size of ``run_costs``: its runs, mean trainable parameters and mean seconds
    per run (``SECONDS_COLUMNS``), and, where the runs recorded them, what it runs at inference (parameters and
    encoders, frozen ones included), its inference milliseconds per example and its model FLOPs; most expensive
    first."""
    check_columns(costs, ["target", "system", "train_size", "trainable_params", *SECONDS_COLUMNS], "costs")
    keys = ["target", "system", "train_size", *(["role"] if "role" in costs else [])]
    grouped = _without_attrs(costs).groupby(keys, sort=False)
    inference = [column for column in INFERENCE_COLUMNS if column in costs]
    table = pd.concat([grouped["run_id"].nunique().rename("runs"),
                       grouped[["trainable_params", *SECONDS_COLUMNS, *inference]].mean()], axis=1)
    return table.reset_index().sort_values("train_seconds_with_experts", ascending=False, ignore_index=True)


def cka_matrix(results: pd.DataFrame, system: str) -> np.ndarray:
    """The [base layer, adapted layer] CKA matrix of one system, averaged over its runs."""
    chosen = results[results["system"] == system]
    matrices = [d["cka_base_vs_adapted"] for d in _details(chosen) if d.get("cka_base_vs_adapted")]
    if not matrices:
        raise InputError(f"no CKA matrix stored for system {system!r}")
    return np.mean(np.asarray(matrices, dtype=np.float64), axis=0)


def study_arms(config) -> pd.DataFrame:
    """What a study runs, one row per arm, read from the study itself: system, strategy, what the strategy does
    (``strategy_summary``), the sources it fuses, its train sizes and seeds (a seed-free run once), its own knobs,
    the search space it is tuned over, its matched controls (the first is the verdict's reference) and whether it
    is also run without each source."""
    rows = []
    for arm in config.arms:
        strategy = STRATEGIES[arm.strategy]
        roles = [c.role for i, c in enumerate(strategy.controls()) if not i or arm.controls is None or
                 c.role in arm.controls]
        if len(roles) > 1 and arm.per_source and arm.further_controls_for is not None:
            roles[1:] = [f"{role} (first {arm.further_controls_for} source(s) only)" for role in roles[1:]]
        sizes = arm.train_sizes or config.train_sizes
        seeds = ", ".join(str(seed) for seed in config.seeds)
        if None in sizes and strategy.seed_free(whole_train_split=True):
            seeds += f" (whole split: seed {config.seeds[0]} only, the result is the same for every seed)"
        rows.append({"system": arm.system + (" (each source)" if arm.per_source else ""), "strategy": arm.strategy,
                     "what": strategy_summary(strategy), "fuses": _fused(config, arm),
                     "train_sizes": ", ".join("whole split" if size is None else str(size) for size in sizes),
                     "seeds": seeds, "knobs": json.dumps(arm.knobs),
                     "search": json.dumps(arm.search if arm.search is not None else strategy.search_space),
                     "controls": ", ".join(roles), "leave_one_out": arm.leave_one_out})
    return pd.DataFrame(rows)


def strategy_summary(strategy) -> str:
    """What a strategy does, in its own words: the first paragraph of its class docstring, else its module's."""
    doc = strategy.__doc__ or sys.modules[strategy.__module__].__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].replace("``", "").split())


def _fused(config, arm) -> str:
    """The sources an arm's systems fuse: those of the study its strategy takes ("the target only" for a baseline)."""
    strategy = STRATEGIES[arm.strategy]
    if not strategy.needs_sources:
        return "the target only"
    usable = [name for name, entry in zip(config.source_names, config.sources)
              if entry_kind(entry) in strategy.usable_kinds(arm.knobs)]
    return ", ".join(usable) + (", one system each" if arm.per_source else "")


def attention_systems(results: pd.DataFrame) -> list[str]:
    """The fusion systems whose runs kept attention weights (pooled-attention representation fusion, AdapterFusion),
    in the order of the results."""
    if "role" in results:
        results = results[results["role"] == "fusion"]
    return [system for system, group in results.groupby("system", sort=False)
            if any("attention_weights" in d.get("arch", {}) for d in _details(group))]


def mean_attention_weights(results: pd.DataFrame, system: str | None = None
                           ) -> tuple[np.ndarray, list[str], list[int], str]:
    """Mean attention-fusion weights [layers, candidates] over the attention runs of a fusion system (not its
    controls or ablations, when ``results`` says which is which), the candidate names, the encoder layer of each
    row (0 = embeddings), and the system's name. ``system``: which one (None: the first that has them)."""
    systems = attention_systems(results)
    if not systems or (system is not None and system not in systems):
        raise InputError(f"no run of {system or 'an attention fusion system'} with attention weights in these "
                         f"results (representation fusion with mode='attention', or AdapterFusion)")
    system = system or systems[0]
    group = results[results["system"] == system]
    if "role" in group:
        group = group[group["role"] == "fusion"]
    found = [d["arch"] for d in _details(group) if "attention_weights" in d.get("arch", {})]
    weights = np.mean([np.asarray(arch["attention_weights"]) for arch in found], axis=0)
    layers = found[0].get("layers", list(range(1, len(weights) + 1)))
    return weights, found[0]["attention_sources"], layers, system


def source_gains(comparisons: pd.DataFrame, transferability: pd.DataFrame, strategy: str = "sequential") -> pd.DataFrame:
    """Observed gain of `strategy` from each single source beside that source's transferability scores."""
    check_columns(comparisons, ["strategy", "sources", "gain", "ci_low", "ci_high", "verdict"], "comparisons")
    single = comparisons[(comparisons["strategy"] == strategy) & ~comparisons["sources"].str.contains(",")]
    gains = single[["sources", "gain", "ci_low", "ci_high", "verdict"]].rename(columns={"sources": "source"})
    return transferability.merge(gains, on="source")


GEOMETRY_GAIN_COLUMNS = ["source", "mean_cosine", "gain_of", "gain", "ci_low", "ci_high", "verdict"]


def geometry_beside_gains(cosines: pd.DataFrame, knowledge: pd.DataFrame, leave_one_out: pd.DataFrame,
                          results: pd.DataFrame, train_size: int) -> pd.DataFrame:
    """Each source's task-vector geometry beside what it did at ``train_size``: ``mean_cosine`` is the mean cosine of
    its task vector with the other sources' (``cosines``: the square table of ``evaluation.geometry``, index the
    sources); one row per observed gain: ``gain_of`` "sequential" (the gain of sequential transfer from it over its
    matched control, from ``knowledge``) or a merge system (its contribution to that merge: the merge over all its
    sources against the same merge without it, from ``leave_one_out``), with the interval and verdict those
    comparisons read. A source neither gain exists for has no row."""
    check_columns(results, ["system", "strategy", "sources"], "results")
    names = [str(name) for name in cosines.index]
    values = cosines.loc[names, names].to_numpy(dtype=np.float64)
    others = len(names) - 1
    mean_cosine = {name: float((values[i].sum() - values[i, i]) / others) if others else np.nan
                   for i, name in enumerate(names)}
    systems = results.drop_duplicates("system").set_index("system")
    sources_of = {system: set(str(sources).split(",")) if pd.notna(sources) else set()
                  for system, sources in systems["sources"].items()}
    rows = []
    for _, row in knowledge[knowledge["train_size"] == train_size].iterrows():
        if systems["strategy"].get(row["system"]) == "sequential" and len(sources_of[row["system"]]) == 1:
            rows.append({"source": next(iter(sources_of[row["system"]])), "gain_of": "sequential", **row})
    for _, row in leave_one_out[leave_one_out["train_size"] == train_size].iterrows():
        if systems["strategy"].get(row["system"]) == "merge":
            left_out = sources_of[row["system"]] - sources_of.get(row["baseline"], set())
            if len(left_out) == 1:
                rows.append({"source": left_out.pop(), "gain_of": row["system"], **row})
    table = pd.DataFrame(rows, columns=GEOMETRY_GAIN_COLUMNS)
    table = table[table["source"].isin(names)].assign(mean_cosine=lambda t: t["source"].map(mean_cosine))
    return table[GEOMETRY_GAIN_COLUMNS].reset_index(drop=True)


def predictions_by_system(store, results: pd.DataFrame, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Test labels and each system's test probabilities for one seed (for reliability diagrams)."""
    chosen = results[results["seed"] == seed]
    if chosen.empty:
        raise InputError(f"no runs with seed {seed}")
    probs, labels = {}, None
    for row in chosen.itertuples():
        y, p = store.predictions(row.run_id)
        if labels is not None and not np.array_equal(labels, y):
            raise InputError(f"run {row.run_id} ({row.system}) was scored on a different test set")
        labels, probs[row.system] = y, p
    return labels, probs


def label_counts(tasks) -> pd.DataFrame:
    """Examples per task, split and label name, with each label's share of its split."""
    rows = []
    for task in tasks:
        for split, data in task.splits.items():
            labels = np.asarray(data["label"][:])
            rows += [{"task": task.name, "split": split, "label": name, "count": int((labels == index).sum()),
                      "share": float((labels == index).mean())} for index, name in enumerate(task.label_names)]
    return pd.DataFrame(rows)


def text_length_table(tasks, split: str = "train") -> pd.DataFrame:
    """Length in words of every text of one split of each task."""
    return pd.DataFrame([{"task": task.name, "words": len(text.split())}
                         for task in tasks for text in getattr(task, split)["text"][:]])


def task_overview(tasks) -> pd.DataFrame:
    """One row per task: split sizes, labels, where the data came from (a folder relative to the current one),
    and rows the loader dropped."""
    return pd.DataFrame([{"task": task.name, **{split: len(data) for split, data in task.splits.items()},
                          "labels": ", ".join(task.label_names), "dropped_rows": len(task.dropped_rows),
                          "origin": os.path.relpath(task.origin) if Path(task.origin).exists() else task.origin}
                         for task in tasks])


def dropped_rows_table(tasks) -> pd.DataFrame:
    """Every row a loader dropped: task, file, line and why."""
    return pd.DataFrame([{"task": task.name, "file": file, "line": line, "reason": reason}
                         for task in tasks for file, line, reason in task.dropped_rows],
                        columns=["task", "file", "line", "reason"])


def overlap_matrix(card: pd.DataFrame) -> pd.DataFrame:
    """An ``overlap_card`` as a matrix: rows (task, split), one column per other task, cells the texts that split
    shares with any split of the other task."""
    check_columns(card, ["task", "split", "other_task", "shared_texts"], "overlap card")
    return card.pivot_table(index=["task", "split"], columns="other_task", values="shared_texts", aggfunc="sum",
                            fill_value=0, sort=False)


def task_fingerprints(tasks) -> pd.DataFrame:
    """Each task's content fingerprint and what its loader did, in words."""
    return pd.DataFrame([{"task": t.name, "fingerprint": t.fingerprint(), "notes": " | ".join(t.notes)}
                         for t in tasks])


def majority_share(counts: pd.DataFrame, task: str, split: str = "test") -> float:
    """The largest label share of one split (a label_counts table): the accuracy of always guessing it."""
    return float(counts[(counts["task"] == task) & (counts["split"] == split)]["share"].max())


def examples_per_label(task, per_label: int = 3) -> pd.DataFrame:
    """The first few training texts of each label, with the label's name."""
    examples = task.train.to_pandas().groupby("label").head(per_label).sort_values("label")
    return examples.assign(label_name=[task.label_names[i] for i in examples["label"]])


def ranking_across_targets(results: pd.DataFrame):
    """Friedman test and Nemenyi critical difference of the systems run on every target, or None with fewer
    than 2 targets or 3 such systems (a ranking over datasets needs several of each)."""
    check_columns(results, ["target", "system", "accuracy"])
    grid = results.groupby(["target", "system"])["accuracy"].mean().unstack().dropna(axis=1)
    if len(grid) < 2 or grid.shape[1] < 3:
        return None
    return friedman_nemenyi(grid)


PROBE = "linear_probe"


def flag_failed_runs(results: pd.DataFrame, majority_rate: dict[str, float]) -> pd.DataFrame:
    """``results`` with a ``failed`` column (``evaluation.gains.failed_runs``): a run at or below its target's
    validation majority-class rate (``majority_rate``: target -> rate), or more than 10 points below the mean
    validation accuracy of the ``linear_probe`` runs at its target and train size (where the study ran them)."""
    check_columns(results, ["target", "system", "train_size", "val_accuracy"])
    probes = (results[results["system"] == PROBE].groupby(["target", "train_size"])["val_accuracy"].mean()
              if PROBE in set(results["system"]) else pd.Series(dtype=float))
    flags = pd.Series(False, index=results.index)
    for (target, size), group in results.groupby(["target", "train_size"]):
        probe = probes.get((target, size))
        flags[group.index] = failed_runs(group["val_accuracy"].to_numpy(float), majority_rate[target],
                                         None if probe is None else float(probe))
    return results.assign(failed=flags.to_numpy())


def failed_runs_sentence(results: pd.DataFrame, majority_rate: dict[str, float]) -> str:
    """The rule and the count, in words, for the page and the notebooks."""
    failed = results[results["failed"]] if "failed" in results else results.iloc[:0]
    rates = ", ".join(f"{target} {100 * rate:.1f}%" for target, rate in majority_rate.items())
    where = ("none" if failed.empty else "; ".join(
        f"{system} {len(group)} of {int((results['system'] == system).sum())}"
        for system, group in failed.groupby("system")))
    return (f"Failed runs (Dodge et al. 2020): a run whose validation accuracy is at or below the majority-class rate "
            f"of the validation split ({rates}) or more than {100 * FAILED_FAR_BELOW:.0f} points below the linear "
            f"probe's at the same training size. They stay in every mean and test, counted here: {where}.")



def variance_split_table(results: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Where each verdict's spread comes from (``stats.crossed_variance_components``): for every fusion system with
    a seed x data-seed grid (a study's ``variance_split``), its gain over its matched control in points on every
    (data seed, seed) pair, both sides trained on the same pair (the study's own runs on the diagonal, the
    ``variance`` runs elsewhere), split into the variance from the training examples drawn, from initialisation and
    order (the seed: also the experts' seed), and their interaction. Empty without such runs."""
    columns = ["system", "train_size", "data_seeds", "seeds", "data", "seed", "interaction", "share_data",
               "share_seed", "share_interaction"]
    grid_runs = _without_attrs(results[results["role"] == VARIANCE])
    if grid_runs.empty:
        return pd.DataFrame(columns=columns)
    data_seed = results["data_seed"] if "data_seed" in results else pd.Series(np.nan, index=results.index)
    frame = _without_attrs(results).assign(data_seed=data_seed.fillna(results["seed"]).astype(int))
    matched = dict(role_pairs(frame, CONTROL, primary=True))  # fusion system -> its matched control
    rows = []
    for (system, size), grid in grid_runs.groupby(["of", "train_size"]):
        control_name = matched[system]
        crossed = grid["system"] == f"{system}: {CROSSED}"  # the fusion system's; the others its control's
        fused = pd.concat([frame[(frame["system"] == system) & (frame["train_size"] == size)], grid[crossed]])
        control = pd.concat([frame[(frame["system"] == control_name) & (frame["train_size"] == size)],
                             grid[~crossed]])
        keys = ["data_seed", "seed"]
        gains = (fused.set_index(keys)[metric] - control.set_index(keys)[metric]).dropna() * 100
        table = gains.unstack("seed")
        seeds = sorted(set(grid["seed"]))
        table = table.loc[seeds, seeds] if set(seeds) <= set(table.index) and set(seeds) <= set(table.columns) \
            else table.dropna()
        if table.shape[0] < 2 or table.shape[1] < 2 or table.isna().any().any():
            continue
        components = crossed_variance_components(table.to_numpy())
        rows.append({"system": system, "train_size": size, **{c: components[c] for c in columns[2:]}})
    return pd.DataFrame(rows, columns=columns)


def retention_table(results: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """What each system's encoder kept of every source task's skill (``StudyConfig.retention_examples``): the
    retention probe's mean accuracy on the source's test examples over seeds (``skill``), the source expert's and
    the base encoder's by the same probe, and the forgetting in points, expert minus system paired by seed
    (``evaluation.gains.forgetting``), with its 95% paired t-interval. One row per system, train size and source,
    for the runs that measured it (an encoder of their own)."""
    columns = ["system", "role", "train_size", "source", "n_seeds", "skill", "expert", "base", "forgetting",
               "ci_low", "ci_high"]
    check_columns(references, ["seed", "source", "reference", "accuracy"], "references")
    expert = references[references["reference"] == "expert"].set_index(["source", "seed"])["accuracy"]
    base = references[references["reference"] == "base"].set_index("source")["accuracy"]
    rows = []
    for (system, size), group in results.groupby(["system", "train_size"], sort=False):
        skills = [(seed, d.get("source_skill")) for seed, d in zip(group["seed"], _details(group))]
        skills = [(seed, skill) for seed, skill in skills if skill]
        for source in sorted({name for _, skill in skills for name in skill}):
            paired = [(skill[source], expert[(source, seed)]) for seed, skill in skills
                      if source in skill and (source, seed) in expert.index]
            fused = [skill[source] for _, skill in skills if source in skill]
            row = {"system": system, "role": group["role"].iloc[0] if "role" in group else "", "train_size": size,
                   "source": source, "n_seeds": len(fused), "skill": float(np.mean(fused)),
                   "expert": float(np.mean([e for _, e in paired])) if paired else np.nan,
                   "base": float(base.get(source, np.nan)), "forgetting": np.nan, "ci_low": np.nan,
                   "ci_high": np.nan}
            if len(paired) >= 2:
                test = paired_t([100 * e for _, e in paired], [100 * f for f, _ in paired])
                row.update(forgetting=test.mean_difference, ci_low=test.ci_low, ci_high=test.ci_high)
            elif paired:
                row["forgetting"] = 100 * (paired[0][1] - paired[0][0])
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)
