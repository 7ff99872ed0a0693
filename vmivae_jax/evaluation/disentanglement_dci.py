"""DCI: Disentanglement, Completeness and Informativeness (Eastwood & Williams 2018).

As disentanglement_lib's ``evaluation/metrics/dci.py`` (Locatello et al.
2019, github.com/google-research/disentanglement_lib): one gradient-boosted
tree classifier per factor, predicting the factor's label from the whole
code; its feature importances give the (D, K) importance matrix R.

    disentanglement = sum_d rho_d (1 - H_K(R[d, :] / sum_k R[d, k])),
        rho_d = sum_k R[d, k] / sum_dk R,
    completeness    = sum_k rho_k (1 - H_D(R[:, k] / sum_d R[d, k])),
        rho_k = sum_d R[d, k] / sum_dk R,
    informativeness = mean over factors of the classifier's accuracy
        (train and test),

with H_B the entropy in base B (so each term is in [0, 1]) and 1e-11 added
to R inside the entropies as disentanglement_lib does. An all-zero R is
treated as all-ones (score 0) as there.

Defaults as disentanglement_lib: ``sklearn.ensemble.
GradientBoostingClassifier()`` with its defaults (100 trees of depth 3,
learning rate 0.1), 10000 train / 5000 test points. We fix the trees'
random_state (0 by default) so a score is repeatable; disentanglement_lib
leaves it unset (it only breaks ties between equally good splits).

Arrays are (N, D) representation and (N, K) factor labels (rows are points;
disentanglement_lib stores them transposed). Input checks as in
``disentanglement_metrics.check_representation_and_factors`` (ValueError naming
NaN dims, constant factors, mismatched lengths, wrong ndim).
"""
from __future__ import annotations

import numpy as np
import scipy.stats

from vmivae_jax.evaluation.disentanglement_metrics import check_representation_and_factors

ENTROPY_EPSILON = 1e-11  # disentanglement_lib's smoothing inside the entropies


def gbt_importance_matrix(representation, factors, test_representation,
                          test_factors, *, random_state: int = 0):
    """Importance matrix and accuracies of per-factor boosted trees.

    Args:
      representation, factors: train sample, (N, D) and (N, K) labels.
      test_representation, test_factors: (M, D) and (M, K).
      random_state: seed of the trees' tie-breaking (0).

    Returns:
      (importance (D, K) float64 with |feature_importances_| per factor,
       train accuracy mean over factors, test accuracy mean over factors).
    """
    from sklearn import ensemble  # only this function needs sklearn
    codes, labels = check_representation_and_factors(representation, factors)
    test_codes, test_labels = check_representation_and_factors(test_representation, test_factors,
                                     role="test ")
    if test_codes.shape[1] != codes.shape[1] or (
            test_labels.shape[1] != labels.shape[1]):
        raise ValueError("train and test differ in representation dims or "
                         "number of factors")
    importance = np.zeros((codes.shape[1], labels.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k in range(labels.shape[1]):
        model = ensemble.GradientBoostingClassifier(random_state=random_state)
        model.fit(codes, labels[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy.append(np.mean(model.predict(codes) == labels[:, k]))
        test_accuracy.append(
            np.mean(model.predict(test_codes) == test_labels[:, k]))
    return importance, float(np.mean(train_accuracy)), float(
        np.mean(test_accuracy))


def _weighted_one_minus_entropy(importance):
    """sum_rows rho_row (1 - H_K(row / row sum)), entropy in base K = #columns."""
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2 or np.any(importance < 0):
        raise ValueError("importance must be a 2-D non-negative matrix, got "
                         f"shape {importance.shape}")
    if importance.shape[1] < 2:
        # Base-1 entropy is undefined; one column means nothing to spread over.
        return 1.0
    per_row = 1.0 - scipy.stats.entropy(importance.T + ENTROPY_EPSILON,
                                        base=importance.shape[1])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    weights = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_row * weights))


def disentanglement(importance) -> float:
    """DCI disentanglement of a (D, K) importance matrix (rows = code dims)."""
    return _weighted_one_minus_entropy(importance)


def completeness(importance) -> float:
    """DCI completeness of a (D, K) importance matrix (columns = factors)."""
    return _weighted_one_minus_entropy(np.asarray(importance).T)


def dci(representation, factors, test_representation, test_factors, *,
        random_state: int = 0) -> dict:
    """DCI scores of a representation (see the module docstring).

    Args:
      representation, factors: train sample (N, D), (N, K); defaults use
        N = 10000.
      test_representation, test_factors: test sample, M = 5000 by default.
      random_state: seed of the boosted trees (0).

    Returns:
      dict of floats: disentanglement, completeness, informativeness_train,
      informativeness_test (accuracies, as disentanglement_lib's keys).
    """
    importance, train_accuracy, test_accuracy = gbt_importance_matrix(
        representation, factors, test_representation, test_factors,
        random_state=random_state)
    return {
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
        "informativeness_train": train_accuracy,
        "informativeness_test": test_accuracy,
    }
