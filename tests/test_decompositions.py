"""decompositions.py: beta-TCVAE's KL decomposition, DIP-VAE's penalties, permute_dims."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax import decompositions

S2 = 0.25     # posterior variance of every example


def _gaussian_batch(cov, size, seed=0):
  """Means ~ N(0, cov), posteriors N(mean, S2 I), one sample each: the aggregate
  posterior of an infinite dataset is N(0, cov + S2 I)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  d = cov.shape[0]
  mean = jax.random.normal(k1, (size, d)) @ jnp.linalg.cholesky(cov).T
  logvar = jnp.full((size, d), math.log(S2))
  z = mean + math.sqrt(S2) * jax.random.normal(k2, (size, d))
  return z, mean, logvar


def _expected_log_density(cov):
  """E_{z ~ N(0, cov)} log N(z; 0, cov)."""
  d = cov.shape[0]
  return -0.5 * (d * (math.log(2 * math.pi) + 1) + np.linalg.slogdet(cov)[1])


def test_doctests():
  assert doctest.testmod(decompositions, verbose=False, report=False).failed == 0


@pytest.mark.parametrize('estimator', decompositions.ESTIMATORS)
def test_aggregate_log_density_matches_the_closed_form(estimator):
  cov = np.array([[1.0, 0.8], [0.8, 1.0]])
  z, mean, logvar = _gaussian_batch(jnp.asarray(cov), 4096)
  log_qz, log_prod = decompositions.log_aggregate_densities(
      z, mean=mean, logvar=logvar, estimator=estimator, dataset_size=10**6)
  aggregate = cov + S2 * np.eye(2)
  z = np.asarray(z)
  true = _log_density(z, aggregate)
  np.testing.assert_allclose(np.mean(log_qz), np.mean(true), atol=0.02)
  assert np.mean(np.abs(np.asarray(log_qz) - true)) < 0.06   # point by point
  marginals = sum(_log_density(z[:, d:d + 1], aggregate[d:d + 1, d:d + 1]) for d in range(2))
  np.testing.assert_allclose(np.mean(log_prod), np.mean(marginals), atol=0.02)
  # And the sampled mean is near the closed-form E log q(z) (sampling error ~0.02).
  np.testing.assert_allclose(np.mean(log_qz), _expected_log_density(aggregate), atol=0.06)


def _log_density(z, cov):
  """log N(z; 0, cov) of each row."""
  d = cov.shape[0]
  return -0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1]
                 + np.einsum('bi,ij,bj->b', z, np.linalg.inv(cov), z))


def test_terms_sum_to_the_one_sample_kl_and_estimate_the_kl():
  cov = jnp.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.3]])
  z, mean, logvar = _gaussian_batch(cov, 2048, seed=1)
  terms = decompositions.kl_decomposition(z, mean=mean, logvar=logvar)
  var = np.exp(np.asarray(logvar))
  one_sample = np.sum(-0.5 * (np.log(var) + (np.asarray(z - mean)) ** 2 / var)
                      + 0.5 * np.asarray(z) ** 2, axis=-1)
  np.testing.assert_allclose(sum(terms), one_sample, rtol=1e-4, atol=1e-4)
  analytic = np.mean(0.5 * np.sum(var + np.asarray(mean) ** 2 - 1 - np.log(var), axis=-1))
  np.testing.assert_allclose(np.mean(sum(terms)), analytic, atol=0.1)


def test_tc_is_zero_for_a_factorised_aggregate_and_the_closed_form_otherwise():
  # One posterior for every example: q(z) = q(z|x), factorised: MI = TC = 0 exactly.
  z, mean, logvar = _gaussian_batch(jnp.eye(2) * 1e-12, 64)
  mean = jnp.zeros_like(mean)
  terms = decompositions.kl_decomposition(z, mean=mean, logvar=logvar)
  np.testing.assert_allclose(terms.total_correlation, 0.0, atol=1e-5)
  np.testing.assert_allclose(terms.index_code_mi, 0.0, atol=1e-5)
  # Independent means: TC near 0; correlated: TC = (sum log var_d - log det cov) / 2.
  independent = _terms(_gaussian_batch(jnp.eye(2), 4096))
  assert abs(float(jnp.mean(independent.total_correlation))) < 0.02
  cov = np.array([[1.0, 0.9], [0.9, 1.0]])
  terms = _terms(_gaussian_batch(jnp.asarray(cov), 4096))
  aggregate = cov + S2 * np.eye(2)
  closed = 0.5 * (np.sum(np.log(np.diag(aggregate))) - np.linalg.slogdet(aggregate)[1])
  np.testing.assert_allclose(np.mean(terms.total_correlation), closed, atol=0.03)


def _terms(batch):
  z, mean, logvar = batch
  return decompositions.kl_decomposition(z, mean=mean, logvar=logvar)


def test_pool_and_stratified_weights():
  w = np.exp(np.asarray(decompositions.log_stratified_weights(
      jnp.array([0, 3]), pool_size=4, dataset_size=100)))
  np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(w[0], [1 / 100, 97 / 300, 1 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(w[1], [97 / 300, 1 / 3, 1 / 3, 1 / 100], rtol=1e-6)
  # A pool that holds the batch gives the batch's own values.
  z, mean, logvar = _gaussian_batch(jnp.eye(2), 8)
  alone = decompositions.kl_decomposition(z, mean=mean, logvar=logvar)
  pooled = decompositions.kl_decomposition(z[:4], mean=mean[:4], logvar=logvar[:4],
                                           pool_mean=mean, pool_logvar=logvar)
  np.testing.assert_allclose(pooled.total_correlation, alone.total_correlation[:4], rtol=1e-5)


def test_dip_covariances_match_numpy():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(50, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0, 0, 2.0]])
  logvar = rng.normal(size=(50, 3)) * 0.3
  cov_i = np.cov(mean, rowvar=False, bias=True)
  np.testing.assert_allclose(decompositions.dip_covariance(mean=jnp.asarray(mean)), cov_i,
                             rtol=1e-4, atol=1e-5)
  cov_ii = cov_i + np.diag(np.exp(logvar).mean(0))
  got = decompositions.dip_covariance(mean=jnp.asarray(mean), logvar=jnp.asarray(logvar))
  np.testing.assert_allclose(got, cov_ii, rtol=1e-4, atol=1e-5)
  off = cov_ii - np.diag(np.diag(cov_ii))
  expected = 2.0 * np.sum(off ** 2) + 7.0 * np.sum((np.diag(cov_ii) - 1) ** 2)
  np.testing.assert_allclose(decompositions.dip_penalty(got, lambda_od=2.0, lambda_d=7.0),
                             expected, rtol=1e-4)
  assert float(decompositions.dip_penalty(jnp.eye(4), lambda_od=5.0, lambda_d=5.0)) == 0.0


def test_permute_dims_keeps_marginals_and_breaks_dependence():
  _, z, _ = _gaussian_batch(jnp.array([[1.0, 0.99], [0.99, 1.0]]), 4096)   # the means
  permuted = np.asarray(decompositions.permute_dims(jax.random.key(3), z))
  z = np.asarray(z)
  for d in range(2):
    np.testing.assert_array_equal(np.sort(permuted[:, d]), np.sort(z[:, d]))
  assert not np.array_equal(permuted[:, 0], z[:, 0])
  assert np.corrcoef(z.T)[0, 1] > 0.9
  assert abs(np.corrcoef(permuted.T)[0, 1]) < 0.05   # each dim drawn its own permutation
