"""Per-example reconstruction terms, the variational MI lower bound and exact code MI.

Pure functions of arrays with keyword-only arguments; they import nothing but jax,
so another project can use them directly:

>>> import jax.numpy as jnp
>>> from vmivae_jax import losses
>>> log_q = losses.categorical_log_q(q_logits=jnp.zeros((2, 10)), target=jnp.eye(10)[:2])
>>> h = losses.categorical_aggregate_entropy(logits=jnp.zeros((2, 10)))
>>> [round(v, 4) + 0.0 for v in losses.mi_lower_bound(log_q=log_q, entropy=h).tolist()]
[0.0, 0.0]

The MI bound (thesis eqs 4.8, 4.9, 4.13, 4.21) is the Barber-Agakov bound

  I(z_sel; x') >= E_{x ~ data, z ~ q(z|x), x' = dec(z)} [log Q(z_sel | x')] + H(z_sel),

where ``z_sel`` is the chosen part of the latent and ``x'`` is the decoder's mean output
(Bernoulli probabilities, or the Gaussian mean). The expectation term is per example
(:func:`gaussian_log_q`, :func:`categorical_log_q`); the entropy term is a property of
the whole batch or evaluation set, so it is computed separately (by the estimators of
:mod:`vmivae_jax.entropies`, re-exported here) and every reported bound names which
entropy it used (see ``ENTROPY_KINDS``). With several target groups the entropy must be
their joint one (:func:`joint_aggregate_entropy_mc`).

Uncertainty: the entropy estimators and the exact code MI take ``per_example=True``
and then return per-example terms whose mean is the estimate; :func:`standard_error`
of those terms (for a bound, of ``mi_lower_bound(log_q=..., entropy=terms)``) is the
first-order standard error over the Monte Carlo draws and the finite example set.

Masked categories: a logit of -inf gives probability 0 and finite values and
gradients everywhere (``distributions.MASKED_LOGIT``).
"""

import math

import jax
import jax.numpy as jnp

from vmivae_jax import distributions
# The entropy estimators live in entropies.py; re-exported here because the bound's users
# (and the README) reach every piece of it through ``losses``.
from vmivae_jax.entropies import ENTROPY_KINDS
from vmivae_jax.entropies import categorical_aggregate_entropy
from vmivae_jax.entropies import gaussian_aggregate_entropy_mc
from vmivae_jax.entropies import gaussian_prior_entropy
from vmivae_jax.entropies import joint_aggregate_entropy_mc
from vmivae_jax.entropies import joint_aggregate_entropy_terms

__all__ = [
    'ENTROPY_KINDS',
    'categorical_aggregate_entropy',
    'gaussian_aggregate_entropy_mc',
    'gaussian_prior_entropy',
    'joint_aggregate_entropy_mc',
    'joint_aggregate_entropy_terms',
    'bernoulli_log_likelihood',
    'gaussian_log_likelihood',
    'negative_mean_squared_error',
    'gaussian_log_q',
    'categorical_log_q',
    'standard_error',
    'mi_lower_bound',
    'exact_categorical_mutual_information',
]


# ----------------------------------------------------------------------------------
# Reconstruction log-likelihoods log p(x|z), one value per example.


def bernoulli_log_likelihood(*, logits: jax.Array, targets: jax.Array) -> jax.Array:
  """sum_pixels [x log sigmoid(l) + (1 - x) log sigmoid(-l)] for x in [0, 1].

  Args:
    logits: [B, ...] decoder logits.
    targets: [B, ...] pixel intensities in [0, 1] (binary, or grey levels as is common).

  Returns:
    [B] log-likelihoods in nats.

  >>> import jax.numpy as jnp
  >>> round(float(bernoulli_log_likelihood(logits=jnp.zeros((1, 2)), targets=jnp.ones((1, 2)))[0]), 4)
  -1.3863
  """
  # x log s(l) + (1 - x) log s(-l) = x l - softplus(l), with softplus written out: one
  # exp and one log1p per pixel instead of two log-sigmoids (several times faster on CPU).
  softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  per_pixel = targets * logits - softplus
  return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def gaussian_log_likelihood(*, mean: jax.Array, logvar: jax.Array | float,
                            targets: jax.Array) -> jax.Array:
  """sum_pixels log N(x; mean, exp(logvar)) with a shared (fixed or learned) variance.

  Args:
    mean: [B, ...] decoder means.
    logvar: scalar or broadcastable log-variance of every pixel.
    targets: [B, ...] pixel values.

  Returns:
    [B] log-likelihoods in nats.

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_log_likelihood(mean=jnp.zeros((1, 1)), logvar=0.0,
  ...                                     targets=jnp.zeros((1, 1)))[0]), 4)
  -0.9189
  """
  per_pixel = -0.5 * (distributions.LOG_2PI + logvar + jnp.square(targets - mean) * jnp.exp(-logvar))
  per_pixel = jnp.broadcast_to(per_pixel, targets.shape)
  return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def negative_mean_squared_error(*, prediction: jax.Array, targets: jax.Array) -> jax.Array:
  """-mean_pixels (x - x_hat)^2: the authors' reconstruction term (torch MSELoss, mean).

  Not a normalised log-likelihood; used to reproduce the authors' setting, where the
  KL weight 0.005 is relative to this per-pixel mean.

  Args:
    prediction: [B, ...] decoder outputs.
    targets: [B, ...] pixel values.

  Returns:
    [B] negated per-example mean squared errors.

  >>> import jax.numpy as jnp
  >>> negative_mean_squared_error(prediction=jnp.zeros((1, 2)), targets=jnp.ones((1, 2))).tolist()
  [-1.0]
  """
  squared = jnp.square(targets - prediction)
  return -jnp.mean(squared.reshape(squared.shape[0], -1), axis=-1)


