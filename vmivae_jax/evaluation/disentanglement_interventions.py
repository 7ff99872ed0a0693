"""BetaVAE and FactorVAE scores: classify which factor was held fixed in a batch.

Both draw batches in which one factor is fixed and the others vary, so they
take a ground-truth sampler rather than a fixed sample: anything with
``factor_sizes`` (K values), ``sample_factors(rng, n) -> (n, K) int`` and
``observations(factors) -> (n, ...)`` (e.g. ``disentanglement_metrics.
GroundTruth``), and a ``representation_fn`` mapping (n, ...) observations to
an (n, D) code. Definitions and defaults as disentanglement_lib
(Locatello et al. 2019, github.com/google-research/disentanglement_lib,
evaluation/metrics/{beta_vae,factor_vae}.py); the code is ours.

We encode many batches per ``representation_fn`` call (``points_per_call``
batches at once) for speed; this changes the order of the random draws, not
the distribution, so scores match disentanglement_lib in distribution, not
bitwise for the same seed.
"""
from __future__ import annotations

import numpy as np

BATCH_SIZE = 64
NUM_TRAIN, NUM_EVAL = 10_000, 5_000
NUM_VARIANCE_ESTIMATE = 10_000  # factor_vae_score.num_variance_estimate
PRUNE_THRESHOLD = 0.05  # prune_dims.threshold, on the standard deviation


