"""Disentanglement metrics over (representation, factors) samples: MIG, SAP, modularity.

The definitions and default settings are those of disentanglement_lib
(Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised
Learning of Disentangled Representations", github.com/google-research/
disentanglement_lib, evaluation/metrics/{mig,sap_score,
modularity_explicitness,utils}.py); the code is ours. DCI is in
``disentanglement_dci``; the BetaVAE and FactorVAE scores, which intervene on
the factors, in ``disentanglement_interventions``.

Conventions (differ from disentanglement_lib, which stores arrays transposed):
  representation: (N, D) float, one row per observation (the encoder mean).
  factors: (N, K) ground-truth factor labels (integers, e.g. dSprites factor
    indices); every metric here treats each factor as discrete, as
    disentanglement_lib does for dSprites.
Mutual information and entropies are in nats (sklearn.metrics.
mutual_info_score's plug-in estimate, which disentanglement_lib uses).

Bad input raises ValueError naming the problem: wrong ndim, mismatched
lengths, a non-finite representation ("representation has NaN in dims [3]"),
a constant factor ("factor 2 (orientation) is constant": its entropy is 0, so
normalised MI is undefined; disentanglement_lib would divide by zero, and
its classifiers would fail on one class).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

# disentanglement_lib's metric_configs (unsupervised_study_v1) sample sizes.
MIG_NUM_TRAIN = 10_000
SAP_NUM_TRAIN, SAP_NUM_TEST = 10_000, 5_000
MODULARITY_NUM_TRAIN, MODULARITY_NUM_TEST = 10_000, 5_000
DCI_NUM_TRAIN, DCI_NUM_TEST = 10_000, 5_000
NUM_BINS = 20  # histogram_discretizer.num_bins
SAMPLE_BATCH_SIZE = 16  # generate_batch_factor_code's batch_size


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A ground-truth data set the metrics can sample from.

    Attributes:
      factor_sizes: number of values of each of the K factors.
      sample_factors: (rng: np.random.Generator, n) -> (n, K) int factor
        indices, each uniform (as disentanglement_lib's sample_factors).
      observations: (n, K) factor indices -> (n, ...) observations.
      factor_names: K names used in error messages (default "factor k").
    """
    factor_sizes: Sequence[int]
    sample_factors: Callable[[np.random.Generator, int], np.ndarray]
    observations: Callable[[np.ndarray], np.ndarray]
    factor_names: Sequence[str] | None = None


def sample_representation(ground_truth, representation_fn, num_points: int,
                          rng: np.random.Generator, *,
                          batch_size: int = SAMPLE_BATCH_SIZE):
    """Draw factors, render them and encode them, in batches.

    disentanglement_lib's ``utils.generate_batch_factor_code``.

    Args:
      ground_truth: a ``GroundTruth`` (or anything with ``sample_factors``
        and ``observations``).
      representation_fn: (b, ...) observations -> (b, D) representation.
      num_points: N, number of samples (metric defaults: the *_NUM_* above).
      rng: numpy Generator; consumed in order, so a seed fixes the sample.
      batch_size: observations encoded per call (16).

    Returns:
      (representation (N, D) float64, factors (N, K) int64).
    """
    codes, labels = [], []
    for start in range(0, num_points, batch_size):
        n = min(batch_size, num_points - start)
        factors = np.asarray(ground_truth.sample_factors(rng, n))
        codes.append(np.asarray(representation_fn(
            ground_truth.observations(factors)), dtype=np.float64))
        labels.append(factors.astype(np.int64))
    return np.concatenate(codes), np.concatenate(labels)


