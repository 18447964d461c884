"""Ten linear_probe fits on SST-2 (different seeds) with and without the feature cache, alternated.

Without the cache every fit re-encodes train, validation and test; with it, only the first fit does.
Prints per-fit seconds and, last, ``cache_speedup=X.X`` (target: >= 8).
Usage: python benchmarks/feature_cache.py [--fits 10] [--data DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import fusionkit as fk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=10)
    parser.add_argument("--data", default=None, help="SentEval folder (default: FUSIONKIT_DATA)")
    parser.add_argument("--encoder", default="minilm")
    args = parser.parse_args()
    task = fk.load_task("sst2", data_dir=args.data)
    shared = tempfile.mkdtemp(prefix="fk-cache-bench-")
    timings = {"cached": [], "uncached": []}
    for seed in range(args.fits):
        for arm in ("uncached", "cached"):  # alternate A/B so machine noise hits both arms alike
            workdir = shared if arm == "cached" else tempfile.mkdtemp(prefix="fk-nocache-")
            start = time.perf_counter()
            fk.get_strategy("linear_probe", encoder=args.encoder, workdir=workdir).fit(task, seed=seed)
            timings[arm].append(time.perf_counter() - start)
            print(f"seed {seed} {arm:>8}: {timings[arm][-1]:6.1f} s", flush=True)
    total = {arm: sum(values) for arm, values in timings.items()}
    print(f"ten fits: uncached {total['uncached']:.1f} s, cached {total['cached']:.1f} s "
          f"(the first cached fit fills the cache)")
    print(f"cache_speedup={total['uncached'] / total['cached']:.1f}")


if __name__ == "__main__":
    main()
