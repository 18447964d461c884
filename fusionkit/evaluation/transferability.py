"""Score a source for a target before fusing (LogME, LEEP, H-score, NCE, text-embedding similarity) and check
scores against real gains."""
from __future__ import annotations

import numpy as np
import scipy.stats

from fusionkit.errors import InputError
from fusionkit.evaluation.metrics import as_checked_array, as_labels, as_probs, check_lengths

_LOGME_MAX_ITERATIONS = 100
# Relative change of lambda = alpha / beta at which the fixed point counts as reached (You et al. use 1e-2).
_LOGME_TOLERANCE = 1e-3
# Keeps alpha and beta finite when a class is fit exactly (n <= d) or carries no signal at all.
_LOGME_FLOOR = 1e-12


def _features_and_labels(features, labels) -> tuple[np.ndarray, np.ndarray]:
    matrix = as_checked_array(features, "features", ndim=2).astype(np.float64)
    classes = as_labels(labels, "labels")
    check_lengths(features=matrix, labels=classes)
    return matrix, classes


def _posterior_terms(alpha: float, beta: float, singular: np.ndarray, projected: np.ndarray,
                     target_sq: float) -> tuple[float, float]:
    """||m||^2 and ||y - F m||^2 for the posterior mean m of Bayesian linear regression, in the SVD basis."""
    coefficients = beta * singular * projected / (alpha + beta * singular ** 2)
    residual = target_sq - (projected ** 2).sum() + ((projected - singular * coefficients) ** 2).sum()
    return max((coefficients ** 2).sum(), _LOGME_FLOOR), max(residual, _LOGME_FLOOR)


def _max_log_evidence(singular: np.ndarray, projected: np.ndarray, target_sq: float, n: int, d: int) -> float:
    """Log evidence per example of y = F w + noise, maximised over alpha (prior) and beta (noise precision)."""
    eigenvalues = singular ** 2
    alpha, beta = 1.0, 1.0
    for _ in range(_LOGME_MAX_ITERATIONS):
        weight_sq, residual_sq = _posterior_terms(alpha, beta, singular, projected, target_sq)
        gamma = (beta * eigenvalues / (alpha + beta * eigenvalues)).sum()
        new_alpha, new_beta = gamma / weight_sq, (n - gamma) / residual_sq
        converged = abs(new_alpha / new_beta - alpha / beta) <= _LOGME_TOLERANCE * alpha / beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    weight_sq, residual_sq = _posterior_terms(alpha, beta, singular, projected, target_sq)
    # Directions outside the features' span have eigenvalue 0 and contribute log(alpha) each.
    log_det = np.log(alpha + beta * eigenvalues).sum() + (d - len(singular)) * np.log(alpha)
    evidence = (d * np.log(alpha) + n * np.log(beta) - log_det - beta * residual_sq - alpha * weight_sq
                - n * np.log(2 * np.pi))
    return float(evidence / (2 * n))


def logme(features, labels) -> float:
    """LogME (You et al. 2021): mean over classes of the maximised log evidence per example of a linear
    model from `features` [n, d] to the class indicator. Higher means the features suit the labels better.
    """
    matrix, classes = _features_and_labels(features, labels)
    n, d = matrix.shape
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    evidences = []
    for label in np.unique(classes):
        indicator = (classes == label).astype(np.float64)
        evidences.append(_max_log_evidence(singular, left.T @ indicator, indicator @ indicator, n, d))
    return float(np.mean(evidences))


def leep(source_probs, target_labels) -> float:
    """LEEP (Nguyen et al. 2020): mean log of the expected empirical prediction for each target label.

    source_probs [n, k_source] are the source model's probabilities on the target examples.
    """
    theta = as_probs(source_probs, "source_probs")
    labels = as_labels(target_labels, "target_labels")
    n = check_lengths(source_probs=theta, target_labels=labels)
    joint = np.eye(labels.max() + 1)[labels].T @ theta / n  # P(y, z): [k_target, k_source]
    source_marginal = joint.sum(axis=0)
    conditional = np.divide(joint, source_marginal, out=np.zeros_like(joint), where=source_marginal > 0)
    return float(np.log((theta * conditional[labels]).sum(axis=1)).mean())


