"""Entropy H(z_sel) of the latent parts an MI bound targets, and how each is estimated.

The Barber-Agakov bound (:func:`vmivae_jax.losses.mi_lower_bound`) adds H(z_sel) to a
per-example log Q term; this module holds the entropy estimators, named by
``ENTROPY_KINDS``: the plug-in entropy of a categorical code's aggregated posterior, the
prior's entropy the thesis assumes for Gaussian dims, and Monte Carlo entropies of the
aggregated posterior (Gaussian dims alone, or jointly with the codes). They are pure
functions of arrays with keyword-only arguments that import nothing but jax;
``vmivae_jax.losses`` re-exports them, so ``losses.categorical_aggregate_entropy`` and
the other names keep working.

>>> import jax.numpy as jnp
>>> from vmivae_jax import entropies
>>> round(float(entropies.categorical_aggregate_entropy(logits=jnp.zeros((2, 10)))), 4)
2.3026

Uncertainty: every estimator takes ``per_example=True`` and then returns per-example
terms whose mean is the estimate; ``losses.standard_error`` of them is the first-order
standard error over the Monte Carlo draws and the finite example set.

Masked categories: a logit of -inf gives probability 0 and finite values and
gradients everywhere (``distributions.MASKED_LOGIT``).
"""

import math

import jax
import jax.numpy as jnp

from vmivae_jax import distributions

__all__ = [
    'ENTROPY_KINDS',
    'categorical_aggregate_entropy',
    'gaussian_prior_entropy',
    'gaussian_aggregate_entropy_mc',
    'joint_aggregate_entropy_terms',
    'joint_aggregate_entropy_mc',
]

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
