"""Tests for vmivae_jax.distributions: densities, KLs, Gumbel-softmax, temperature."""

import math

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from jax import test_util as jtu

from vmivae_jax import distributions as D

HYP = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


def _mc_check(samples: np.ndarray, expected: np.ndarray, n_se: float = 5.0):
  """|mean(samples) - expected| within n_se Monte Carlo standard errors (axis 0 = draws)."""
  mean = samples.mean(axis=0)
  se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
  assert np.all(se > 0)
  np.testing.assert_array_less(np.abs(mean - expected), n_se * se + 1e-6)


# ----------------------------------------------------------------------------------
# Gaussian.


def test_gaussian_kl_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 4)).astype(np.float32)
  logvar = rng.normal(scale=0.7, size=(3, 4)).astype(np.float32)
  kl = np.asarray(D.gaussian_kl_to_standard_normal(mean=mean, logvar=logvar))
  chex.assert_shape(kl, (3,))
  n = 200_000
  noise = jax.random.normal(jax.random.PRNGKey(1), (n, 3, 4))
  z = D.gaussian_sample(mean=mean[None], logvar=logvar[None], noise=noise)
  log_q = D.gaussian_log_density(z, mean=mean[None], logvar=logvar[None])
  log_p = D.gaussian_log_density(z, mean=jnp.zeros(4), logvar=jnp.zeros(4))
  _mc_check(np.asarray(log_q - log_p, np.float64), kl)
  # Not a tautology: the KL must differ clearly between the examples.
  assert kl.max() - kl.min() > 0.5


def test_gaussian_kl_per_dimension_sums_to_total():
  rng = np.random.default_rng(1)
  mean, logvar = rng.normal(size=(2, 5, 3)).astype(np.float32)
  per_dim = D.gaussian_kl_to_standard_normal(mean=mean, logvar=logvar, per_dimension=True)
  chex.assert_shape(per_dim, (5, 3))
  np.testing.assert_allclose(per_dim.sum(-1),
                             D.gaussian_kl_to_standard_normal(mean=mean, logvar=logvar),
                             rtol=1e-6)
  # KL of one dimension by hand: 1/2 (s^2 + m^2 - 1 - log s^2).
  m, lv = float(mean[0, 0]), float(logvar[0, 0])
  np.testing.assert_allclose(per_dim[0, 0], 0.5 * (math.exp(lv) + m * m - 1 - lv), rtol=1e-5)


@HYP
@hypothesis.given(hnp.arrays(np.float32, (2, 3), elements=st.floats(-4, 4, width=32)),
                  hnp.arrays(np.float32, (2, 3), elements=st.floats(-4, 4, width=32)))
def test_gaussian_kl_nonnegative_and_zero_only_at_prior(mean, logvar):
  kl = np.asarray(D.gaussian_kl_to_standard_normal(mean=mean, logvar=logvar))
  assert np.all(kl >= -1e-5)
  at_prior = np.all((mean == 0) & (logvar == 0), axis=-1)
  assert np.all(kl[~at_prior] > 0)


def test_gaussian_log_density_matches_scipy():
  rng = np.random.default_rng(2)
  z, mean = rng.normal(size=(2, 6, 3))
  logvar = rng.normal(scale=0.5, size=(6, 3))
  ours = D.gaussian_log_density(jnp.float32(z), mean=jnp.float32(mean), logvar=jnp.float32(logvar))
  ref = np.array([scipy.stats.multivariate_normal(mean[i], np.diag(np.exp(logvar[i]))).logpdf(z[i])
                  for i in range(6)])
  chex.assert_shape(ours, (6,))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  # Broadcasting: one mean/logvar for many points.
  ours_b = D.gaussian_log_density(jnp.float32(z), mean=jnp.float32(mean[0]),
                                  logvar=jnp.float32(logvar[0]))
  ref_b = scipy.stats.norm(mean[0], np.exp(0.5 * logvar[0])).logpdf(z).sum(-1)
  np.testing.assert_allclose(ours_b, ref_b, rtol=1e-5, atol=1e-5)


def test_gaussian_entropy_matches_scipy():
  logvar = np.array([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]])
  ref = [scipy.stats.multivariate_normal(np.zeros(3), np.diag(np.exp(lv))).entropy() for lv in logvar]
  np.testing.assert_allclose(D.gaussian_entropy(logvar=jnp.float32(logvar)), ref, rtol=1e-5)


def test_gaussian_sample_moments():
  mean = jnp.array([[1.0, -2.0]])
  logvar = jnp.log(jnp.array([[0.25, 4.0]]))
  noise = jax.random.normal(jax.random.PRNGKey(0), (100_000, 2))
  z = np.asarray(D.gaussian_sample(mean=mean, logvar=logvar, noise=noise))
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.02)
  np.testing.assert_allclose(z.std(0), [0.5, 2.0], rtol=0.01)