def check_representation_and_factors(representation, factors, *,
                                     factor_names=None, role: str = ""):
    """Validate one (representation, factors) sample; return float64/int arrays.

    Args:
      representation: (N, D) finite numbers.
      factors: (N, K) labels, each factor taking at least two values.
      factor_names: optional K names for the messages.
      role: prefix for the messages, e.g. "test ".

    Returns:
      (representation (N, D) float64, factors (N, K) as given).

    Raises:
      ValueError naming the problem (ndim, lengths, NaN/inf dims, constant
      factors).
    """
    codes = np.asarray(representation)
    labels = np.asarray(factors)
    for name, array in (("representation", codes), ("factors", labels)):
        if array.ndim != 2:
            raise ValueError(f"{role}{name} must be 2-D (N, dims), got shape "
                             f"{array.shape}")
    if codes.shape[0] != labels.shape[0]:
        raise ValueError(f"{role}representation has {codes.shape[0]} rows but "
                         f"{role}factors has {labels.shape[0]}")
    if codes.shape[0] < 2:
        raise ValueError(f"{role}sample needs at least 2 points, got "
                         f"{codes.shape[0]}")
    codes = codes.astype(np.float64)
    for label, bad in (("NaN", np.isnan(codes)), ("inf", np.isinf(codes))):
        if bad.any():
            dims = np.flatnonzero(bad.any(axis=0)).tolist()
            raise ValueError(f"{role}representation has {label} in dims {dims}")
    constant = [k for k in range(labels.shape[1])
                if np.all(labels[:, k] == labels[0, k])]
    if constant:
        k = constant[0]
        name = factor_names[k] if factor_names is not None else f"factor {k}"
        raise ValueError(f"{role}factor {k} ({name}) is constant in the sample "
                         f"(all {labels[0, k]}): its entropy is 0")
    return codes, labels


def histogram_discretize(representation, *, num_bins: int = NUM_BINS):
    """Per dim, bin into num_bins equal-width bins over its own [min, max].

    disentanglement_lib's ``_histogram_discretize``:
    ``np.digitize(z, np.histogram(z, num_bins)[1][:-1])``, labels 1..num_bins
    (the maximum lands in the last bin).

    Args:
      representation: (N, D) float.
      num_bins: bins per dim (20).

    Returns:
      (N, D) int64 bin labels.
    """
    codes = np.asarray(representation, dtype=np.float64)
    out = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1][:-1]
        out[:, d] = np.digitize(codes[:, d], edges)
    return out


def _mutual_info(a, b) -> float:
    """Plug-in MI (nats) of two label vectors: sum p(a,b) log p(a,b)/p(a)p(b)."""
    _, a_codes = np.unique(a, return_inverse=True)
    _, b_codes = np.unique(b, return_inverse=True)
    n_a, n_b = a_codes.max() + 1, b_codes.max() + 1
    joint = np.bincount(a_codes * n_b + b_codes, minlength=n_a * n_b)
    joint = joint.reshape(n_a, n_b) / len(a_codes)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] /
                                                 outer[nonzero])))


def discrete_mutual_info(codes, factors) -> np.ndarray:
    """MI matrix I(code_d; factor_k) in nats between discrete labels.

    Args:
      codes: (N, D) discrete labels (e.g. ``histogram_discretize`` output).
      factors: (N, K) discrete labels.

    Returns:
      (D, K) float64, I[d, k] = sum_ab p(a, b) log(p(a, b) / (p(a) p(b))).
    """
    codes, factors = np.asarray(codes), np.asarray(factors)
    return np.array([[_mutual_info(codes[:, d], factors[:, k])
                      for k in range(factors.shape[1])]
                     for d in range(codes.shape[1])])


def discrete_entropy(factors) -> np.ndarray:
    """Plug-in entropy H(factor_k) in nats: (N, K) labels -> (K,)."""
    factors = np.asarray(factors)
    return np.array([_mutual_info(factors[:, k], factors[:, k])
                     for k in range(factors.shape[1])])