def _encode(ground_truth, representation_fn, factors):
    """(..., K) factor indices -> (..., D) float64 codes, checked finite."""
    flat = factors.reshape(-1, factors.shape[-1])
    codes = np.asarray(representation_fn(ground_truth.observations(flat)),
                       dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != flat.shape[0]:
        raise ValueError(f"representation_fn must return (n, D) for n = "
                         f"{flat.shape[0]} observations, got {codes.shape}")
    bad = ~np.isfinite(codes)
    if bad.any():
        raise ValueError(f"representation has NaN or inf in dims "
                         f"{np.flatnonzero(bad.any(axis=0)).tolist()}")
    return codes.reshape(factors.shape[:-1] + (codes.shape[1],))


def _check_sampler(ground_truth, batch_size):
    sizes = list(ground_truth.factor_sizes)
    constant = [k for k, size in enumerate(sizes) if size < 2]
    if constant:
        raise ValueError(f"factor {constant[0]} has {sizes[constant[0]]} value:"
                         " it cannot vary, so it cannot be identified")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (variances), got {batch_size}")
    return len(sizes)


def _draw_batches(ground_truth, rng, num_points, batch_size):
    """(num_points, batch_size, K) factor draws."""
    flat = np.asarray(ground_truth.sample_factors(rng, num_points * batch_size))
    return flat.reshape(num_points, batch_size, -1).astype(np.int64)


def _beta_vae_points(ground_truth, representation_fn, rng, num_points, *,
                     batch_size, points_per_call):
    """Features mean_b |z1 - z2| (num_points, D) and fixed-factor labels."""
    num_factors = len(ground_truth.factor_sizes)
    features, labels = [], []
    for start in range(0, num_points, points_per_call):
        n = min(points_per_call, num_points - start)
        fixed = rng.integers(0, num_factors, size=n)
        first = _draw_batches(ground_truth, rng, n, batch_size)
        second = _draw_batches(ground_truth, rng, n, batch_size)
        rows = np.arange(n)
        second[rows, :, fixed] = first[rows, :, fixed]
        difference = (_encode(ground_truth, representation_fn, first) -
                      _encode(ground_truth, representation_fn, second))
        features.append(np.mean(np.abs(difference), axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(ground_truth, representation_fn, rng: np.random.Generator,
                   *, batch_size: int = BATCH_SIZE, num_train: int = NUM_TRAIN,
                   num_eval: int = NUM_EVAL, points_per_call: int = 64) -> dict:
    """BetaVAE score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework").

    Each point: pick factor k uniformly; draw two batches of ``batch_size``
    factor vectors that agree on factor k (pairwise, as disentanglement_lib:
    z2's factor k is copied from z1's); the feature is mean_b |z1_b - z2_b|
    (D,), the label k. A logistic regression (sklearn defaults,
    disentanglement_lib's ``LogisticRegression(random_state)``) is fit on
    ``num_train`` points and scored on ``num_eval`` fresh ones.
    Defaults: batch_size=64, num_train=10000, num_eval=5000. We use today's
    sklearn defaults (lbfgs, multinomial); disentanglement_lib ran on a
    2019 sklearn whose default was liblinear one-vs-rest.

    Args:
      ground_truth: sampler (see module docstring).
      representation_fn: (n, ...) observations -> (n, D).
      rng: numpy Generator.

    Returns:
      dict: train_accuracy, eval_accuracy (floats in [0, 1]).
    """
    from sklearn import linear_model  # only the classifier needs sklearn
    _check_sampler(ground_truth, batch_size)
    kwargs = dict(batch_size=batch_size, points_per_call=points_per_call)
    train_x, train_y = _beta_vae_points(ground_truth, representation_fn, rng,
                                        num_train, **kwargs)
    eval_x, eval_y = _beta_vae_points(ground_truth, representation_fn, rng,
                                      num_eval, **kwargs)
    seed = int(rng.integers(2**31 - 1))
    model = linear_model.LogisticRegression(random_state=seed)
    model.fit(train_x, train_y)
    return {
        "train_accuracy": float(np.mean(model.predict(train_x) == train_y)),
        "eval_accuracy": float(np.mean(model.predict(eval_x) == eval_y)),
    }


def _factor_vae_votes(ground_truth, representation_fn, rng, num_points, *,
                      batch_size, points_per_call, global_variances, active):
    """(K, D) counts of (fixed factor, dim of least normalised variance)."""
    num_factors = len(ground_truth.factor_sizes)
    votes = np.zeros((num_factors, global_variances.shape[0]), dtype=np.int64)
    active_dims = np.flatnonzero(active)
    for start in range(0, num_points, points_per_call):
        n = min(points_per_call, num_points - start)
        fixed = rng.integers(0, num_factors, size=n)
        factors = _draw_batches(ground_truth, rng, n, batch_size)
        rows = np.arange(n)
        factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]
        codes = _encode(ground_truth, representation_fn, factors)
        local = np.var(codes, axis=1, ddof=1)
        ratio = local[:, active] / global_variances[active]
        np.add.at(votes, (fixed, active_dims[np.argmin(ratio, axis=1)]), 1)
    return votes


def factor_vae_score(ground_truth, representation_fn,
                     rng: np.random.Generator, *, batch_size: int = BATCH_SIZE,
                     num_train: int = NUM_TRAIN, num_eval: int = NUM_EVAL,
                     num_variance_estimate: int = NUM_VARIANCE_ESTIMATE,
                     prune_threshold: float = PRUNE_THRESHOLD,
                     points_per_call: int = 64) -> dict:
    """FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising").

    Global variances Var[z_d] (ddof=1) from ``num_variance_estimate`` random
    observations; dims with sqrt(Var) < ``prune_threshold`` are inactive.
    Each point: pick factor k uniformly, draw a batch with factor k fixed to
    one value, vote (k, argmin_d Var_batch[z_d] / Var[z_d]) over active d.
    The classifier maps each dim to the factor with most training votes
    (majority vote); accuracy = share of votes it gets right, on the
    training votes and on ``num_eval`` fresh points. Defaults as
    disentanglement_lib's configs: batch_size=64, num_train=10000,
    num_eval=5000, num_variance_estimate=10000, prune threshold 0.05.
    With no active dim both accuracies are 0, as there.

    Args:
      ground_truth: sampler (see module docstring).
      representation_fn: (n, ...) observations -> (n, D).
      rng: numpy Generator.

    Returns:
      dict: train_accuracy, eval_accuracy, num_active_dims (the count of
      active dims; disentanglement_lib reports the mask's length, i.e. D).
    """
    _check_sampler(ground_truth, batch_size)
    factors = np.asarray(ground_truth.sample_factors(rng, num_variance_estimate))
    global_variances = np.var(
        _encode(ground_truth, representation_fn, factors), axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0,
                "num_active_dims": 0}
    kwargs = dict(batch_size=batch_size, points_per_call=points_per_call,
                  global_variances=global_variances, active=active)
    train_votes = _factor_vae_votes(ground_truth, representation_fn, rng,
                                    num_train, **kwargs)
    classifier = np.argmax(train_votes, axis=0)  # dim -> factor
    columns = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(ground_truth, representation_fn, rng,
                                   num_eval, **kwargs)
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() /
                                train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() /
                               eval_votes.sum()),
        "num_active_dims": int(active.sum()),
    }
