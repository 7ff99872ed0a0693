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
bound names which entropy it used (see ``ENTROPY_KINDS``). With several target groups
the entropy must be their joint one (:func:`joint_aggregate_entropy_mc`).

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

# What H(z_sel) a bound used. A bound is only a lower bound on I(z_sel; x') when its
# entropy term is the true marginal entropy; each kind says how close it comes.
ENTROPY_KINDS = {
    'categorical_aggregate': 'H(mean_x q(c|x)): plug-in entropy of the aggregated posterior',
    'gaussian_prior': 'H(N(0, I)) of the selected dims: assumes q(z) = p(z), as the thesis does',
    'gaussian_aggregate_mc': ('-mean_i log mean_j q(z_i|x_j): Monte Carlo entropy of the '
                              'aggregated posterior (no prior assumption; exact in expectation '
                              'for the evaluated set, biased down for small batches)'),
  'joint_aggregate_mc': ('-mean_i sum_c q(c|x_i) log mean_j q(g_i, c|x_j): joint entropy of '
                         'Gaussian dims and codes (not the sum of separate entropies)'),
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


def categorical_aggregate_entropy(*, logits: jax.Array, per_example: bool = False) -> jax.Array:
  """H(q(c)) with q(c) = mean_x q(c|x): plug-in entropy of the aggregated posterior.

  H = -sum_k qbar_k log qbar_k,  qbar = (1/B) sum_b softmax(logits_b).

  Masked classes (logit -inf) add nothing; values and gradients stay finite.

  Args:
    logits: [B, K] encoder logits over a batch or evaluation set.
    per_example: return the [B] terms h_b = -sum_k q(k|x_b) log qbar_k instead. Their
      mean is H, and ``standard_error`` of them (or of ``log_q + h`` in
      :func:`mi_lower_bound`) is the first-order (delta-method) standard error of H
      over the finite set: the influence of example b on H is h_b - H.

  Returns:
    scalar entropy in nats, in [0, log K] (or [B] terms).

  >>> import jax.numpy as jnp
  >>> round(float(categorical_aggregate_entropy(logits=jnp.log(jnp.eye(2) + 1e-9))), 4)
  0.6931
  """
  aggregate = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  if per_example:
    return -jnp.sum(jax.nn.softmax(logits, axis=-1) * jnp.log(jnp.clip(aggregate, 1e-30)), axis=-1)
  return -jnp.sum(aggregate * jnp.log(jnp.clip(aggregate, 1e-30)))


def gaussian_prior_entropy(*, num_dims: int) -> float:
  """H(N(0, I_S)) = S/2 log(2 pi e): the entropy the thesis assumes for z_sel.

  Equals H(z_sel) only when the aggregated posterior equals the prior.

  >>> round(gaussian_prior_entropy(num_dims=2), 4)
  2.8379
  """
  return 0.5 * num_dims * (distributions.LOG_2PI + 1.0)


def gaussian_aggregate_entropy_mc(*, samples: jax.Array, mean: jax.Array, logvar: jax.Array,
                                  leave_one_out: bool = False,
                                  per_example: bool = False) -> jax.Array:
  """Monte Carlo entropy of the aggregated posterior q(z) = mean_j q(z|x_j).

  H ~= -(1/B) sum_i log((1/B) sum_j N(z_i; mean_j, exp(logvar_j))),  z_i ~ q(z|x_i).

  Makes no assumption that q(z) equals the prior. What it estimates, and its bias:

  * For the B examples given, it is an unbiased one-sample-per-component Monte Carlo
    estimate of the entropy of their mixture q_B(z) = (1/B) sum_j q(z|x_j), i.e. of
    H(z) with the examples as the data distribution (no bias; variance only).
  * As an estimate of the population entropy H(E_x q(z|x)) it is biased DOWN: its
    mean is E[H(q_B)] <= H(q) (entropy is concave), and deterministically
    H_est <= mean_i H_i + log B, with H_i = -log q(z_i|x_i) (the j = i term alone
    gives q_B(z_i) >= q(z_i|x_i) / B). So the implied I(x; z) = H - E H(q(z|x)) can
    never exceed log B: with well-separated posteriors a small batch under-reports
    H by about (true I - log B) nats. Measured on q(z|x_j) = N(mu_j, 1/4), mu_j ~
    N(0, 15/4) (aggregate N(0, 4), true H = 2.112, I(x; z) = 1.386 nats), mean bias
    over 2000 batches: B = 4: -0.54, B = 16: -0.17, B = 64: -0.049, B = 256: -0.015
    nats (about -3.8 / B for large B on this toy). The down-bias keeps a bound that
    uses it a lower bound in expectation.
  * ``leave_one_out=True`` drops the j = i term and divides by B - 1: the inner mean
    is then unbiased for q(z_i), so by Jensen the estimate is biased UP (mean >=
    H(q)), with a heavy right tail at small B (z_i may lie far from every other
    component). Same toy: B = 4: +3.3, B = 16: +0.43, B = 64: +0.083, B = 256:
    +0.018 nats. The two bracket the population entropy in expectation; the default
    (j = i included) is the conservative, lower-variance one for an MI lower bound,
    and over a whole evaluation set it is exact for that set's mixture.

  Args:
    samples: [B, S] one sample z_i ~ q(z_sel|x_i) per example.
    mean: [B, S] posterior means of the same examples.
    logvar: [B, S] posterior log-variances.
    leave_one_out: exclude the j = i term (needs B >= 2); see above.
    per_example: return the [B] terms -log q_B(z_i) instead of their mean; their
      ``standard_error`` is the first-order standard error of H over both the
      Monte Carlo draw and the finite set of examples.

  Returns:
    scalar entropy estimate in nats (or [B] terms).

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_aggregate_entropy_mc(samples=jnp.zeros((1, 1)), mean=jnp.zeros((1, 1)),
  ...                                           logvar=jnp.zeros((1, 1)))), 4)
  0.9189
  """
  pairwise = distributions.gaussian_log_density(
      samples[:, None, :], mean=mean[None, :, :], logvar=logvar[None, :, :])  # [B, B]
  count = samples.shape[0]
  if leave_one_out:
    pairwise = jnp.where(jnp.eye(count, dtype=bool), -jnp.inf, pairwise)
    count -= 1
  log_aggregate = jax.nn.logsumexp(pairwise, axis=1) - math.log(count)
  if per_example:
    return -log_aggregate
  return -jnp.mean(log_aggregate)


def _as_code_list(logits) -> list:
  if logits is None:
    return []
  if hasattr(logits, 'ndim'):
    return [logits]
  return list(logits)


def _joint_log_probs(logits_list: list, batch: int) -> jax.Array:
  """[B, K_1 * ... * K_M] log prod_m q(c_m|x) over every joint code (row-major)."""
  joint = jnp.zeros((batch, 1), jnp.float32)
  for logits in logits_list:
    log_probs = jax.nn.log_softmax(distributions.unmask_logits(logits), axis=-1)
    joint = (joint[:, :, None] + log_probs[:, None, :]).reshape(batch, -1)
  return joint


def joint_aggregate_entropy_terms(*, samples: jax.Array, sample_logits, mean: jax.Array,
                                  logvar: jax.Array, logits,
                                  leave_out: jax.Array | None = None) -> jax.Array:
  """Per-query terms of the joint entropy of Gaussian dims and categorical codes.

  For query rows p (a sample g_p ~ q(g|x_p) and the codes' probabilities pi_p) and a
  mixture of B components q(g, c|x_j) = N(g; mean_j, exp(logvar_j)) prod_m pi_j^m(c_m):

    h_p = -sum_c pi_p(c) log q_B(g_p, c),  q_B(g, c) = (1/B) sum_j N(g; mean_j, .) pi_j(c),

  with an exact sum over every joint code c = (c_1, ..., c_M) (prod_m K_m values).
  :func:`joint_aggregate_entropy_mc` is the mean of these with the queries equal to
  the components; computing them for row chunks of a large evaluation set against
  the whole set, and concatenating, gives the same terms in bounded memory
  ([P, B, prod K] floats per call).

  Args:
    samples: [P, S] Gaussian samples of the queries (S may be 0: codes only).
    sample_logits: the queries' code logits: one [P, K] array or a sequence of
      [P, K_m] arrays (an empty sequence: Gaussian dims only).
    mean: [B, S] component means.
    logvar: [B, S] component log-variances.
    logits: the components' code logits, same structure as ``sample_logits``.
    leave_out: optional [P] int index of a component to drop for each query (its
      own row, for a leave-one-out estimate); the mixture is then over B - 1.

  Returns:
    [P] terms in nats. Masked classes (logit -inf) add nothing (finite gradients).

  >>> import jax.numpy as jnp
  >>> # One query at g = 0 with code 0, against components (N(0, 1), c = 0), (N(9, 1), c = 1).
  >>> h = joint_aggregate_entropy_terms(
  ...     samples=jnp.zeros((1, 1)), sample_logits=jnp.log(jnp.array([[1.0, 0.0]])),
  ...     mean=jnp.array([[0.0], [9.0]]), logvar=jnp.zeros((2, 1)),
  ...     logits=jnp.log(jnp.eye(2)))
  >>> round(float(h[0]), 4)  # -log(N(0; 0, 1) / 2)
  1.6121
  """
  queries, comps = _as_code_list(sample_logits), _as_code_list(logits)
  num_queries, num_comps = samples.shape[0], mean.shape[0]
  query_log_pi = _joint_log_probs(queries, num_queries)                # [P, C]
  comp_log_pi = _joint_log_probs(comps, num_comps)                     # [B, C]
  gauss = distributions.gaussian_log_density(
      samples[:, None, :], mean=mean[None, :, :], logvar=logvar[None, :, :])  # [P, B]
  count = num_comps
  if leave_out is not None:
    gauss = jnp.where(jnp.arange(num_comps)[None, :] == leave_out[:, None], -jnp.inf, gauss)
    count -= 1
  # Masked classes have log pi = MASKED_LOGIT (finite): pi = 0 exactly and 0 * log q
  # = 0 even for a code no component uses, with finite gradients.
  log_joint = gauss[:, :, None] + comp_log_pi[None, :, :]              # [P, B, C]
  log_aggregate = jax.nn.logsumexp(log_joint, axis=1) - math.log(count)  # [P, C]
  return -jnp.sum(jnp.exp(query_log_pi) * log_aggregate, axis=-1)


def joint_aggregate_entropy_mc(*, samples: jax.Array, mean: jax.Array, logvar: jax.Array,
                               logits, leave_one_out: bool = False,
                               per_example: bool = False) -> jax.Array:
  """Joint entropy H(g, c) of Gaussian dims g and categorical codes c under q(g, c).

  q(g, c) = (1/B) sum_j N(g; mean_j, exp(logvar_j)) prod_m pi_j^m(c_m) is the aggregate
  posterior of the B examples, and

    H ~= -(1/B) sum_i sum_c pi_i(c) log q(g_i, c),  g_i ~ N(mean_i, exp(logvar_i)),

  exact over the codes (all prod_m K_m joint values), one reparameterised sample of g
  per example. This is the H(z_sel) an MI bound over several target groups needs:
  the sum of the groups' separate entropies H(g) + H(c_1) + ... exceeds the joint
  entropy by the total correlation of the groups under q (>= 0), so a bound that adds
  separate entropies can exceed the true MI. Same bias as
  :func:`gaussian_aggregate_entropy_mc` (unbiased for the mixture of the given
  examples, biased down for the population, implied MI <= log B; up with
  ``leave_one_out``). With no codes it equals :func:`gaussian_aggregate_entropy_mc`;
  with S = 0 it is the categorical plug-in entropy of the joint code.

  Args:
    samples: [B, S] samples g_i ~ q(g|x_i) (S may be 0).
    mean: [B, S] posterior means.
    logvar: [B, S] posterior log-variances.
    logits: one [B, K] array or a sequence of [B, K_m] arrays (codes independent given
      x, as in the encoder); -inf logits mask classes.
    leave_one_out: drop the j = i component for example i (mixture over B - 1).
    per_example: return the [B] terms (mean = H); their ``standard_error`` is the
      first-order standard error over the Monte Carlo draw and the finite set.

  Returns:
    scalar entropy in nats (or [B] terms).

  >>> import jax.numpy as jnp
  >>> # Two examples: (g ~ N(-5, 1), c = 0) and (g ~ N(5, 1), c = 1): H = H(g | c) + log 2.
  >>> h = joint_aggregate_entropy_mc(samples=jnp.array([[-5.0], [5.0]]),
  ...                                mean=jnp.array([[-5.0], [5.0]]), logvar=jnp.zeros((2, 1)),
  ...                                logits=jnp.log(jnp.eye(2)))
  >>> round(float(h), 4)  # -log N(0; 0, 1) + log 2
  1.6121
  """
  leave_out = jnp.arange(samples.shape[0]) if leave_one_out else None
  terms = joint_aggregate_entropy_terms(samples=samples, sample_logits=logits, mean=mean,
                                        logvar=logvar, logits=logits, leave_out=leave_out)
  return terms if per_example else jnp.mean(terms)


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
