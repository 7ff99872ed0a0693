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
# Inputs are built in numpy and library functions are jitted: eager JAX compiles every
# primitive for every new shape, which would dominate the suite's run time.

kl_gauss = jax.jit(D.gaussian_kl_to_standard_normal, static_argnames='per_dimension')
log_density = jax.jit(D.gaussian_log_density)
kl_cat = jax.jit(D.categorical_kl_to_uniform)
entropy_cat = jax.jit(D.categorical_entropy)
gumbel_softmax = jax.jit(D.gumbel_softmax_sample, static_argnames='hard')


@jax.jit
def _gaussian_kl_mc_terms(mean, logvar, key):
  noise = jax.random.normal(key, (200_000,) + mean.shape)
  z = D.gaussian_sample(mean=mean[None], logvar=logvar[None], noise=noise)
  log_q = D.gaussian_log_density(z, mean=mean[None], logvar=logvar[None])
  log_p = D.gaussian_log_density(z, mean=jnp.zeros_like(mean), logvar=jnp.zeros_like(logvar))
  return log_q - log_p


def test_gaussian_kl_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 4)).astype(np.float32)
  logvar = rng.normal(scale=0.7, size=(3, 4)).astype(np.float32)
  kl = np.asarray(kl_gauss(mean=mean, logvar=logvar))
  chex.assert_shape(kl, (3,))
  _mc_check(np.asarray(_gaussian_kl_mc_terms(mean, logvar, jax.random.PRNGKey(1)), np.float64), kl)
  # Not a tautology: the KL must differ clearly between the examples.
  assert kl.max() - kl.min() > 0.5


def test_gaussian_kl_per_dimension_sums_to_total():
  rng = np.random.default_rng(1)
  mean, logvar = rng.normal(size=(2, 5, 3)).astype(np.float32)
  per_dim = np.asarray(kl_gauss(mean=mean, logvar=logvar, per_dimension=True))
  chex.assert_shape(per_dim, (5, 3))
  np.testing.assert_allclose(per_dim.sum(-1), kl_gauss(mean=mean, logvar=logvar), rtol=1e-6)
  # KL of one dimension by hand: 1/2 (s^2 + m^2 - 1 - log s^2).
  m, lv = float(mean[0, 0]), float(logvar[0, 0])
  np.testing.assert_allclose(per_dim[0, 0], 0.5 * (math.exp(lv) + m * m - 1 - lv), rtol=1e-5)


@HYP
@hypothesis.given(hnp.arrays(np.float32, (2, 3), elements=st.floats(-4, 4, width=32)),
                  hnp.arrays(np.float32, (2, 3), elements=st.floats(-4, 4, width=32)))
def test_gaussian_kl_nonnegative_and_zero_only_at_prior(mean, logvar):
  kl = np.asarray(kl_gauss(mean=mean, logvar=logvar))
  assert np.all(kl >= -1e-5)
  at_prior = np.all((mean == 0) & (logvar == 0), axis=-1)
  np.testing.assert_array_equal(kl[at_prior], 0.0)
  ref = 0.5 * np.sum(np.exp(logvar.astype(np.float64)) + mean.astype(np.float64) ** 2 - 1 - logvar,
                     axis=-1)
  np.testing.assert_allclose(kl, ref, rtol=1e-4, atol=1e-5)


def test_gaussian_log_density_matches_scipy():
  rng = np.random.default_rng(2)
  z, mean = rng.normal(size=(2, 6, 3))
  logvar = rng.normal(scale=0.5, size=(6, 3))
  ours = log_density(np.float32(z), mean=np.float32(mean), logvar=np.float32(logvar))
  ref = np.array([scipy.stats.multivariate_normal(mean[i], np.diag(np.exp(logvar[i]))).logpdf(z[i])
                  for i in range(6)])
  chex.assert_shape(ours, (6,))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  # Broadcasting: one mean/logvar for many points.
  ours_b = log_density(np.float32(z), mean=np.float32(mean[0]), logvar=np.float32(logvar[0]))
  ref_b = scipy.stats.norm(mean[0], np.exp(0.5 * logvar[0])).logpdf(z).sum(-1)
  np.testing.assert_allclose(ours_b, ref_b, rtol=1e-5, atol=1e-5)


