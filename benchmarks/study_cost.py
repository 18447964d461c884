"""Runs per hour of the quick profile's run mix on this machine: its baselines and fusion systems on CR (sources MR,
SUBJ, TREC) with every control, tuning run and expert the quick profile plans, for ``--seeds`` seeds, from an empty
work folder, on the local executor or Ray (2 workers). Prints the wall time, the runs and experts trained, the
workers' busy fraction, then, last, ``runs_per_hour=X`` (runs trained per hour of wall time; experts are counted in
the time, not in the runs). Run it at two commits to compare (one after the other on a quiet machine).
Usage: python benchmarks/study_cost.py [--seeds 1] [--executor ray] [--data DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fusionkit.study import RayExecutor, run_study, study_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--executor", choices=["local", "ray"], default="ray")
    parser.add_argument("--data", default=os.environ.get("FUSIONKIT_DATA"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        start, trained, busy = time.perf_counter(), 0, []
        for part in ("baselines", "fusion"):
            config = study_config("quick", part, "cr", ["mr", "subj", "trec"], workdir, args.data,
                                  overrides={"seeds": list(range(args.seeds))})
            executor = RayExecutor(workers=2) if args.executor == "ray" else "local"
            results = run_study(config, progress=False, executor=executor)
            trained += results.attrs["runs_trained"]
            busy.append(results.attrs.get("busy_fraction"))
        seconds = time.perf_counter() - start
        experts = sum(1 for path in (Path(workdir) / "experts").glob("*") if path.is_dir())
    print(f"{trained} runs and {experts} experts trained in {seconds / 60:.1f} min on {args.executor} "
          f"({args.seeds} seed(s)); workers busy {', '.join(f'{b:.0%}' for b in busy if b is not None)} of the time")
    print(f"runs_per_hour={trained / seconds * 3600:.0f}")


if __name__ == "__main__":
    main()
