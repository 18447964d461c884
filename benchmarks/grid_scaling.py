"""A study grid run in one process (local) against Ray (one worker per core, one torch thread each).

The grid: 16 MiniLM fine-tunes at n=64 on CR (2 epochs; 16 seeds), stored in a fresh work folder per round.
A warm-up round of each arm (``--warmup`` runs, in its own work folder, not counted) first fills the page cache,
starts Ray's workers and loads what a process loads once, so the rounds compare steady states.
The arms alternate (local, ray, local, ray, ...) so machine noise hits both. Prints each round's wall time and
training throughput (training examples seen per second of wall time, summed over the grid), then, last,
``grid_speedup=X.XX`` (local wall time / ray wall time, medians over rounds; target on 2 cores: >= 1.3).
Usage: python benchmarks/grid_scaling.py [--rounds 2] [--runs 16] [--warmup 2] [--data DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import ray
import torch

from fusionkit.study import RayExecutor, run_study, study_config


def grid(workdir: str, data: str | None, runs: int):
    arms = [{"system": "finetune", "strategy": "finetune", "train_sizes": [64]}]
    return study_config("quick", "baselines", "cr", [], workdir, data, overrides={
        "seeds": list(range(runs)), "baseline_arms": arms, "cka_examples": 8,
        "train_knobs": {"epochs": 2, "patience": 2, "batch_size": 16}})


def timed(config, executor) -> tuple[float, float]:
    start = time.perf_counter()
    results = run_study(config, progress=False, executor=executor)
    seconds = time.perf_counter() - start
    examples = 64 * 2 * len(results)  # two epochs of 64 examples per run (early stopping may end one sooner)
    return seconds, examples / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="runs per arm in the uncounted warm-up round (0: none)")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    cores = torch.get_num_threads()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    walls = {"local": [], "ray": []}

    def executor(name: str):
        return "local" if name == "local" else RayExecutor(workers=cores)

    if args.warmup:
        for name in walls:
            seconds, _ = timed(grid(tempfile.mkdtemp(prefix=f"grid-warmup-{name}-"), args.data, args.warmup),
                               executor(name))
            print(f"warm-up {name:>5}: {seconds:7.1f} s wall over {args.warmup} runs (not counted)", flush=True)
    for round_index in range(args.rounds):
        for name in walls:
            seconds, throughput = timed(grid(tempfile.mkdtemp(prefix=f"grid-{name}-"), args.data, args.runs),
                                        executor(name))
            walls[name].append(seconds)
            print(f"round {round_index + 1} {name:>5}: {seconds:7.1f} s wall, {throughput:6.1f} training "
                  f"examples/s over {args.runs} runs ({cores} cores)", flush=True)
    ray.shutdown()
    print(f"grid_speedup={statistics.median(walls['local']) / statistics.median(walls['ray']):.2f}")


if __name__ == "__main__":
    main()
