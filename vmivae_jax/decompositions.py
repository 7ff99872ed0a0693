"""The disentanglement baselines' terms on a Gaussian latent, as pure functions of arrays.

* beta-TCVAE (Chen et al. 2018): the KL term split into index-code MI, total
  correlation (TC) and dimension-wise KL, each estimated from the minibatch
  (:func:`kl_decomposition`, with minibatch-weighted or minibatch-stratified sampling).
* DIP-VAE-I and -II (Kumar et al. 2018): moment-matching penalties on the covariance
  of the encoder means or of the aggregate posterior (:func:`dip_covariance`,
  :func:`dip_penalty`).
* FactorVAE (Kim & Mnih 2018): samples of prod_d q(z_d), by permuting each dimension
  across the batch (:func:`permute_dims`).

The posterior is q(z|x) = N(mean(x), diag(exp(logvar(x)))), the prior N(0, I). Only jax
is imported.

>>> import jax.numpy as jnp
>>> from vmivae_jax import decompositions
>>> float(decompositions.dip_penalty(jnp.eye(3), lambda_od=1.0, lambda_d=1.0))
0.0
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    'ESTIMATORS',
    'KLDecomposition',
    'gaussian_log_density_matrix',
    'log_stratified_weights',
    'log_aggregate_densities',
    'kl_decomposition',
    'dip_covariance',
    'dip_penalty',
    'permute_dims',
]

ESTIMATORS = ('mws', 'mss')   # minibatch-weighted / minibatch-stratified sampling

_LOG_2PI = math.log(2.0 * math.pi)


def _log_normal(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  return -0.5 * (_LOG_2PI + logvar + (z - mean) ** 2 * jnp.exp(-logvar))


def gaussian_log_density_matrix(z: jax.Array, *, mean: jax.Array, logvar: jax.Array
                                ) -> jax.Array:
  """log q(z_i,d | x_j) of every sample i under every example j's posterior, per dim.

  Args:
    z: [B, D] samples.
    mean, logvar: [M, D] the posteriors (the pool the aggregate is taken over).

  Returns:
    [B, M, D] log N(z_id; mean_jd, exp(logvar_jd)).

  >>> import jax.numpy as jnp
  >>> gaussian_log_density_matrix(jnp.zeros((2, 3)), mean=jnp.zeros((4, 3)),
  ...                             logvar=jnp.zeros((4, 3))).shape
  (2, 4, 3)
  """
  return _log_normal(z[:, None, :], mean[None, :, :], logvar[None, :, :])


def log_stratified_weights(own_index: jax.Array, *, pool_size: int, dataset_size: int
                           ) -> jax.Array:
  """log W_ij of minibatch stratified sampling (Chen et al. 2018, appendix C.2).

  For sample i drawn from example own_index[i] of a pool of M = pool_size examples:
  W_i,own = 1/N, W_i,own+1 (cyclically) = (N - M + 1) / (N (M - 1)), every other 1/(M - 1);
  each row sums to 1, so sum_j W_ij q(z|x_j) is an unbiased estimate of
  q(z) = (1/N) sum_n q(z|x_n) over a dataset of N = dataset_size examples. (The reference
  implementation's matrix misplaces the last rows' stratum weights; this one does not.)

  Args:
    own_index: [B] int, each sample's own example in the pool.
    pool_size: M >= 2.
    dataset_size: N >= M.

  Returns:
    [B, M] log-weights.

  >>> import jax.numpy as jnp
  >>> w = jnp.exp(log_stratified_weights(jnp.arange(3), pool_size=3, dataset_size=10))
  >>> [round(float(s), 6) for s in w.sum(axis=1)]
  [1.0, 1.0, 1.0]
  """
  n, m = float(dataset_size), pool_size - 1
  columns = jnp.arange(pool_size)[None, :]
  own = own_index[:, None]
  weights = jnp.where(columns == own, 1.0 / n,
                      jnp.where(columns == (own + 1) % pool_size, (n - m) / (n * m), 1.0 / m))
  return jnp.log(weights)


def log_aggregate_densities(z: jax.Array, *, mean: jax.Array, logvar: jax.Array,
                            estimator: str = 'mws', own_index: jax.Array | None = None,
                            dataset_size: int = 0) -> tuple[jax.Array, jax.Array]:
  """Minibatch estimates of log q(z_i) and of sum_d log q(z_id) for each sample.

  MWS: log q(z_i) ~= log sum_j q(z_i|x_j) - log M (and per dim for the marginals q(z_d)),
  with M the pool size. Chen et al. print log(NM) for the constant; with the prior
  p(n) = 1/N that makes log q(z) low by log N (the estimate does not converge to the
  aggregate density), which shifts MI by +log N, TC by +(D - 1) log N and the dim-wise
  KL by -D log N, and leaves every gradient as it is. MSS: sum_j W_ij q(z_i|x_j) with
  :func:`log_stratified_weights`.

  Args:
    z: [B, D] samples, z_i ~ q(z|x_own(i)).
    mean, logvar: [M, D] the pool's posteriors, containing each sample's own example.
    estimator: 'mws' or 'mss'.
    own_index: [B] each sample's example in the pool (MSS; default arange(B)).
    dataset_size: N, the number of training examples (MSS only).

  Returns:
    (log_qz [B], log_prod_marginals [B]).

  >>> import jax.numpy as jnp
  >>> z = jnp.zeros((1, 2))
  >>> log_qz, log_prod = log_aggregate_densities(z, mean=jnp.zeros((3, 2)),
  ...                                            logvar=jnp.zeros((3, 2)))
  >>> round(float(log_qz[0]), 4), round(float(log_prod[0]), 4)
  (-1.8379, -1.8379)
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r}: choose one of {ESTIMATORS}')
  log_q = gaussian_log_density_matrix(z, mean=mean, logvar=logvar)     # [B, M, D]
  pool = mean.shape[0]
  if estimator == 'mws':
    log_w = jnp.full((z.shape[0], pool), -math.log(pool))
  else:
    if pool < 2 or dataset_size < pool:
      raise ValueError(f'MSS needs 2 <= pool size ({pool}) <= dataset_size ({dataset_size})')
    own = jnp.arange(z.shape[0]) if own_index is None else own_index
    log_w = log_stratified_weights(own, pool_size=pool, dataset_size=dataset_size)
  log_qz = jax.nn.logsumexp(log_w + jnp.sum(log_q, axis=-1), axis=1)
  log_marginals = jax.nn.logsumexp(log_w[:, :, None] + log_q, axis=1)     # [B, D]
  return log_qz, jnp.sum(log_marginals, axis=-1)