# ----------------------------------------------------------------------------------
# Categorical.


def test_categorical_kl_matches_monte_carlo():
  logits = jnp.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, -3.0, 1.0, 0.0]])
  kl = np.asarray(D.categorical_kl_to_uniform(logits=logits))
  n = 200_000
  c = jax.random.categorical(jax.random.PRNGKey(3), logits, shape=(n, 3))
  log_q = jnp.take_along_axis(jax.nn.log_softmax(logits)[None], c[..., None], axis=-1)[..., 0]
  samples = np.asarray(log_q + math.log(4), np.float64)
  np.testing.assert_allclose(kl[1], 0.0, atol=1e-6)      # q = prior: zero, and zero variance
  _mc_check(samples[:, [0, 2]], kl[[0, 2]])


def test_categorical_entropy_closed_form():
  logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [30.0, 0.0, 0.0, 0.0]])
  probs = scipy.special.softmax(logits, axis=-1)
  ours = D.categorical_entropy(logits=jnp.float32(logits))
  np.testing.assert_allclose(ours, scipy.stats.entropy(probs, axis=-1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours[1], math.log(4), rtol=1e-6)   # uniform: log K
  assert float(ours[2]) < 1e-10 + 1e-5                           # near one-hot: ~0
  # Shift invariance of logits; extra leading axes.
  np.testing.assert_allclose(D.categorical_entropy(logits=jnp.float32(logits + 7.0)), ours, rtol=1e-5)
  chex.assert_shape(D.categorical_entropy(logits=jnp.zeros((2, 3, 5))), (2, 3))


@HYP
@hypothesis.given(hnp.arrays(np.float32, (3, 5), elements=st.floats(-8, 8, width=32)))
def test_categorical_kl_in_range_and_equals_logk_minus_entropy(logits):
  kl = np.asarray(D.categorical_kl_to_uniform(logits=logits))
  assert np.all(kl >= -1e-5) and np.all(kl <= math.log(5) + 1e-5)
  probs = scipy.special.softmax(logits.astype(np.float64), axis=-1)
  ref = np.sum(probs * np.log(np.maximum(probs * 5, 1e-300)), axis=-1)
  np.testing.assert_allclose(kl, ref, atol=2e-5)


# ----------------------------------------------------------------------------------
# Gumbel-softmax.


LOGITS = jnp.array([1.0, 0.2, -0.5, 2.0, -2.0])
N_GUMBEL = 100_000


@pytest.fixture(scope='module')
def gumbel():
  return D.gumbel_noise(jax.random.PRNGKey(7), (N_GUMBEL, LOGITS.shape[0]))


def test_gumbel_noise_distribution(gumbel):
  g = np.asarray(gumbel).ravel()
  # Gumbel(0, 1): mean = Euler-Mascheroni constant, variance pi^2 / 6.
  assert scipy.stats.kstest(g[:50_000], 'gumbel_r').pvalue > 1e-3
  np.testing.assert_allclose(g.mean(), np.euler_gamma, atol=0.01)


@pytest.mark.parametrize('temperature', [0.1, 1.0, 5.0])
def test_gumbel_softmax_on_simplex(gumbel, temperature):
  y = np.asarray(D.gumbel_softmax_sample(logits=jnp.broadcast_to(LOGITS, gumbel.shape),
                                         gumbel=gumbel, temperature=temperature))
  chex.assert_shape(y, gumbel.shape)
  assert np.all(y >= 0)
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_gumbel_softmax_argmax_frequencies_match_softmax(gumbel):
  y = D.gumbel_softmax_sample(logits=jnp.broadcast_to(LOGITS, gumbel.shape), gumbel=gumbel,
                              temperature=0.7)
  counts = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=LOGITS.shape[0])
  p = scipy.special.softmax(np.asarray(LOGITS, np.float64))
  freq = counts / N_GUMBEL
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / N_GUMBEL))
  assert scipy.stats.chisquare(counts, N_GUMBEL * p).pvalue > 1e-4


def test_gumbel_softmax_approaches_one_hot_as_temperature_falls(gumbel):
  logits = jnp.broadcast_to(LOGITS, gumbel.shape)
  one_hot = jax.nn.one_hot(jnp.argmax(logits + gumbel, -1), LOGITS.shape[0])
  max_coord, dist = [], []
  for tau in (5.0, 1.0, 0.3, 0.1, 0.01, 1e-3):
    y = D.gumbel_softmax_sample(logits=logits, gumbel=gumbel, temperature=tau)
    max_coord.append(float(jnp.mean(jnp.max(y, -1))))
    dist.append(float(jnp.mean(jnp.abs(y - one_hot).sum(-1))))
  assert np.all(np.diff(max_coord) > 0), max_coord
  assert np.all(np.diff(dist) < 0), dist
  assert max_coord[0] < 0.6          # a high temperature is far from one-hot
  assert max_coord[-1] > 0.995       # tau -> 0: the max coordinate -> 1


