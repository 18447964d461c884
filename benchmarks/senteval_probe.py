"""The SentEval protocol for a frozen encoder (Conneau & Kiela 2018): logistic regression on pooled features.

10-fold cross-validation for MR, CR, SUBJ and MPQA (C chosen on a held-out tenth of each training fold);
the official test split for SST-2 and SST-5 (C chosen on the official dev split, the model trained on train)
and TREC (no official dev: C chosen by 10-fold cross-validation on the whole training file, then the model
trained on all of it). Runs every task the data folder holds; prints a table of accuracies and, last,
``mean_accuracy=XX.XX``.
Usage: python benchmarks/senteval_probe.py [--encoder minilm] [--data DIR] [--tasks trec,sst2]
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
OFFICIAL_DEV = ("sst2", "sst5")
OFFICIAL_TEST_ONLY = ("trec",)


def fit_best_c(x_train, y_train, x_val, y_val, seed: int) -> LogisticRegression:
    scored = []
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        scored.append(((model.predict(x_val) == y_val).mean(), c))
    best_c = max(scored)[1]
    return LogisticRegression(C=best_c, max_iter=3000, random_state=seed).fit(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))


def cross_validated_c(features, labels, seed: int) -> float:
    """The C of the grid with the best mean accuracy over a stratified 10-fold split of (features, labels)."""
    folds = list(StratifiedKFold(10, shuffle=True, random_state=seed).split(features, labels))
    scores = {c: np.mean([(LogisticRegression(C=c, max_iter=3000, random_state=seed)
                           .fit(features[train], labels[train]).predict(features[held]) == labels[held]).mean()
                          for train, held in folds]) for c in C_GRID}
    return max(scores, key=scores.get)


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
    parser.add_argument("--tasks", default=",".join(CROSS_VALIDATED + OFFICIAL_DEV + OFFICIAL_TEST_ONLY))
    args = parser.parse_args()
    encoder = fk.load_encoder(args.encoder)
    cache = FeatureCache()
    results = {}
    for name in args.tasks.split(","):
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
        elif name in OFFICIAL_DEV:
            scored = {c: (LogisticRegression(C=c, max_iter=3000, random_state=0).fit(splits["train"], labels["train"])
                          .predict(splits["validation"]) == labels["validation"]).mean() for c in C_GRID}
            model = LogisticRegression(C=max(scored, key=scored.get), max_iter=3000, random_state=0)
            model.fit(splits["train"], labels["train"])
            results[name] = float((model.predict(splits["test"]) == labels["test"]).mean())
        else:  # the whole training file: fusionkit's carved validation goes back in, C comes from inner CV
            features = np.concatenate([splits["train"], splits["validation"]])
            targets = np.concatenate([labels["train"], labels["validation"]])
            model = LogisticRegression(C=cross_validated_c(features, targets, 0), max_iter=3000, random_state=0)
            model.fit(features, targets)
            results[name] = float((model.predict(splits["test"]) == labels["test"]).mean())
        print(f"{name:>5}: {100 * results[name]:.2f}", flush=True)
    print(f"\n| encoder | {' | '.join(results)} |\n|---|{'---|' * len(results)}")
    print(f"| {args.encoder} | {' | '.join(f'{100 * v:.2f}' for v in results.values())} |")
    print(f"mean_accuracy={100 * np.mean(list(results.values())):.2f}")


if __name__ == "__main__":
    main()