def test_gaussian_entropy_matches_scipy():
  logvar = np.array([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]])
  ref = [scipy.stats.multivariate_normal(np.zeros(3), np.diag(np.exp(lv))).entropy()
         for lv in logvar]
  np.testing.assert_allclose(jax.jit(D.gaussian_entropy)(logvar=np.float32(logvar)), ref, rtol=1e-5)


def test_gaussian_sample_moments():
  mean = np.array([[1.0, -2.0]], np.float32)
  logvar = np.log(np.array([[0.25, 4.0]], np.float32))
  noise = np.random.default_rng(3).normal(size=(100_000, 2)).astype(np.float32)
  z = np.asarray(jax.jit(D.gaussian_sample)(mean=mean, logvar=logvar, noise=noise))
  np.testing.assert_allclose(z[:2], mean + np.exp(logvar / 2) * noise[:2], rtol=1e-6)
  np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.02)
  np.testing.assert_allclose(z.std(0), [0.5, 2.0], rtol=0.01)


# ----------------------------------------------------------------------------------
# Categorical.


@jax.jit
def _categorical_kl_mc_terms(logits, key):
  c = jax.random.categorical(key, logits, shape=(200_000, logits.shape[0]))
  log_q = jnp.take_along_axis(jax.nn.log_softmax(logits)[None], c[..., None], axis=-1)[..., 0]
  return log_q + math.log(logits.shape[-1])


def test_categorical_kl_matches_monte_carlo():
  logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, -3.0, 1.0, 0.0]],
                    np.float32)
  kl = np.asarray(kl_cat(logits=logits))
  samples = np.asarray(_categorical_kl_mc_terms(logits, jax.random.PRNGKey(3)), np.float64)
  np.testing.assert_allclose(kl[1], 0.0, atol=1e-6)      # q = prior: zero, and zero variance
  _mc_check(samples[:, [0, 2]], kl[[0, 2]])


def test_categorical_entropy_closed_form():
  logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [30.0, 0.0, 0.0, 0.0]])
  probs = scipy.special.softmax(logits, axis=-1)
  ours = np.asarray(entropy_cat(logits=np.float32(logits)))
  np.testing.assert_allclose(ours, scipy.stats.entropy(probs, axis=-1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours[1], math.log(4), rtol=1e-6)   # uniform: log K
  assert float(ours[2]) < 1e-5                                   # near one-hot: ~0
  # Shift invariance of logits; extra leading axes.
  np.testing.assert_allclose(entropy_cat(logits=np.float32(logits + 7.0)), ours, rtol=1e-5)
  chex.assert_shape(entropy_cat(logits=np.zeros((2, 3, 5), np.float32)), (2, 3))


@HYP
@hypothesis.given(hnp.arrays(np.float32, (3, 5), elements=st.floats(-8, 8, width=32)))
def test_categorical_kl_in_range_and_equals_logk_minus_entropy(logits):
  kl = np.asarray(kl_cat(logits=logits))
  assert np.all(kl >= -1e-5) and np.all(kl <= math.log(5) + 1e-5)
  probs = scipy.special.softmax(logits.astype(np.float64), axis=-1)
  ref = np.sum(probs * np.log(np.maximum(probs * 5, 1e-300)), axis=-1)
  np.testing.assert_allclose(kl, ref, atol=2e-5)


# ----------------------------------------------------------------------------------
# Gumbel-softmax.


LOGITS = np.array([1.0, 0.2, -0.5, 2.0, -2.0], np.float32)
N_GUMBEL = 100_000


@pytest.fixture(scope='module')
def gumbel():
  g = jax.jit(D.gumbel_noise, static_argnums=1)(jax.random.PRNGKey(7),
                                                (N_GUMBEL, LOGITS.shape[0]))
  return g, np.broadcast_to(LOGITS, g.shape)


def test_gumbel_noise_distribution(gumbel):
  g = np.asarray(gumbel[0]).ravel()
  # Gumbel(0, 1): mean = Euler-Mascheroni constant; KS test against scipy's gumbel_r.
  assert scipy.stats.kstest(g[:50_000], 'gumbel_r').pvalue > 1e-3
  np.testing.assert_allclose(g.mean(), np.euler_gamma, atol=0.01)


@pytest.mark.parametrize('temperature', [0.1, 1.0, 5.0])
def test_gumbel_softmax_on_simplex(gumbel, temperature):
  g, logits = gumbel
  y = np.asarray(gumbel_softmax(logits=logits, gumbel=g, temperature=np.float32(temperature)))
  chex.assert_shape(y, g.shape)
  assert np.all(y >= 0)
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_gumbel_softmax_argmax_frequencies_match_softmax(gumbel):
  g, logits = gumbel
  y = gumbel_softmax(logits=logits, gumbel=g, temperature=np.float32(0.7))
  counts = np.bincount(np.asarray(y).argmax(-1), minlength=LOGITS.shape[0])
  p = scipy.special.softmax(LOGITS.astype(np.float64))
  freq = counts / N_GUMBEL
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / N_GUMBEL))
  assert scipy.stats.chisquare(counts, N_GUMBEL * p).pvalue > 1e-4