class KLDecomposition(NamedTuple):
  """Per-example terms of E[KL(q(z|x) || p(z))] = MI + TC + dim-wise KL (each [B])."""
  index_code_mi: jax.Array    # log q(z|x) - log q(z)
  total_correlation: jax.Array  # log q(z) - sum_d log q(z_d)
  dimwise_kl: jax.Array       # sum_d log q(z_d) - log p(z_d)


def kl_decomposition(z: jax.Array, *, mean: jax.Array, logvar: jax.Array,
                     pool_mean: jax.Array | None = None, pool_logvar: jax.Array | None = None,
                     estimator: str = 'mws', own_index: jax.Array | None = None,
                     dataset_size: int = 0) -> KLDecomposition:
  """beta-TCVAE's decomposition of the KL term at the samples z (Chen et al. 2018, eq 2).

  E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || prod_d q(z_d))
                           + sum_d KL(q(z_d) || p(z_d)),
  estimated per sample with log q(z) and log q(z_d) from :func:`log_aggregate_densities`.
  The three terms telescope: their sum is log q(z|x) - log p(z), the one-sample estimate
  of KL(q(z|x) || N(0, I)), whatever the estimator.

  Args:
    z: [B, D] samples of q(z|x) for the B examples of ``mean``/``logvar``.
    mean, logvar: [B, D] those examples' posteriors.
    pool_mean, pool_logvar: [M, D] the posteriors the aggregate is taken over (default:
      the B examples; a data-parallel step passes the global batch).
    estimator, own_index, dataset_size: see :func:`log_aggregate_densities`.

  Returns:
    :class:`KLDecomposition` of [B] terms.

  >>> import jax.numpy as jnp
  >>> terms = kl_decomposition(jnp.zeros((4, 2)), mean=jnp.zeros((4, 2)),
  ...                          logvar=jnp.zeros((4, 2)))
  >>> [round(float(t[0]), 4) for t in terms[:2]]   # one posterior for all: MI = TC = 0
  [0.0, 0.0]
  """
  pool_mean = mean if pool_mean is None else pool_mean
  pool_logvar = logvar if pool_logvar is None else pool_logvar
  log_qz_x = jnp.sum(_log_normal(z, mean, logvar), axis=-1)
  log_pz = jnp.sum(_log_normal(z, 0.0, jnp.zeros_like(z)), axis=-1)
  log_qz, log_prod = log_aggregate_densities(z, mean=pool_mean, logvar=pool_logvar,
                                             estimator=estimator, own_index=own_index,
                                             dataset_size=dataset_size)
  return KLDecomposition(index_code_mi=log_qz_x - log_qz, total_correlation=log_qz - log_prod,
                         dimwise_kl=log_prod - log_pz)


