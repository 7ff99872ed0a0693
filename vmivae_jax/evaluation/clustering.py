"""Clustering scores of a categorical code against the labels (numpy; no sklearn):
accuracy of the best one-to-one and many-to-one maps, NMI, ARI."""

import numpy as np
import scipy.optimize


def count_matrix(labels: np.ndarray, codes: np.ndarray, *, num_labels: int | None = None,
                 num_codes: int | None = None) -> np.ndarray:
  """[L, K] int64 matrix: number of examples with label l and code k."""
  labels = np.asarray(labels, np.int64)
  codes = np.asarray(codes, np.int64)
  num_labels = int(labels.max()) + 1 if num_labels is None else num_labels
  num_codes = int(codes.max()) + 1 if num_codes is None else num_codes
  counts = np.zeros((num_labels, num_codes), np.int64)
  np.add.at(counts, (labels, codes), 1)
  return counts


def _contingency(labels, codes) -> np.ndarray:
  """Count matrix over the values that occur (any integer labels)."""
  _, l = np.unique(np.asarray(labels), return_inverse=True)
  _, c = np.unique(np.asarray(codes), return_inverse=True)
  return count_matrix(l.ravel(), c.ravel())


def accuracy_hungarian(labels: np.ndarray, codes: np.ndarray) -> float:
  """Accuracy of the best one-to-one code -> label map (linear_sum_assignment).

  With more codes than labels (or the reverse) the extra ones match nothing and
  count as errors.
  """
  counts = _contingency(labels, codes)
  rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / counts.sum())


def accuracy_majority(labels: np.ndarray, codes: np.ndarray) -> float:
  """Accuracy of the many-to-one map: each code -> its most frequent label."""
  counts = _contingency(labels, codes)
  return float(counts.max(axis=0).sum() / counts.sum())


def _entropy_of_counts(counts: np.ndarray) -> float:
  p = counts[counts > 0].astype(np.float64) / counts.sum()
  return float(-np.sum(p * np.log(p)))


def normalized_mutual_information(labels: np.ndarray, codes: np.ndarray) -> float:
  """NMI = I(labels; codes) / mean(H(labels), H(codes)) (sklearn's default, 'arithmetic').

  1 for identical partitions (up to renaming), 0 for independent ones; 1 when both
  are a single cluster, 0 when only one of them is.
  """
  counts = _contingency(labels, codes)
  if counts.shape[0] == counts.shape[1] == 1:
    return 1.0
  n = counts.sum()
  pij = counts.astype(np.float64) / n
  pi = pij.sum(axis=1, keepdims=True)
  pj = pij.sum(axis=0, keepdims=True)
  nz = pij > 0
  mi = float(np.sum(pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])))
  normaliser = 0.5 * (_entropy_of_counts(counts.sum(axis=1)) +
                      _entropy_of_counts(counts.sum(axis=0)))
  return float(max(mi, 0.0) / max(normaliser, np.finfo(np.float64).eps))


def adjusted_rand_index(labels: np.ndarray, codes: np.ndarray) -> float:
  """Adjusted Rand index (Hubert & Arabie), as sklearn computes it (pair counts).

  1 for identical partitions, ~0 in expectation for independent ones, can be < 0.
  Exact integer arithmetic for the pair counts.
  """
  counts = _contingency(labels, codes)
  n = int(counts.sum())
  sum_squares = int(np.sum(counts.astype(object) ** 2))
  row = counts.sum(axis=1).astype(object)
  col = counts.sum(axis=0).astype(object)
  tp = sum_squares - n
  fp = int(np.sum(counts.astype(object) @ col)) - sum_squares
  fn = int(np.sum(counts.T.astype(object) @ row)) - sum_squares
  tn = n * n - fp - fn - sum_squares
  if fn == 0 and fp == 0:
    return 1.0
  return float(2 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
