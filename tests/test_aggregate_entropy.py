"""Aggregate-posterior entropy estimators against quadrature and known biases.

* ``gaussian_aggregate_entropy_mc`` estimates the entropy of the mixture of the given
  examples' posteriors: checked against 1-D and 2-D quadrature of known Gaussian
  mixtures; its small-batch bias (down with j = i included, up when left out) is
  checked against the numbers its docstring states, and its log B ceiling exactly.
* ``joint_aggregate_entropy_mc`` is the joint H(g, c) of Gaussian dims and codes:
  checked against quadrature (one and two codes); the sum of the separate entropies
  overshoots it, and an MI "bound" built on that sum exceeds the true MI.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

from vmivae_jax import losses


def _norm_pdf(x, mean, var):
  return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def _tiled_samples(key, mean, logvar, copies):
  """``copies`` samples from each component: their mixture is the original one."""
  mean = jnp.tile(jnp.asarray(mean, jnp.float32), (copies, 1))
  logvar = jnp.tile(jnp.asarray(logvar, jnp.float32), (copies, 1))
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape), mean, logvar


def _mc_gaussian_entropy(mean, logvar, *, copies, reps, seed=0):
  @jax.jit
  def terms(key):
    samples, mean_t, logvar_t = _tiled_samples(key, mean, logvar, copies)
    return losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean_t, logvar=logvar_t,
                                                per_example=True)
  all_terms = jnp.concatenate([terms(k) for k in jax.random.split(jax.random.PRNGKey(seed), reps)])
  return float(jnp.mean(all_terms)), float(losses.standard_error(all_terms))


# ----------------------------------------------------------------------------------
# Gaussian aggregate entropy vs quadrature.

MEANS_1D = np.array([[-3.0], [-1.0], [0.0], [1.5], [4.0]])
LOGVARS_1D = np.log(np.array([[0.5], [1.0], [0.2], [2.0], [0.3]]))


def _mixture_entropy_1d(means, variances):
  def density(z):
    return np.mean(_norm_pdf(z, means, variances))
  value, err = scipy.integrate.quad(lambda z: -density(z) * np.log(max(density(z), 1e-300)),
                                    -30, 30, limit=400, points=list(means))
  assert err < 1e-8
  return value


def test_gaussian_aggregate_entropy_matches_1d_quadrature():
  true_h = _mixture_entropy_1d(MEANS_1D[:, 0], np.exp(LOGVARS_1D[:, 0]))
  est, se = _mc_gaussian_entropy(MEANS_1D, LOGVARS_1D, copies=400, reps=8)
  assert se < 0.01
  assert abs(est - true_h) < 4 * se, (est, true_h, se)
  # Not the entropy of a single moment-matched Gaussian, nor the mean component entropy.
  moment_var = np.mean(np.exp(LOGVARS_1D) + MEANS_1D**2) - np.mean(MEANS_1D) ** 2
  assert 0.5 * math.log(2 * math.pi * math.e * moment_var) - true_h > 0.05
  assert true_h - np.mean(0.5 * np.log(2 * np.pi * np.e * np.exp(LOGVARS_1D))) > 0.5


def test_gaussian_aggregate_entropy_matches_2d_quadrature():
  means = np.array([[-2.0, 0.5], [1.0, -1.5], [2.5, 2.0], [0.0, 0.0]])
  logvars = np.log(np.array([[0.3, 1.5], [1.0, 0.2], [0.5, 0.5], [2.0, 0.4]]))
  grid = np.linspace(-12.0, 12.0, 961)
  step = grid[1] - grid[0]
  zx, zy = np.meshgrid(grid, grid, indexing='ij')
  variances = np.exp(logvars)
  density = np.mean([_norm_pdf(zx, m[0], v[0]) * _norm_pdf(zy, m[1], v[1])
                     for m, v in zip(means, variances)], axis=0)
  assert abs(density.sum() * step**2 - 1.0) < 1e-8
  true_h = float(-np.sum(density * np.log(np.maximum(density, 1e-300))) * step**2)
  est, se = _mc_gaussian_entropy(means, logvars, copies=500, reps=8, seed=1)
  assert se < 0.01
  assert abs(est - true_h) < 4 * se, (est, true_h, se)


# ----------------------------------------------------------------------------------
# Small-batch bias, as documented: q(z|x_j) = N(mu_j, 1/4), mu_j ~ N(0, 15/4), so the
# population aggregate is N(0, 4) exactly (H = 2.112, I(x; z) = 1.386 nats).

S2, V = 0.25, 4.0
TRUE_H = 0.5 * math.log(2 * math.pi * math.e * V)
# batch size -> (documented bias with j = i, documented bias leaving it out)
DOCUMENTED_BIAS = {4: (-0.54, 3.3), 16: (-0.17, 0.43), 64: (-0.049, 0.083), 256: (-0.015, 0.018)}


def _population_batches(batch, reps, *, leave_one_out, seed):
  def one(key):
    k1, k2 = jax.random.split(key)
    mu = math.sqrt(V - S2) * jax.random.normal(k1, (batch, 1))
    z = mu + math.sqrt(S2) * jax.random.normal(k2, (batch, 1))
    return losses.gaussian_aggregate_entropy_mc(samples=z, mean=mu,
                                                logvar=jnp.full((batch, 1), math.log(S2)),
                                                leave_one_out=leave_one_out)
  keys = jax.random.split(jax.random.PRNGKey(seed), reps)
  return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


def test_docstring_states_the_bias_numbers_tested_here():
  doc = ' '.join(losses.gaussian_aggregate_entropy_mc.__doc__.split())
  for batch, (down, up) in DOCUMENTED_BIAS.items():
    assert f'B = {batch}: {down:g}' in doc and f'B = {batch}: +{up:g}' in doc, batch


@pytest.mark.parametrize('batch,reps', [(4, 4000), (16, 2000), (64, 1000), (256, 300)])
def test_small_batch_bias_down_with_self_up_without(batch, reps):
  down, up = DOCUMENTED_BIAS[batch]
  with_self = _population_batches(batch, reps, leave_one_out=False, seed=batch)
  bias, se = with_self.mean() - TRUE_H, with_self.std(ddof=1) / math.sqrt(reps)
  assert bias < -4 * se, (bias, se)                     # significantly below: biased down
  assert abs(bias - down) < max(0.15 * abs(down), 4 * se), (bias, down, se)
  if batch >= 16:                                       # the heavy tail at B = 4 is too wild
    loo = _population_batches(batch, reps, leave_one_out=True, seed=batch + 1)
    bias_up, se_up = loo.mean() - TRUE_H, loo.std(ddof=1) / math.sqrt(reps)
    assert bias_up > 4 * se_up, (bias_up, se_up)       # biased up: the two bracket H
    assert abs(bias_up - up) < max(0.25 * up, 4 * se_up), (bias_up, up, se_up)


def test_implied_mi_never_exceeds_log_batch_size():
  # Well-separated posteriors (true I(x; z) is huge): the estimate's implied MI,
  # H_est - mean_i (-log q(z_i|x_i)), is capped at log B, and reaches it here.
  rng = np.random.default_rng(3)
  for batch in (2, 8, 32):
    mean = (100.0 * rng.normal(size=(batch, 2))).astype(np.float32)
    logvar = np.full((batch, 2), math.log(0.01), np.float32)
    samples = (mean + 0.1 * rng.normal(size=(batch, 2))).astype(np.float32)
    h = float(losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar))
    conditional = -float(np.mean(losses.gaussian_log_q(q_mean=mean, q_logvar=logvar,
                                                       target=samples)))
    assert h - conditional <= math.log(batch) + 1e-4
    assert h - conditional == pytest.approx(math.log(batch), abs=1e-3)
  # A random (overlapping) batch obeys the cap too.
  mean, logvar = rng.normal(size=(2, 16, 3)).astype(np.float32)
  samples = (mean + np.exp(logvar / 2) * rng.normal(size=(16, 3))).astype(np.float32)
  terms = losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                               per_example=True)
  own = -np.asarray(losses.gaussian_log_q(q_mean=mean, q_logvar=logvar, target=samples))
  assert np.all(np.asarray(terms) <= own + math.log(16) + 1e-4)


def test_leave_one_out_and_per_example_terms():
  rng = np.random.default_rng(4)
  mean, logvar, noise = rng.normal(size=(3, 6, 2)).astype(np.float32)
  samples = mean + np.exp(logvar / 2) * noise
  pair = np.array([[scipy.stats.multivariate_normal(mean[j], np.diag(np.exp(logvar[j]))).pdf(
      samples[i]) for j in range(6)] for i in range(6)])
  terms = losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                               per_example=True)
  np.testing.assert_allclose(terms, -np.log(pair.mean(1)), rtol=1e-5)
  loo = losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                             leave_one_out=True, per_example=True)
  off_diagonal = (pair.sum(1) - np.diag(pair)) / 5
  np.testing.assert_allclose(loo, -np.log(off_diagonal), rtol=1e-5)
  assert float(losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean,
                                                    logvar=logvar)) == pytest.approx(
      float(np.mean(terms)), rel=1e-6)


# ----------------------------------------------------------------------------------
# Joint entropy of a Gaussian group and codes.

MEANS_G = np.array([[-2.0], [-1.5], [0.0], [0.5], [2.0], [2.5]])
LOGVARS_G = np.log(np.array([[0.3], [0.6], [0.4], [0.2], [0.5], [0.3]]))
# Code probabilities correlated with the Gaussian mean (left: code 0, right: code 2).
PI = np.array([[0.8, 0.15, 0.05], [0.7, 0.2, 0.1], [0.2, 0.6, 0.2],
               [0.1, 0.7, 0.2], [0.05, 0.15, 0.8], [0.1, 0.1, 0.8]])


def _joint_quadrature(means, variances, pi):
  """(H(g, c), H(g), H(c)) of (1/N) sum_j N(g; m_j, v_j) pi_j(c), by 1-d quadrature."""
  def joint(g):
    return np.mean(_norm_pdf(g, means[:, None], variances[:, None]) * pi, axis=0)  # [C]

  def neg_plogp(p):
    return -np.sum(p * np.log(np.maximum(p, 1e-300)))
  lim = dict(limit=400, points=list(means))
  h_joint, err = scipy.integrate.quad(lambda g: neg_plogp(joint(g)), -25, 25, **lim)
  h_g, err_g = scipy.integrate.quad(lambda g: neg_plogp(joint(g).sum()), -25, 25, **lim)
  assert max(err, err_g) < 1e-7
  return h_joint, h_g, float(scipy.stats.entropy(pi.mean(0)))


def _tiled_joint(key, copies, mean=MEANS_G, logvar=LOGVARS_G, logits=np.log(PI)):
  samples, mean_t, logvar_t = _tiled_samples(key, mean, logvar, copies)
  if isinstance(logits, (list, tuple)):
    return samples, mean_t, logvar_t, [jnp.tile(jnp.asarray(l, jnp.float32), (copies, 1))
                                       for l in logits]
  return samples, mean_t, logvar_t, jnp.tile(jnp.asarray(logits, jnp.float32), (copies, 1))


@pytest.fixture(scope='module')
def joint_toy():
  """Library estimates over 8 x 1800 samples of the 6-component toy, per example."""
  @jax.jit
  def one(key):
    samples, mean, logvar, logits = _tiled_joint(key, 300)
    h_joint = losses.joint_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                                logits=logits, per_example=True)
    h_g = losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                               per_example=True)
    h_c = losses.categorical_aggregate_entropy(logits=logits, per_example=True)
    log_q = (losses.gaussian_log_q(q_mean=mean, q_logvar=logvar, target=samples)
             + losses.categorical_log_q(q_logits=logits, target=jax.nn.softmax(logits)))
    return h_joint, h_g, h_c, log_q
  parts = [one(k) for k in jax.random.split(jax.random.PRNGKey(5), 8)]
  return [jnp.concatenate(p) for p in zip(*parts)]


def test_joint_entropy_matches_quadrature_and_separate_sum_overshoots(joint_toy):
  h_joint_terms, h_g_terms, h_c_terms, _ = joint_toy
  true_joint, true_g, true_c = _joint_quadrature(MEANS_G[:, 0], np.exp(LOGVARS_G[:, 0]), PI)
  est, se = float(jnp.mean(h_joint_terms)), float(losses.standard_error(h_joint_terms))
  assert abs(est - true_joint) < 4 * se, (est, true_joint, se)
  # The separate entropies overshoot by I_q(g; c) (here about 0.45 nats).
  overshoot = true_g + true_c - true_joint
  assert overshoot > 0.3
  separate = h_g_terms + h_c_terms
  assert float(jnp.mean(separate)) - est == pytest.approx(overshoot, abs=4 * float(
      losses.standard_error(separate - h_joint_terms)) + 1e-3)


def test_bound_with_separate_entropies_exceeds_true_mi_joint_does_not(joint_toy):
  # A perfect channel (x' reveals the example) and the exact posterior as Q: the bound
  # with the joint entropy equals I(x; g, c); with separate entropies it exceeds it.
  h_joint_terms, h_g_terms, h_c_terms, log_q = joint_toy
  true_joint, _, _ = _joint_quadrature(MEANS_G[:, 0], np.exp(LOGVARS_G[:, 0]), PI)
  conditional = np.mean(0.5 * np.log(2 * np.pi * np.e * np.exp(LOGVARS_G[:, 0]))
                        + scipy.stats.entropy(PI, axis=1))
  true_mi = true_joint - conditional
  joint_terms = losses.mi_lower_bound(log_q=log_q, entropy=h_joint_terms)
  joint_bound, joint_se = float(jnp.mean(joint_terms)), float(losses.standard_error(joint_terms))
  assert abs(joint_bound - true_mi) < 4 * joint_se + 1e-3, (joint_bound, true_mi)
  separate_terms = losses.mi_lower_bound(log_q=log_q, entropy=h_g_terms + h_c_terms)
  separate_bound = float(jnp.mean(separate_terms))
  assert separate_bound > true_mi + 0.3 and separate_bound - true_mi > 10 * float(
      losses.standard_error(separate_terms))


def test_two_codes_match_quadrature_and_the_product_code():
  rng = np.random.default_rng(6)
  logits_a = np.log(PI)
  logits_b = (1.5 * rng.normal(size=(6, 2)) + np.array([[1.0, -1.0]]) * MEANS_G).astype(np.float32)
  product = (logits_a[:, :, None] + logits_b[:, None, :]).reshape(6, -1).astype(np.float32)
  args = _tiled_joint(jax.random.PRNGKey(7), 250, logits=[logits_a, logits_b])
  h_two = losses.joint_aggregate_entropy_mc(samples=args[0], mean=args[1], logvar=args[2],
                                            logits=args[3], per_example=True)
  h_product = losses.joint_aggregate_entropy_mc(
      samples=args[0], mean=args[1], logvar=args[2],
      logits=jnp.tile(jnp.asarray(product), (250, 1)), per_example=True)
  np.testing.assert_allclose(h_two, h_product, rtol=1e-5, atol=1e-5)
  pi = scipy.special.softmax(product.astype(np.float64), axis=1)
  true_joint, _, _ = _joint_quadrature(MEANS_G[:, 0], np.exp(LOGVARS_G[:, 0]), pi)
  est, se = float(jnp.mean(h_two)), float(losses.standard_error(h_two))
  assert abs(est - true_joint) < 4 * se + 1e-3, (est, true_joint, se)


def test_joint_entropy_reduces_to_the_single_group_estimators():
  rng = np.random.default_rng(8)
  mean, logvar, noise = rng.normal(size=(3, 10, 2)).astype(np.float32)
  samples = mean + np.exp(logvar / 2) * noise
  logits = (2 * rng.normal(size=(10, 4))).astype(np.float32)
  for loo in (False, True):
    np.testing.assert_allclose(
        losses.joint_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar, logits=(),
                                          leave_one_out=loo, per_example=True),
        losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                             leave_one_out=loo, per_example=True), rtol=1e-5)
  empty = np.zeros((10, 0), np.float32)
  np.testing.assert_allclose(
      losses.joint_aggregate_entropy_mc(samples=empty, mean=empty, logvar=empty, logits=logits,
                                        per_example=True),
      losses.categorical_aggregate_entropy(logits=logits, per_example=True), rtol=1e-5)
  # Independent groups (same code distribution for every example): joint = sum.
  same = np.tile(logits[:1], (10, 1))
  np.testing.assert_allclose(
      losses.joint_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar, logits=same),
      losses.gaussian_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar)
      + losses.categorical_aggregate_entropy(logits=same), rtol=1e-5)


def test_joint_terms_in_row_chunks_equal_the_whole_set():
  rng = np.random.default_rng(9)
  mean, logvar, noise = rng.normal(size=(3, 12, 2)).astype(np.float32)
  samples = mean + np.exp(logvar / 2) * noise
  codes = [rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=(12, 2)).astype(np.float32)]
  for loo in (False, True):
    whole = losses.joint_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                              logits=codes, leave_one_out=loo, per_example=True)
    chunks = [losses.joint_aggregate_entropy_terms(
        samples=samples[r:r + 5], sample_logits=[c[r:r + 5] for c in codes], mean=mean,
        logvar=logvar, logits=codes,
        leave_out=jnp.arange(r, min(r + 5, 12)) if loo else None) for r in range(0, 12, 5)]
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-6)