def dip_covariance(*, mean: jax.Array, logvar: jax.Array | None = None,
                   axis_name: str | None = None) -> jax.Array:
  """DIP-VAE's covariance: Cov[mean(x)] (I) or Cov_q(z) = E[diag exp(logvar(x))] +
  Cov[mean(x)] (II, when ``logvar`` is given), with batch moments (1/B, as
  disentanglement_lib), over the global batch when ``axis_name`` names the data axis.

  Args:
    mean: [B, D] encoder means.
    logvar: [B, D] encoder log-variances, or None for DIP-VAE-I.
    axis_name: the data-parallel axis, or None.

  Returns:
    [D, D] covariance.

  >>> import jax.numpy as jnp
  >>> dip_covariance(mean=jnp.array([[1.0], [-1.0]])).tolist()
  [[1.0]]
  """
  pmean = (lambda a: jax.lax.pmean(a, axis_name)) if axis_name else (lambda a: a)
  first = pmean(jnp.mean(mean, axis=0))
  second = pmean(jnp.mean(mean[:, :, None] * mean[:, None, :], axis=0))
  cov = second - first[:, None] * first[None, :]
  if logvar is not None:
    cov = cov + jnp.diag(pmean(jnp.mean(jnp.exp(logvar), axis=0)))
  return cov


def dip_penalty(cov: jax.Array, *, lambda_od: float, lambda_d: float) -> jax.Array:
  """lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2 (Kumar et al. 2018).

  Args:
    cov: [D, D] covariance (:func:`dip_covariance`).
    lambda_od, lambda_d: weights of the off-diagonal and diagonal terms.

  Returns:
    scalar penalty; 0 for the identity.

  >>> import jax.numpy as jnp
  >>> float(dip_penalty(2.0 * jnp.eye(2), lambda_od=1.0, lambda_d=3.0))
  6.0
  """
  diag = jnp.diagonal(cov)
  off_diagonal = jnp.sum(cov ** 2) - jnp.sum(diag ** 2)
  return lambda_od * off_diagonal + lambda_d * jnp.sum((diag - 1.0) ** 2)


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
  """Each column of z permuted across the batch independently (FactorVAE, Algorithm 1).

  The rows are then samples of prod_d q(z_d): every marginal is kept, the dependence
  between dimensions is broken.

  Args:
    key: PRNG key.
    z: [B, D] samples of q(z).

  Returns:
    [B, D], column d a permutation of z[:, d].

  >>> import jax, jax.numpy as jnp
  >>> z = jnp.arange(6.0).reshape(3, 2)
  >>> sorted(permute_dims(jax.random.key(0), z)[:, 1].tolist())
  [1.0, 3.0, 5.0]
  """
  keys = jax.random.split(key, z.shape[1])
  permute = lambda k, column: jax.random.permutation(k, column)
  return jax.vmap(permute, in_axes=(0, 1), out_axes=1)(keys, z)
