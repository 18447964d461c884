"""The SentEval protocol for a frozen encoder (Conneau & Kiela 2018): logistic regression on pooled features.

10-fold cross-validation for MR, CR, SUBJ and MPQA (C chosen on a held-out tenth of each training fold);
the official test split for SST-2, SST-5 and TREC (C chosen on validation). Runs every task the data
folder holds; prints a table of accuracies and, last, ``mean_accuracy=XX.XX``.
Usage: python benchmarks/senteval_probe.py [--encoder minilm] [--data DIR]
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split

import fusionkit as fk
from fusionkit.errors import DataError
from fusionkit.modeling.features import FeatureCache

C_GRID = (0.1, 1.0, 10.0, 100.0)
CROSS_VALIDATED = ("mr", "cr", "subj", "mpqa")
OFFICIAL_SPLIT = ("sst2", "sst5", "trec")


def fit_best_c(x_train, y_train, x_val, y_val, seed: int) -> LogisticRegression:
    scored = []
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        scored.append(((model.predict(x_val) == y_val).mean(), c))
    best_c = max(scored)[1]
    return LogisticRegression(C=best_c, max_iter=3000, random_state=seed).fit(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))


def cross_validated_accuracy(features, labels, seed: int = 0) -> float:
    accuracies = []
    for train_idx, test_idx in StratifiedKFold(10, shuffle=True, random_state=seed).split(features, labels):
        inner_train, inner_val = train_test_split(train_idx, test_size=0.1, stratify=labels[train_idx],
                                                  random_state=seed)
        model = fit_best_c(features[inner_train], labels[inner_train], features[inner_val], labels[inner_val], seed)
        accuracies.append((model.predict(features[test_idx]) == labels[test_idx]).mean())
    return float(np.mean(accuracies))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    encoder = fk.load_encoder(args.encoder)
    cache = FeatureCache()
    results = {}
    for name in CROSS_VALIDATED + OFFICIAL_SPLIT:
        try:
            task = fk.load_task(name, data_dir=args.data)
        except DataError as err:
            print(f"{name}: skipped ({err})")
            continue
        splits = cache.task_features(encoder, task)
        labels = {k: np.asarray(v["label"]) for k, v in task.splits.items()}
        if name in CROSS_VALIDATED:  # SentEval pools the data and cross-validates; our split is irrelevant here
            results[name] = cross_validated_accuracy(np.concatenate(list(splits.values())),
                                                     np.concatenate(list(labels.values())))
        else:
            model = fit_best_c(splits["train"], labels["train"], splits["validation"], labels["validation"], 0)
            results[name] = float((model.predict(splits["test"]) == labels["test"]).mean())
        print(f"{name:>5}: {100 * results[name]:.2f}", flush=True)
    print(f"\n| encoder | {' | '.join(results)} |\n|---|{'---|' * len(results)}")
    print(f"| {args.encoder} | {' | '.join(f'{100 * v:.2f}' for v in results.values())} |")
    print(f"mean_accuracy={100 * np.mean(list(results.values())):.2f}")


if __name__ == "__main__":
    main()
