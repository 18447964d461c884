"""Is fine-tuning at n=128 a control worth beating? The small-data recipe against the one it replaced and the probe.

On each of the five shared tasks, at n=128 (the fusion size of the quick and matrix profiles) and with the matrix
profile's caps (validation and test), this trains, for every seed:

* ``probe``: the linear probe (frozen MiniLM, logistic regression, C=1), the floor;
* ``before``: fine-tuning as the matrix profile ran it before this recipe (lr 5e-5, 6 epochs, patience 2, early
  stopping on 100 validation examples);
* ``after``: fine-tuning with the knobs the matrix profile's ``finetune`` arm runs now (``--profile``), i.e.
  the recipe every fine-tuning family gets through the profile's ``train_knobs``.

Seeds alternate between the arms (A/B), so machine noise hits all three. Test accuracy is read only here, to
report; the recipe was chosen on validation (see the profile's comment). Prints a table (mean and seed SD of test
accuracy in points, failed runs, seconds per run) and, last, ``finetune_minus_probe_min=`` (the smallest, over the
tasks, of the after recipe's mean minus the probe's: >= 0 is the target).
With ``--split K`` it instead crosses K data seeds (which 128 training examples are drawn) with K seeds
(initialisation and order; ``Strategy.fit(data_seed=...)``) for every arm and splits each arm's spread of test
accuracy into the two (``stats.crossed_variance_components``, Bouthillier et al. 2021): the probe's spread is the
draw of the examples alone, the floor a recipe cannot remove; the recipe can only shrink the rest. Last line:
``seed_sd_after_over_before=`` (the largest, over the tasks, of the after recipe's seed SD over the before one's).
Usage: python benchmarks/finetune_recipe.py [--tasks mr,sst2] [--seeds 5] [--data DIR] [--profile matrix]
       [--split 4]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import fusionkit as fk
from fusionkit.evaluation.gains import failed_runs
from fusionkit.evaluation.stats import crossed_variance_components
from fusionkit.study.profiles import profile_parameters
from fusionkit.study.runner import Arm, StudyConfig, arm_knobs

TASKS = ("cr", "mr", "subj", "trec", "sst2")
SIZE = 128
BEFORE = {"lr": 5e-5, "epochs": 6, "patience": 2, "batch_size": 16}
BEFORE_VALIDATION_CAP = 100


def after_knobs(profile: str) -> dict:
    """The finetune arm's knobs as the profile's study resolves them (its train_knobs, then the arm's own)."""
    parameters = profile_parameters(profile)
    arm = next(a for a in parameters["baseline_arms"] if a["system"] == "finetune")
    config = StudyConfig("cr", [], [Arm(**arm)], train_knobs=parameters["train_knobs"])
    return arm_knobs(config.arms[0], config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", default=os.environ.get("FUSIONKIT_DATA", "../shared/data/senteval"))
    parser.add_argument("--profile", default="matrix")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", type=int, default=0, help="cross K data seeds with K seeds (0: seeds only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parameters = profile_parameters(args.profile)
    arms = {"probe": ("linear_probe", {}), "before": ("finetune", BEFORE),
            "after": ("finetune", after_knobs(args.profile))}
    print(f"after = {arms['after'][1]}", flush=True)
    grid = [(s, d) for s in range(args.split) for d in range(args.split)] or [(s, None) for s in range(args.seeds)]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.tasks.split(","):
            whole = fk.load_task(name, data_dir=args.data).capped("test", parameters["test_cap"])
            tasks = {arm: whole.capped("validation", BEFORE_VALIDATION_CAP if arm == "before" else
                                       parameters["validation_cap"]) for arm in arms}
            labels = np.asarray(whole.test["label"][:])
            for seed, data_seed in grid:
                for arm, (strategy, knobs) in arms.items():
                    task = tasks[arm]
                    majority = float(np.bincount(np.asarray(task.validation["label"][:])).max() / len(task.validation))
                    start = time.perf_counter()
                    quiet = {**knobs, "progress": False} if strategy == "finetune" else knobs
                    fitted = fk.get_strategy(strategy, quiet, encoder=parameters["encoder"], workdir=workdir,
                                             max_length=parameters["max_length"]).fit(task, seed=seed, train_size=SIZE,
                                                                                      data_seed=data_seed)
                    history = fitted.history
                    rows.append({"task": name, "arm": arm, "seed": seed, "data_seed": data_seed,
                                 "seconds": time.perf_counter() - start,
                                 "test": 100 * float((fitted.predict(task.test) == labels).mean()),
                                 "val": float(history.val_metric[history.best_epoch]), "steps": history.steps,
                                 "majority": majority})
                    print(f"{name} seed {seed} data seed {data_seed} {arm:6} test {rows[-1]['test']:.1f} val "
                          f"{rows[-1]['val']:.3f} steps {history.steps} {rows[-1]['seconds']:.0f}s", flush=True)
    frame = pd.DataFrame(rows)
    if args.split:
        split_table(frame)
        return
    probe_val = frame[frame["arm"] == "probe"].groupby("task")["val"].mean()
    frame["failed"] = [bool(failed_runs([v], m, probe_val[t])[0]) if a != "probe" else False
                       for t, a, v, m in zip(frame["task"], frame["arm"], frame["val"], frame["majority"])]
    table = frame.groupby(["task", "arm"]).agg(mean=("test", "mean"), sd=("test", "std"), failed=("failed", "sum"),
                                               seconds=("seconds", "mean"), steps=("steps", "mean")).round(2)
    print(table.unstack("arm").to_string())
    means = table["mean"].unstack("arm")
    print(f"seconds per fine-tuning run: before {frame[frame.arm == 'before'].seconds.mean():.1f}, after "
          f"{frame[frame.arm == 'after'].seconds.mean():.1f}")
    print(f"finetune_minus_probe_min={float((means['after'] - means['probe']).min()):.2f}")


def split_table(frame: pd.DataFrame) -> None:
    """Per task and arm: the seed SD of test accuracy over the whole grid and its parts (square roots of the
    variance components; ``sd_recipe`` is the part a recipe controls, initialisation and order with their
    interaction with the draw), then the after recipe's seed part against the before one's."""
    rows = []
    for (task, arm), runs in frame.groupby(["task", "arm"], sort=False):
        grid = runs.pivot(index="data_seed", columns="seed", values="test").to_numpy()
        parts = crossed_variance_components(grid)
        rows.append({"task": task, "arm": arm, "mean": grid.mean(), "sd": grid.std(ddof=1),
                     "sd_data": parts["data"] ** 0.5, "sd_seed": parts["seed"] ** 0.5,
                     "sd_interaction": parts["interaction"] ** 0.5,
                     "sd_recipe": (parts["seed"] + parts["interaction"]) ** 0.5, "share_data": parts["share_data"]})
    table = pd.DataFrame(rows).round(2)
    print(table.to_string(index=False))
    seed_sd = table.pivot(index="task", columns="arm", values="sd_seed")
    print(f"seed_sd_after_over_before={float((seed_sd['after'] / seed_sd['before']).max()):.2f}")


if __name__ == "__main__":
    main()