def hscore(features, labels, shrinkage: bool | None = None) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f | y])), how much of the feature variance separates classes.

    With fewer examples than feature dimensions the sample covariance is singular and the plain score
    collapses to (number of classes - 1) for any features. ``shrinkage`` then gives the regularised H-score
    of Ibrahim et al. (2022), tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | y])), where cov_alpha is the Ledoit-Wolf
    shrunk covariance and alpha its shrinkage (scikit-learn's ``ledoit_wolf``); None chooses it exactly when
    n <= dimensions. Since alpha depends on the features, the (1 - alpha) factor can change which source ranks
    first.
    """
    matrix, classes = _features_and_labels(features, labels)
    _, class_index = np.unique(classes, return_inverse=True)
    sums = np.zeros((class_index.max() + 1, matrix.shape[1]))
    np.add.at(sums, class_index, matrix)
    class_means = (sums / np.bincount(class_index)[:, None])[class_index]
    if shrinkage is None:
        shrinkage = len(matrix) <= matrix.shape[1]
    between_cov = np.atleast_2d(np.cov(class_means, rowvar=False))
    if shrinkage:
        from sklearn.covariance import ledoit_wolf

        feature_cov, alpha = ledoit_wolf(matrix)
        between_cov = (1 - alpha) * between_cov
    else:
        feature_cov = np.atleast_2d(np.cov(matrix, rowvar=False))
    return float(np.trace(np.linalg.pinv(feature_cov, hermitian=True) @ between_cov))


def nce(source_labels, target_labels) -> float:
    """NCE (Tran et al. 2019): -H(Y_target | Y_source) from the empirical joint of the two label vectors."""
    source, target = as_labels(source_labels, "source_labels"), as_labels(target_labels, "target_labels")
    n = check_lengths(source_labels=source, target_labels=target)
    n_target = target.max() + 1
    joint = np.bincount(source * n_target + target, minlength=(source.max() + 1) * n_target)
    joint = joint.reshape(-1, n_target) / n  # P(z, y)
    conditional = np.divide(joint, joint.sum(axis=1, keepdims=True), out=np.ones_like(joint), where=joint > 0)
    return float((joint * np.log(conditional)).sum())


def text_embedding_similarity(source_embeddings, target_embeddings) -> float:
    """The cosine similarity of the mean embedding of a source's texts and of the target's (TextEmb, Vu et al.
    2020, "Exploring and Predicting Transferability across NLP Tasks"; SEmb with sentence embeddings, Poth et al.
    2021, "What to Pre-Train on? Efficient Intermediate Task Selection"): the cheapest task-selection estimator,
    which needs no expert, only the base encoder's embeddings of both tasks' texts [n, d]."""
    source = as_checked_array(source_embeddings, "source_embeddings", ndim=2)
    target = as_checked_array(target_embeddings, "target_embeddings", ndim=2)
    if source.shape[1] != target.shape[1]:
        raise InputError(f"source_embeddings have {source.shape[1]} dimensions but target_embeddings "
                         f"{target.shape[1]}: embed both with the same encoder")
    a, b = source.mean(axis=0), target.mean(axis=0)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        raise InputError("a mean embedding is zero: cosine similarity is undefined")
    return float(a @ b / norms)


EXACT_UP_TO = 6  # pairs: up to 6! = 720 orderings (0.3 s), rank correlations get exact permutation p-values


def rank_correlation(predicted, observed) -> dict[str, float]:
    """Kendall's tau and Spearman's rho (with two-sided p-values) between transferability scores and observed gains.

    With at most ``EXACT_UP_TO`` pairs the p-values are exact over all orderings of ``predicted``
    (``scipy.stats.permutation_test`` enumerates them; two-sided as twice the smaller tail, which for the symmetric
    null distribution of a rank correlation is the share reaching |statistic|), since the large-sample
    approximations are wrong there (Spearman's t-approximation gives p = 0 for rho = 1 over 3 pairs; the exact p is
    2/6 = 0.33). ``p_method`` says which was used."""
    predicted = as_checked_array(predicted, "predicted", ndim=1).astype(np.float64)
    observed = as_checked_array(observed, "observed", ndim=1).astype(np.float64)
    n = check_lengths("pairs", predicted=predicted, observed=observed)
    if n < 3:
        raise InputError(f"a rank correlation needs at least 3 (predicted, observed) pairs, got {n}")
    kendall = scipy.stats.kendalltau(predicted, observed)
    spearman = scipy.stats.spearmanr(predicted, observed)
    result = {"kendall_tau": float(kendall.statistic), "kendall_p": float(kendall.pvalue),
              "spearman_rho": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
              "p_method": "asymptotic"}
    if n <= EXACT_UP_TO and np.ptp(predicted) > 0 and np.ptp(observed) > 0:
        for name, statistic in (("kendall", lambda x: scipy.stats.kendalltau(x, observed).statistic),
                                ("spearman", lambda x: scipy.stats.spearmanr(x, observed).statistic)):
            test = scipy.stats.permutation_test((predicted,), statistic, permutation_type="pairings",
                                                alternative="two-sided", n_resamples=np.inf)
            result[f"{name}_p"] = float(test.pvalue)
        result["p_method"] = f"exact (all {int(np.prod(np.arange(1, n + 1)))} orderings)"
    return result