def test_gumbel_softmax_approaches_one_hot_as_temperature_falls(gumbel):
  g, logits = gumbel
  one_hot = np.eye(LOGITS.shape[0])[np.argmax(logits + np.asarray(g), -1)]
  max_coord, dist = [], []
  for tau in (5.0, 1.0, 0.3, 0.1, 0.01, 1e-3):
    y = np.asarray(gumbel_softmax(logits=logits, gumbel=g, temperature=np.float32(tau)))
    max_coord.append(float(np.mean(y.max(-1))))
    dist.append(float(np.mean(np.abs(y - one_hot).sum(-1))))
  assert np.all(np.diff(max_coord) > 0), max_coord
  assert np.all(np.diff(dist) < 0), dist
  assert max_coord[0] < 0.6          # a high temperature is far from one-hot
  assert max_coord[-1] > 0.995       # tau -> 0: the max coordinate -> 1


def test_gumbel_softmax_hard_is_one_hot_with_straight_through_gradients():
  rng = np.random.default_rng(11)
  logits = rng.normal(size=(16, 6)).astype(np.float32)
  g = rng.gumbel(size=(16, 6)).astype(np.float32)
  w = rng.normal(size=(16, 6)).astype(np.float32)
  hard = np.asarray(gumbel_softmax(logits=logits, gumbel=g, temperature=np.float32(0.5), hard=True))
  soft = np.asarray(gumbel_softmax(logits=logits, gumbel=g, temperature=np.float32(0.5)))
  assert set(np.unique(hard)) <= {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), 1.0)
  np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))

  def loss(l, hard_flag):
    return jnp.sum(w * D.gumbel_softmax_sample(logits=l, gumbel=g, temperature=0.5,
                                               hard=hard_flag))
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_hard = grad(logits, True)
  g_soft = grad(logits, False)
  assert np.abs(np.asarray(g_hard)).max() > 1e-3   # gradients pass through the one-hot
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)  # ... as those of y_soft


def test_check_grads_gumbel_softmax_and_kls():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4))
    g = rng.gumbel(size=(3, 4))
    mean = rng.normal(size=(3, 2))
    logvar = rng.normal(scale=0.5, size=(3, 2))
    assert jnp.asarray(logits).dtype == jnp.float64
    jtu.check_grads(jax.jit(lambda l: D.gumbel_softmax_sample(logits=l, gumbel=g, temperature=0.7)),
                    (logits,), order=2, modes=('rev',))
    jtu.check_grads(jax.jit(lambda t: D.gumbel_softmax_sample(logits=logits, gumbel=g,
                                                              temperature=t)),
                    (0.9,), order=1, modes=('rev',))
    jtu.check_grads(jax.jit(lambda m, v: D.gaussian_kl_to_standard_normal(mean=m, logvar=v)),
                    (mean, logvar), order=1, modes=('fwd', 'rev'))
    jtu.check_grads(jax.jit(lambda l: D.categorical_kl_to_uniform(logits=l)), (logits,), order=1,
                    modes=('rev',))
    jtu.check_grads(jax.jit(lambda z, m, v: D.gaussian_log_density(z, mean=m, logvar=v)),
                    (g[:, :2], mean, logvar), order=1, modes=('rev',))


