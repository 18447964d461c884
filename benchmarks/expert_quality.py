"""Are the experts experts? Each source expert of the matrix profile against linear probes of the base encoder.

For every task of the shared pool as a source (the matrix profile's expert knobs: 2,000 source examples, early
stopping on the source's validation split, the pool's evaluation texts dropped), the first seed's expert is scored
on its source's test split beside two probes of the base encoder on the same split: one fitted on the expert's own
training examples, one on the whole training split (``study.source_scores.expert_quality``, the table notebook 03
shows). Prints the table and, last, ``experts_below_probe=`` (how many experts do not beat the probe fitted on
their own examples: 0 is the target).
With ``--workdir`` (a report's work folder, e.g. runs/matrix) and ``--seeds``, the experts a study trained there are
scored instead of new ones (every seed's: the committed matrix report's 15 experts with ``--seeds 0,1,2``).
With ``--target`` and ``--sources``, the experts are a single-target report's (the study notebook 03 runs): e.g.
``--profile families --target cr --sources mr,subj,trec --workdir runs/families-cr --seeds 0,1,2``.
Usage: python benchmarks/expert_quality.py [--pool cr,mr,subj,trec,sst2] [--data DIR] [--profile matrix]
       [--workdir runs/matrix --seeds 0,1,2] [--target cr --sources mr,subj,trec]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import pandas as pd
import torch

from fusionkit.study.profiles import matrix_configs, study_config
from fusionkit.study.source_scores import expert_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="cr,mr,subj,trec,sst2")
    parser.add_argument("--data", default=os.environ.get("FUSIONKIT_DATA", "../shared/data/senteval"))
    parser.add_argument("--profile", default="matrix")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="score the experts stored in this work folder")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's first)")
    parser.add_argument("--target", default=None, help="a single-target report's target (with --sources)")
    parser.add_argument("--sources", default=None, help="that report's sources, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = args.pool.split(",")
    if bool(args.target) != bool(args.sources):
        parser.error("--target and --sources go together")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        if args.target:  # one study: its sources' experts
            configs = [study_config(args.profile, "fusion", args.target, args.sources.split(","), workdir, args.data)]
        else:
            configs = matrix_configs(args.profile, pool, workdir, args.data)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [configs[0].seeds[0]]
        tables = []
        for seed in seeds:
            tables.append(expert_quality(configs[0], seed).assign(seed=seed))  # the first target's sources
            if len(configs) > 1:  # a pool: the first target is a source of the second
                tables.append(expert_quality(configs[1], seed).assign(seed=seed)
                              .query(f"source == '{configs[0].target}'"))
    table = pd.concat(tables, ignore_index=True)
    columns = ["source", "seed", "train_size", "epochs_run", "train_seconds", "source_val_accuracy",
               "source_test_accuracy", "probe_same_examples_test_accuracy", "probe_whole_split_test_accuracy",
               "probe_whole_split_train_size", "clears_probe"]
    print(table[columns].round(3).to_string(index=False))
    print(f"experts_below_probe={int((~table['clears_probe'].astype(bool)).sum())}")


if __name__ == "__main__":
    main()
