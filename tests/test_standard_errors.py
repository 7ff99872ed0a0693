"""Standard errors of the reported MI numbers against simulation.

Each test repeats an estimate on many independent samples from a known population
and compares the spread of the estimates with the standard error reported from a
single sample (root mean square over repetitions), within a tolerance set by the
number of repetitions; a plausible wrong standard error must miss it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax import losses

REPS = 600
# The sample std of REPS estimates has relative error ~ 1/sqrt(2 REPS) = 2.9%.
TOL = 0.12


def _spread_vs_reported(estimates, reported_se):
  estimates, reported_se = np.asarray(estimates, np.float64), np.asarray(reported_se, np.float64)
  # Root-mean-square SE: the reported SE squared is (nearly) unbiased for the variance.
  return estimates.std(ddof=1) / np.sqrt(np.mean(reported_se**2))


def test_standard_error_formula():
  x = np.random.default_rng(0).exponential(size=(7, 40)).astype(np.float32)
  np.testing.assert_allclose(losses.standard_error(jnp.asarray(x), axis=1),
                             x.std(axis=1, ddof=1) / math.sqrt(40), rtol=1e-5)
  np.testing.assert_allclose(losses.standard_error(jnp.asarray(x.T)),
                             x.std(axis=1, ddof=1) / math.sqrt(40), rtol=1e-5)
  # Against simulation: means of 10 skewed values.
  samples = np.random.default_rng(1).exponential(size=(4000, 10)).astype(np.float32)
  ratio = _spread_vs_reported(samples.mean(1), losses.standard_error(jnp.asarray(samples), axis=1))
  assert abs(ratio - 1) < 0.06, ratio


# ----------------------------------------------------------------------------------
# Exact code MI: population of encoders q(c|x) = softmax(W h_x), h_x ~ N(0, I).

W_CODE = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32) * 1.5


@pytest.mark.parametrize('n', [50, 400])
def test_exact_code_mi_standard_error_matches_simulation(n):
  @jax.jit
  def one(key):
    logits = jax.random.normal(key, (n, 3)) @ W_CODE
    terms = losses.exact_categorical_mutual_information(logits=logits, per_example=True)
    return (losses.exact_categorical_mutual_information(logits=logits), jnp.mean(terms),
            losses.standard_error(terms))
  mi, mean_terms, se = map(np.asarray, jax.vmap(one)(jax.random.split(jax.random.PRNGKey(n),
                                                                      REPS)))
  np.testing.assert_allclose(mean_terms, mi, atol=2e-6)   # mean of the terms is the MI
  assert abs(_spread_vs_reported(mi, se) - 1) < TOL, (_spread_vs_reported(mi, se), n)
  # Wrong alternative: the SE of the per-example entropies alone (ignoring H(mean pi)).
  def wrong(key):
    logits = jax.random.normal(key, (n, 3)) @ W_CODE
    from vmivae_jax import distributions
    return losses.standard_error(distributions.categorical_entropy(logits=logits))
  wrong_se = np.asarray(jax.jit(jax.vmap(wrong))(jax.random.split(jax.random.PRNGKey(n), REPS)))
  assert abs(_spread_vs_reported(mi, wrong_se) - 1) > 2 * TOL


# ----------------------------------------------------------------------------------
# Fresh-Q bound: q(z|x) = N(mu_x, S2), mu_x ~ N(0, V - S2); x' = z + SIGMA noise;
# a fixed (imperfect) linear-Gaussian Q. Bound terms: log Q(z_i|x'_i) + h_i.

S2, V, SIGMA = 0.25, 4.0, 0.7


def _bound_terms(key, n):
  k1, k2, k3 = jax.random.split(key, 3)
  mu = math.sqrt(V - S2) * jax.random.normal(k1, (n, 1))
  logvar = jnp.full((n, 1), math.log(S2))
  z = mu + math.sqrt(S2) * jax.random.normal(k2, (n, 1))
  x_prime = z + SIGMA * jax.random.normal(k3, (n, 1))
  log_q = losses.gaussian_log_q(q_mean=0.8 * x_prime, q_logvar=jnp.full((n, 1), -0.5), target=z)
  h = losses.gaussian_aggregate_entropy_mc(samples=z, mean=mu, logvar=logvar, per_example=True)
  return log_q, h


@pytest.mark.parametrize('n', [64, 512])
def test_fresh_q_bound_standard_error_matches_simulation(n):
  @jax.jit
  def one(key):
    log_q, h = _bound_terms(key, n)
    terms = losses.mi_lower_bound(log_q=log_q, entropy=h)
    return jnp.mean(terms), losses.standard_error(terms), losses.standard_error(log_q)
  bound, se, log_q_only_se = map(np.asarray, jax.vmap(one)(
      jax.random.split(jax.random.PRNGKey(n), REPS)))
  ratio = _spread_vs_reported(bound, se)
  assert abs(ratio - 1) < TOL, (ratio, n)
  # Treating the entropy as a constant (SE of log Q alone) misstates the spread.
  assert abs(_spread_vs_reported(bound, log_q_only_se) - 1) > 2 * TOL


# ----------------------------------------------------------------------------------
# Joint entropy of a Gaussian dim and a code whose probabilities follow the mean.


def test_joint_entropy_standard_error_matches_simulation():
  n = 128

  @jax.jit
  def one(key):
    k1, k2 = jax.random.split(key)
    mu = 1.5 * jax.random.normal(k1, (n, 1))
    logvar = jnp.full((n, 1), math.log(0.3))
    z = mu + math.sqrt(0.3) * jax.random.normal(k2, (n, 1))
    logits = jnp.concatenate([2.0 * mu, jnp.zeros_like(mu), -2.0 * mu], axis=1)
    terms = losses.joint_aggregate_entropy_mc(samples=z, mean=mu, logvar=logvar, logits=logits,
                                              per_example=True)
    return jnp.mean(terms), losses.standard_error(terms)
  h, se = map(np.asarray, jax.vmap(one)(jax.random.split(jax.random.PRNGKey(11), REPS)))
  ratio = _spread_vs_reported(h, se)
  assert abs(ratio - 1) < TOL, ratio