def test_gaussian_kl_gradient_closed_form():
  mean = np.array([[0.5, -1.0]], np.float32)
  logvar = np.array([[0.2, -0.3]], np.float32)
  gm, gv = jax.jit(jax.grad(lambda m, v: D.gaussian_kl_to_standard_normal(mean=m, logvar=v).sum(),
                            argnums=(0, 1)))(mean, logvar)
  np.testing.assert_allclose(gm, mean, rtol=1e-6)
  np.testing.assert_allclose(gv, 0.5 * (np.exp(logvar) - 1.0), rtol=1e-5)


# ----------------------------------------------------------------------------------
# Temperature schedule.


def test_annealed_temperature_constant_without_annealing():
  taus = jax.jit(lambda s: D.annealed_temperature(s, initial=0.8, floor=0.5, anneal_rate=0.0))(
      np.array([0, 1, 100, 10**6], np.int32))
  np.testing.assert_allclose(taus, 0.8, rtol=1e-7)


def test_annealed_temperature_monotone_exponential_and_floored():
  steps = np.arange(0, 5000, 7, dtype=np.int32)
  taus = np.asarray(jax.jit(jax.vmap(lambda s: D.annealed_temperature(
      s, initial=1.0, floor=0.5, anneal_rate=3e-4)))(steps))
  assert taus.dtype == np.float32
  assert np.all(np.diff(taus) <= 0)
  assert taus[0] == pytest.approx(1.0)
  assert taus.min() == pytest.approx(0.5, rel=1e-7)
  assert taus[-1] == np.float32(0.5)                    # floored, not below
  before = np.asarray(steps) < math.log(2) / 3e-4
  np.testing.assert_allclose(taus[before], np.exp(-3e-4 * np.asarray(steps)[before]), rtol=1e-5)
  assert np.all(np.diff(taus[before]) < 0)              # strictly decreasing until the floor
  assert np.all(taus[~before] == np.float32(0.5))
  # A floor above the initial value wins at every step.
  above = jax.jit(lambda s: D.annealed_temperature(s, initial=0.3, floor=0.5, anneal_rate=1.0))
  assert float(above(np.int32(0))) == pytest.approx(0.5)


def test_default_schedules_constant_capacity_variant_anneals_within_ten_epochs():
  """The schedules chosen in issue 10 item 6 (docs/mi_entropy_training.md): the default
  configs keep tau = 1.0; ':capacity' anneals to its floor of 0.5 within 10 epochs
  (2340 steps at batch 256)."""
  from tests.golden import make_golden  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax.config import validation  # pylint: disable=g-import-not-at-top
  for path in ('configs/mnist_joint.py', 'configs/fashion_joint.py', 'configs/mnist_class.py',
               'configs/fashion_class.py'):
    schedule = build.temperature_schedule(make_golden.load_config(path))
    assert float(schedule(np.int32(10**6))) == pytest.approx(1.0), path
  config = make_golden.load_config('configs/mnist_joint.py:capacity')
  validation.validate(config, check_paths=False)
  assert config.mi_weight == 10.0 and config.capacity.gaussian.max_nats == 2.0
  schedule = build.temperature_schedule(config)
  taus = [float(schedule(np.int32(s))) for s in (0, 1000, 2340)]
  assert taus[0] == pytest.approx(1.0) and 0.5 < taus[1] < 0.9
  assert taus[2] == pytest.approx(0.5)
  smoke = make_golden.load_config('configs/fashion_joint.py:capacity+smoke')
  assert smoke.temperature.anneal_rate == 3e-4 and smoke.train_limit == 512