def test_gumbel_softmax_hard_is_one_hot_with_straight_through_gradients():
  key = jax.random.PRNGKey(11)
  logits = jax.random.normal(key, (16, 6))
  g = D.gumbel_noise(jax.random.PRNGKey(12), (16, 6))
  hard = D.gumbel_softmax_sample(logits=logits, gumbel=g, temperature=0.5, hard=True)
  soft = D.gumbel_softmax_sample(logits=logits, gumbel=g, temperature=0.5)
  h = np.asarray(hard)
  assert set(np.unique(h)) <= {0.0, 1.0}
  np.testing.assert_array_equal(h.sum(-1), 1.0)
  np.testing.assert_array_equal(h.argmax(-1), np.asarray(soft).argmax(-1))
  w = jax.random.normal(jax.random.PRNGKey(13), (16, 6))

  def loss(l, hard_flag):
    return jnp.sum(w * D.gumbel_softmax_sample(logits=l, gumbel=g, temperature=0.5,
                                               hard=hard_flag))
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_hard = grad(logits, True)
  g_soft = grad(logits, False)
  assert float(jnp.abs(g_hard).max()) > 1e-3   # gradients pass through the one-hot
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)  # ... as those of y_soft


def test_check_grads_gumbel_softmax_and_kls():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(3, 4)))
    g = jnp.asarray(rng.gumbel(size=(3, 4)))
    mean = jnp.asarray(rng.normal(size=(3, 2)))
    logvar = jnp.asarray(rng.normal(scale=0.5, size=(3, 2)))
    assert logits.dtype == jnp.float64
    jtu.check_grads(jax.jit(lambda l: D.gumbel_softmax_sample(logits=l, gumbel=g, temperature=0.7)),
                    (logits,), order=2, modes=('rev',))
    jtu.check_grads(jax.jit(lambda t: D.gumbel_softmax_sample(logits=logits, gumbel=g,
                                                              temperature=t)),
                    (jnp.float64(0.9),), order=1, modes=('rev',))
    jtu.check_grads(jax.jit(lambda m, v: D.gaussian_kl_to_standard_normal(mean=m, logvar=v)),
                    (mean, logvar), order=1, modes=('fwd', 'rev'))
    jtu.check_grads(jax.jit(lambda l: D.categorical_kl_to_uniform(logits=l)), (logits,), order=1,
                    modes=('fwd', 'rev'))
    jtu.check_grads(jax.jit(lambda z, m, v: D.gaussian_log_density(z, mean=m, logvar=v)),
                    (g[:, :2], mean, logvar), order=1, modes=('rev',))


def test_gaussian_kl_gradient_closed_form():
  mean = jnp.array([[0.5, -1.0]])
  logvar = jnp.array([[0.2, -0.3]])
  gm, gv = jax.grad(lambda m, v: D.gaussian_kl_to_standard_normal(mean=m, logvar=v).sum(),
                    argnums=(0, 1))(mean, logvar)
  np.testing.assert_allclose(gm, mean, rtol=1e-6)
  np.testing.assert_allclose(gv, 0.5 * (jnp.exp(logvar) - 1.0), rtol=1e-5)


# ----------------------------------------------------------------------------------
# Temperature schedule.


def test_annealed_temperature_constant_without_annealing():
  for t in (0, 1, 100, 10**6):
    assert float(D.annealed_temperature(t, initial=0.8, floor=0.5, anneal_rate=0.0)) == \
        pytest.approx(0.8, rel=1e-7)


def test_annealed_temperature_monotone_exponential_and_floored():
  steps = jnp.arange(0, 5000, 7)
  taus = np.asarray(jax.jit(jax.vmap(lambda s: D.annealed_temperature(
      s, initial=1.0, floor=0.5, anneal_rate=3e-4)))(steps))
  assert taus.dtype == np.float32
  assert np.all(np.diff(taus) <= 0)
  assert taus[0] == pytest.approx(1.0)
  assert taus.min() == pytest.approx(0.5, rel=1e-7)
  assert taus[-1] == np.float32(0.5)                    # floored, not below
  before = np.asarray(steps) < math.log(2) / 3e-4
  np.testing.assert_allclose(taus[before], np.exp(-3e-4 * np.asarray(steps)[before]), rtol=1e-5)
  assert np.all(taus[~before] == np.float32(0.5))
  # A floor above the initial value wins at every step.
  assert float(D.annealed_temperature(0, initial=0.3, floor=0.5, anneal_rate=1.0)) == \
      pytest.approx(0.5)
