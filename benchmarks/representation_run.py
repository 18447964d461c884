"""Where a representation run's time goes once its frozen encoders' features are cached.

A quick-profile ``representation pooled-attention`` system (attention over every layer of the base MiniLM and
three experts, MR, SUBJ and TREC) at n=128 on CR, with its matched control, on one seed. The first study call
trains the experts (small ones here: 200 examples, 1 epoch, since only the time after them is measured) and
fills the feature cache; every later round removes the stored results only, so each run is fitted again on
cached features. Prints the phases of a warm round (cProfile, cumulative seconds per phase, summed over the
round's runs), then, last, ``representation_run_seconds=X.XX``: the median over rounds of one fusion run's wall
time from the start of its fit to its stored record (target: at most 2 on this 2-core machine).
Usage: python benchmarks/representation_run.py [--rounds 3] [--data DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import tempfile
import time

import fusionkit.study.runner as runner_module
from fusionkit.study import run_study, study_config

PHASES = {  # phase -> (file suffix, function name) whose cumulative time it is
    "load experts (safetensors)": ("strategies/base.py", "load"),
    "encoder fingerprints": ("modeling/encoders.py", "weights_fingerprint"),  # Encoder.fingerprint and frozen experts
    "feature cache reads": ("modeling/features.py", "features"),
    "training loop (fusion layer)": ("modeling/training.py", "train_loop"),
    "inference timing sample": ("strategies/base.py", "predict_proba"),
    "store the record": ("study/store.py", "put"),
}


def config(workdir: str, data: str | None):
    arms = [{"system": "representation pooled-attention", "strategy": "representation", "controls": [],
             "knobs": {"mode": "attention", "layers": "all", "patience": 5}}]
    return study_config("quick", "fusion", "cr", ["mr", "subj", "trec"], workdir, data, overrides={
        "seeds": [0], "fusion_arms": arms, "tuning_budget": 1,
        "expert_knobs": {"expert_train_size": 200, "expert_epochs": 1, "expert_validation_size": 64}})


def phase_table(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats
    table = {}
    for phase, (suffix, name) in PHASES.items():
        table[phase] = sum(entry[3] for (path, _, function), entry in stats.items()
                           if path.endswith(suffix) and function == name)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=os.environ.get("FUSIONKIT_DATA"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        study = config(workdir, args.data)
        start = time.perf_counter()
        run_study(study, progress=False)
        print(f"first call (experts trained, features cached): {time.perf_counter() - start:.1f} s")
        run_seconds: dict[str, list[float]] = {}
        original = runner_module.StudyRunner.run

        def timed(self, run, required):
            began = time.perf_counter()
            original(self, run, required)
            run_seconds.setdefault(run["strategy"] + (" (fusion)" if run["sources"] else " (control)"),
                                   []).append(time.perf_counter() - began)

        runner_module.StudyRunner.run = timed
        per_round, phases = [], {}
        for round_ in range(args.rounds):
            shutil.rmtree(f"{workdir}/results")
            profile = cProfile.Profile()
            start = time.perf_counter()
            profile.enable()
            results = run_study(study, progress=False)
            profile.disable()
            per_round.append(run_seconds["representation (fusion)"][-1])
            phases = phase_table(profile)
            print(f"round {round_ + 1}: {len(results)} runs in {time.perf_counter() - start:.2f} s; the fusion run "
                  f"{per_round[-1]:.2f} s, its control {run_seconds['representation (control)'][-1]:.2f} s")
        runner_module.StudyRunner.run = original
    print("phases of the last round (cumulative seconds over its runs):")
    for phase, seconds in phases.items():
        print(f"  {phase:<32} {seconds:6.2f}")
    print(f"representation_run_seconds={statistics.median(per_round):.2f}")


if __name__ == "__main__":
    main()