# ----------------------------------------------------------------------------------
# The MI lower bound: log Q(z_sel | x') terms (entropy terms: entropies.py).


def gaussian_log_q(*, q_mean: jax.Array, q_logvar: jax.Array, target: jax.Array) -> jax.Array:
  """log Q(z_sel | x') for a diagonal-Gaussian Q over the selected Gaussian dims.

  Args:
    q_mean: [B, S] Q's predicted means from x'.
    q_logvar: [B, S] Q's predicted log-variances.
    target: [B, S] the sampled latent dims z_sel that produced x'.

  Returns:
    [B] log-densities in nats.

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_log_q(q_mean=jnp.zeros((1, 1)), q_logvar=jnp.zeros((1, 1)),
  ...                            target=jnp.zeros((1, 1)))[0]), 4)
  -0.9189
  """
  return distributions.gaussian_log_density(target, mean=q_mean, logvar=q_logvar)


def categorical_log_q(*, q_logits: jax.Array, target: jax.Array) -> jax.Array:
  """log Q(c | x') = sum_k c_k log softmax(q_logits)_k for a one-hot or relaxed target c.

  A class masked in Q (q_logit -inf) with target weight 0 contributes nothing (value
  and gradient finite); target weight t on a masked class gives about -1e30 t, the
  finite stand-in for log 0 (see ``distributions.MASKED_LOGIT``).

  Args:
    q_logits: [B, K] Q's logits from x'.
    target: [B, K] the sampled code (one-hot, or a Gumbel-softmax point on the simplex).

  Returns:
    [B] log-probabilities in nats (<= 0).

  >>> import jax.numpy as jnp
  >>> round(float(categorical_log_q(q_logits=jnp.zeros((1, 4)), target=jnp.eye(4)[:1])[0]), 4)
  -1.3863
  """
  log_probs = jax.nn.log_softmax(distributions.unmask_logits(q_logits), axis=-1)
  return jnp.sum(target * log_probs, axis=-1)


def standard_error(values: jax.Array, *, axis: int = 0) -> jax.Array:
  """Standard error of the mean of independent per-example values: std(ddof=1) / sqrt(n).

  Used on per-example bound terms ``log_q + h`` (see :func:`mi_lower_bound`), on the
  per-example entropy terms of the aggregate-entropy estimators, or on
  :func:`exact_categorical_mutual_information` terms: for those plug-in estimators it
  is the first-order (delta-method) standard error, with the sampling of both the
  examples and the Monte Carlo draws included.

  Args:
    values: [..., n, ...] per-example values.
    axis: the example axis (n >= 2).

  Returns:
    the standard error(s), with ``axis`` removed.

  >>> import jax.numpy as jnp
  >>> round(float(standard_error(jnp.array([1.0, 2.0, 3.0, 4.0]))), 4)
  0.6455
  """
  n = values.shape[axis]
  return jnp.std(values, axis=axis, ddof=1) / math.sqrt(n)


def mi_lower_bound(*, log_q: jax.Array, entropy: jax.Array | float) -> jax.Array:
  """Per-example Barber-Agakov bound terms log Q(z_sel|x') + H(z_sel) (eq 4.9).

  Their mean over the data is the MI lower bound.

  With several target groups (Gaussian dims and a code, or several codes), H(z_sel)
  must be their JOINT entropy (:func:`joint_aggregate_entropy_mc`); the sum of the
  groups' separate entropies is larger, and the "bound" can then exceed the MI.

  Args:
    log_q: [B] log Q(z_sel | x') (sum over all selected groups).
    entropy: scalar H(z_sel), or the [B] per-example entropy terms (``per_example=True``
      of the aggregate-entropy estimators) of the same examples: then the mean of the
      returned terms is the bound and their :func:`standard_error` its first-order
      standard error (Monte Carlo and finite test set, with the covariance of log Q
      and the entropy terms; Q held fixed).

  Returns:
    [B] per-example bound terms in nats.

  >>> import jax.numpy as jnp
  >>> mi_lower_bound(log_q=jnp.array([-1.0, -2.0]), entropy=2.0).tolist()
  [1.0, 0.0]
  """
  return log_q + entropy


def exact_categorical_mutual_information(*, logits: jax.Array,
                                         per_example: bool = False) -> jax.Array:
  """Encoder-side I(x; c) = H(mean_x q(c|x)) - mean_x H(q(c|x)), exact for the data set.

  Treats the examples as the (empirical) data distribution; no bound, no sampling.
  Masked classes (logit -inf) add nothing; values and gradients stay finite.

  Args:
    logits: [N, K] encoder logits of a categorical code for N examples.
    per_example: return the [N] terms d_n = KL(q(c|x_n) || mean_x q(c|x)) instead.
      Their mean is I (I = E_x KL(q(c|x) || q(c))), and d_n - I is the influence of
      example n, so ``standard_error`` of them is the delta-method standard error of
      I as an estimate of the population I(x; c) from N examples.

  Returns:
    scalar mutual information in nats, in [0, log K] (or [N] terms >= 0).

  >>> import jax.numpy as jnp
  >>> round(float(exact_categorical_mutual_information(logits=jnp.log(jnp.eye(2) + 1e-9))), 4)
  0.6931
  """
  if per_example:
    log_probs = jax.nn.log_softmax(distributions.unmask_logits(logits), axis=-1)
    log_aggregate = jnp.log(jnp.clip(jnp.mean(jnp.exp(log_probs), axis=0), 1e-30))
    return jnp.sum(jnp.exp(log_probs) * (log_probs - log_aggregate), axis=-1)
  conditional = jnp.mean(distributions.categorical_entropy(logits=logits))
  return categorical_aggregate_entropy(logits=logits) - conditional