def mutual_info_gap(representation, factors, *, num_bins: int = NUM_BINS,
                    factor_names=None) -> float:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of
    Disentanglement in VAEs"), as disentanglement_lib's ``_compute_mig``.

    MIG = mean_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k), with z_(1), z_(2)
    the code dims of highest and second highest MI with factor v_k, codes
    histogram-discretised into ``num_bins`` bins. Defaults: num_bins=20 on
    MIG_NUM_TRAIN=10000 points. 1 for a code with one dim per factor and
    no other dim informative; MIG does not penalise one dim carrying two
    factors.

    Args:
      representation: (N, D); factors: (N, K) discrete labels.

    Returns:
      scalar in [0, 1].
    """
    codes, labels = check_representation_and_factors(
        representation, factors, factor_names=factor_names)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least 2 representation dims, got "
                         f"{codes.shape[1]}")
    mi = discrete_mutual_info(histogram_discretize(codes, num_bins=num_bins),
                              labels)
    top_two = np.sort(mi, axis=0)[::-1][:2]
    return float(np.mean((top_two[0] - top_two[1]) / discrete_entropy(labels)))


def modularity(representation, factors, *, num_bins: int = NUM_BINS,
               factor_names=None) -> float:
    """Modularity (Ridgeway & Zemel 2018, "Learning Deep Disentangled
    Embeddings with the F-Statistic Loss"), as disentanglement_lib's
    ``modularity_explicitness.modularity``.

    With m_dk = I(z_d; v_k) (histogram-discretised, ``num_bins`` = 20) and
    theta_d = max_k m_dk^2:
        delta_d = (sum_k m_dk^2 - theta_d) / (theta_d (K - 1)),
        modularity = mean_d (1 - delta_d), a dim with theta_d = 0 scoring 0.
    Defaults: MODULARITY_NUM_TRAIN=10000 points. An uninformative (noise)
    dim is judged on its small plug-in MI biases relative to each other, so
    it scores anywhere in [0, 1]: a perfect code with extra noise dims scores
    below 1, and modularity does not reward informativeness.

    Args:
      representation: (N, D); factors: (N, K) discrete labels, K >= 2.

    Returns:
      scalar in [0, 1].
    """
    codes, labels = check_representation_and_factors(
        representation, factors, factor_names=factor_names)
    if labels.shape[1] < 2:
        raise ValueError("modularity needs at least 2 factors")
    mi = discrete_mutual_info(histogram_discretize(codes, num_bins=num_bins),
                              labels)
    return modularity_from_mutual_info(mi)


def modularity_from_mutual_info(mutual_info) -> float:
    """Modularity of a (D, K) MI matrix (see ``modularity``)."""
    squared = np.square(np.asarray(mutual_info, dtype=np.float64))
    theta = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - theta) / (theta * (squared.shape[1] - 1))
    scores = np.where(theta == 0.0, 0.0, 1.0 - delta)
    return float(np.mean(scores))


def sap_score(representation, factors, test_representation, test_factors, *,
              continuous_factors: bool = False, svm_c: float = 0.01,
              factor_names=None) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018, "Variational
    Inference of Disentangled Latent Concepts from Unlabeled Observations"),
    as disentanglement_lib's ``sap_score._compute_sap``.

    Score matrix S[d, k]: with continuous_factors=False (the default, as
    disentanglement_lib on dSprites), the test accuracy of
    ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor k from
    dim d alone, trained on the train sample; with True, R^2 = cov(z_d,
    v_k)^2 / (var z_d var v_k) on the train sample (0 where var z_d <= 1e-12).
    SAP = mean_k (top S[., k] - second S[., k]). Defaults: 10000 train /
    5000 test points. A single linear feature cannot isolate the middle
    classes of a factor with many values, so even a perfect code scores well
    below 1 in the discrete setting.

    Args:
      representation, factors: train sample, (N, D) and (N, K).
      test_representation, test_factors: (M, D) and (M, K).

    Returns:
      scalar in [0, 1].
    """
    codes, labels = check_representation_and_factors(
        representation, factors, factor_names=factor_names)
    test_codes, test_labels = check_representation_and_factors(
        test_representation, test_factors, factor_names=factor_names,
        role="test ")
    if test_codes.shape[1] != codes.shape[1] or (
            test_labels.shape[1] != labels.shape[1]):
        raise ValueError(f"train has {codes.shape[1]} dims and {labels.shape[1]}"
                         f" factors, test {test_codes.shape[1]} and "
                         f"{test_labels.shape[1]}")
    if codes.shape[1] < 2:
        raise ValueError("SAP needs at least 2 representation dims")
    scores = np.zeros((codes.shape[1], labels.shape[1]))
    for d in range(codes.shape[1]):
        for k in range(labels.shape[1]):
            if continuous_factors:
                cov = np.cov(codes[:, d], labels[:, k].astype(np.float64),
                             ddof=1)
                if cov[0, 0] > 1e-12:
                    scores[d, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            else:
                scores[d, k] = _single_dim_accuracy(
                    codes[:, d], labels[:, k], test_codes[:, d],
                    test_labels[:, k], svm_c=svm_c)
    ranked = np.sort(scores, axis=0)
    return float(np.mean(ranked[-1] - ranked[-2]))


def _single_dim_accuracy(code, label, test_code, test_label, *, svm_c):
    """Test accuracy of a balanced linear SVM on one feature (SAP's S[d, k])."""
    from sklearn import svm  # sklearn is only needed by these classifiers
    classifier = svm.LinearSVC(C=svm_c, class_weight="balanced")
    classifier.fit(code[:, None], label)
    return float(np.mean(classifier.predict(test_code[:, None]) == test_label))
