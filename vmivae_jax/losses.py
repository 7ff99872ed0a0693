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
the whole batch or evaluation set, so it is computed separately and every reported
bound names which entropy it used (see ``ENTROPY_KINDS``).
"""

import math

import jax
import jax.numpy as jnp

from vmivae_jax import distributions

# What H(z_sel) a bound used. A bound is only a lower bound on I(z_sel; x') when its
# entropy term is the true marginal entropy; each kind says how close it comes.
ENTROPY_KINDS = {
    'categorical_aggregate': 'H(mean_x q(c|x)): plug-in entropy of the aggregated posterior',
    'gaussian_prior': 'H(N(0, I)) of the selected dims: assumes q(z) = p(z), as the thesis does',
    'gaussian_aggregate_mc': ('-mean_i log mean_j q(z_i|x_j): Monte Carlo entropy of the '
                              'aggregated posterior (no prior assumption; minibatch estimate)'),
}


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
# The MI lower bound: log Q(z_sel | x') terms and entropy terms.


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

  Args:
    q_logits: [B, K] Q's logits from x'.
    target: [B, K] the sampled code (one-hot, or a Gumbel-softmax point on the simplex).

  Returns:
    [B] log-probabilities in nats (<= 0).

  >>> import jax.numpy as jnp
  >>> round(float(categorical_log_q(q_logits=jnp.zeros((1, 4)), target=jnp.eye(4)[:1])[0]), 4)
  -1.3863
  """
  return jnp.sum(target * jax.nn.log_softmax(q_logits, axis=-1), axis=-1)


def categorical_aggregate_entropy(*, logits: jax.Array) -> jax.Array:
  """H(q(c)) with q(c) = mean_x q(c|x): plug-in entropy of the aggregated posterior.

  H = -sum_k qbar_k log qbar_k,  qbar = (1/B) sum_b softmax(logits_b).

  Args:
    logits: [B, K] encoder logits over a batch or evaluation set.

  Returns:
    scalar entropy in nats, in [0, log K].

  >>> import jax.numpy as jnp
  >>> round(float(categorical_aggregate_entropy(logits=jnp.log(jnp.eye(2) + 1e-9))), 4)
  0.6931
  """
  aggregate = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  return -jnp.sum(aggregate * jnp.log(jnp.clip(aggregate, 1e-30)))


def gaussian_prior_entropy(*, num_dims: int) -> float:
  """H(N(0, I_S)) = S/2 log(2 pi e): the entropy the thesis assumes for z_sel.

  Equals H(z_sel) only when the aggregated posterior equals the prior.

  >>> round(gaussian_prior_entropy(num_dims=2), 4)
  2.8379
  """
  return 0.5 * num_dims * (distributions.LOG_2PI + 1.0)


def gaussian_aggregate_entropy_mc(*, samples: jax.Array, mean: jax.Array,
                                  logvar: jax.Array) -> jax.Array:
  """Monte Carlo entropy of the aggregated posterior q(z) = mean_j q(z|x_j).

  H ~= -(1/B) sum_i log((1/B) sum_j N(z_i; mean_j, exp(logvar_j))),  z_i ~ q(z|x_i).

  Makes no assumption that q(z) equals the prior. The estimate is biased for small
  B (the i = j term inflates q(z_i)), so evaluations use large sets.

  Args:
    samples: [B, S] one sample z_i ~ q(z_sel|x_i) per example.
    mean: [B, S] posterior means of the same examples.
    logvar: [B, S] posterior log-variances.

  Returns:
    scalar entropy estimate in nats.

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_aggregate_entropy_mc(samples=jnp.zeros((1, 1)), mean=jnp.zeros((1, 1)),
  ...                                           logvar=jnp.zeros((1, 1)))), 4)
  0.9189
  """
  pairwise = distributions.gaussian_log_density(
      samples[:, None, :], mean=mean[None, :, :], logvar=logvar[None, :, :])  # [B, B]
  log_aggregate = jax.nn.logsumexp(pairwise, axis=1) - math.log(samples.shape[0])
  return -jnp.mean(log_aggregate)


def mi_lower_bound(*, log_q: jax.Array, entropy: jax.Array | float) -> jax.Array:
  """Per-example Barber-Agakov bound terms log Q(z_sel|x') + H(z_sel) (eq 4.9).

  Their mean over the data is the MI lower bound.

  Args:
    log_q: [B] log Q(z_sel | x') (sum over all selected groups).
    entropy: scalar H(z_sel) (sum over the selected groups).

  Returns:
    [B] per-example bound terms in nats.

  >>> import jax.numpy as jnp
  >>> mi_lower_bound(log_q=jnp.array([-1.0, -2.0]), entropy=2.0).tolist()
  [1.0, 0.0]
  """
  return log_q + entropy


def exact_categorical_mutual_information(*, logits: jax.Array) -> jax.Array:
  """Encoder-side I(x; c) = H(mean_x q(c|x)) - mean_x H(q(c|x)), exact for the data set.

  Treats the examples as the (empirical) data distribution; no bound, no sampling.

  Args:
    logits: [N, K] encoder logits of a categorical code for N examples.

  Returns:
    scalar mutual information in nats, in [0, log K].

  >>> import jax.numpy as jnp
  >>> round(float(exact_categorical_mutual_information(logits=jnp.log(jnp.eye(2) + 1e-9))), 4)
  0.6931
  """
  conditional = jnp.mean(distributions.categorical_entropy(logits=logits))
  return categorical_aggregate_entropy(logits=logits) - conditional
