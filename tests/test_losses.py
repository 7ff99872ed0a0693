"""Tests for vmivae_jax.losses: likelihoods, the Barber-Agakov MI bound, exact code MI.

The MI bound is checked on toy channels whose mutual information is known
analytically (or by 1-d numerical integration): the bound must stay below the true
MI for any Q, and reach it when Q is trained (a linear Q can represent the exact
posterior in each toy).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.stats

from vmivae_jax import distributions
from vmivae_jax import losses

N_EVAL = 200_000


@jax.jit
def mi_and_entropy(logits):
  """(exact_categorical_mutual_information, categorical_aggregate_entropy): one compile."""
  return (losses.exact_categorical_mutual_information(logits=logits),
          losses.categorical_aggregate_entropy(logits=logits))


def exact_mi(*, logits):
  return float(mi_and_entropy(logits)[0])


def aggregate_entropy(*, logits):
  return float(mi_and_entropy(logits)[1])


def _mean_and_se(x) -> tuple[float, float]:
  x = np.asarray(x, np.float64)
  return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def _train(loss_fn, params, sampler, *, steps=300, lr=0.05, batch=1024, seed=0):
  """Adam on loss_fn(params, batch) with fresh toy samples each step (one lax.scan)."""
  tx = optax.adam(lr)

  @jax.jit
  def run(params, key):
    def body(carry, k):
      p, s = carry
      grads = jax.grad(loss_fn)(p, sampler(k, batch))
      updates, s = tx.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), None
    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), jax.random.split(key, steps))
    return params
  return run(params, jax.random.PRNGKey(seed))


# ----------------------------------------------------------------------------------
# Toy 1: categorical c ~ p through a symmetric channel: x = c w.p. 1 - eps, else
# uniform over the K symbols. Q(c|x) = softmax(onehot(x) W + b).

K_SYM, EPS = 4, 0.3
P_SYM = np.array([0.4, 0.3, 0.2, 0.1])


def _symmetric_channel():
  return (1 - EPS) * np.eye(K_SYM) + EPS / K_SYM * np.ones((K_SYM, K_SYM))


def _discrete_mi(prior: np.ndarray, channel: np.ndarray) -> float:
  joint = prior[:, None] * channel
  marginal = joint.sum(0)
  return float(np.sum(joint * np.log(channel / marginal[None])))


def _sample_symmetric(key, n, prior=P_SYM):
  kc, kf, kr = jax.random.split(key, 3)
  c = jax.random.categorical(kc, jnp.log(jnp.asarray(prior, jnp.float32)), shape=(n,))
  flip = jax.random.uniform(kf, (n,)) < EPS
  x = jnp.where(flip, jax.random.randint(kr, (n,), 0, K_SYM), c)
  return jax.nn.one_hot(x, K_SYM), jax.nn.one_hot(c, K_SYM)


@jax.jit
def _sym_bound_terms(params, batch, entropy):
  x, c = batch
  q_logits = x @ params['w'] + params['b']
  return losses.mi_lower_bound(log_q=losses.categorical_log_q(q_logits=q_logits, target=c),
                               entropy=entropy)


def test_exact_code_mi_of_channel_rows_matches_closed_form_and_reference():
  # Encoder rows q(c|x) = the symmetric channel's rows, x uniform over K symbols:
  # I(x; c) = log K - H(row), row = (1-eps+eps/K, eps/K, ...); K=4, eps=0.3:
  # row = (0.775, 0.075, 0.075, 0.075), H(row) = 0.780352, I = 0.605943.
  logits = np.log(_symmetric_channel()).astype(np.float32)
  assert exact_mi(logits=logits) == pytest.approx(0.605943, abs=2e-6)
  terms = losses.exact_categorical_mutual_information(logits=logits, per_example=True)
  np.testing.assert_allclose(terms, 0.605943, atol=2e-6)  # each row: KL(row || uniform)
  # Non-uniform p(x) = P_SYM as 4:3:2:1 copies of the rows: the library's exact MI
  # equals the independent joint-table reference used by the bound tests below.
  weighted = np.repeat(logits, (P_SYM * 10).astype(int), axis=0)
  assert exact_mi(logits=weighted) == pytest.approx(_discrete_mi(P_SYM, _symmetric_channel()),
                                                    abs=3e-6)


@pytest.fixture(scope='module')
def symmetric_eval():
  batch = jax.jit(_sample_symmetric, static_argnums=1)(jax.random.PRNGKey(100), N_EVAL)
  entropy = aggregate_entropy(logits=np.log(P_SYM).astype(np.float32)[None])
  assert entropy == pytest.approx(scipy.stats.entropy(P_SYM), rel=1e-5)
  return batch, entropy, _discrete_mi(P_SYM, _symmetric_channel())


def test_mi_bound_below_true_mi_for_untrained_and_random_q_symmetric(symmetric_eval):
  batch, entropy, true_mi = symmetric_eval
  zeros = {'w': np.zeros((K_SYM, K_SYM), np.float32), 'b': np.zeros(K_SYM, np.float32)}
  mean, se = _mean_and_se(_sym_bound_terms(zeros, batch, entropy))
  # Untrained Q is uniform: bound = H(p) - log K < 0.
  assert mean == pytest.approx(scipy.stats.entropy(P_SYM) - math.log(K_SYM), abs=1e-5)
  rng = np.random.default_rng(0)
  for seed in range(5):
    params = {'w': 2.0 * rng.normal(size=(K_SYM, K_SYM)).astype(np.float32),
              'b': rng.normal(size=K_SYM).astype(np.float32)}
    mean, se = _mean_and_se(_sym_bound_terms(params, batch, entropy))
    assert mean <= true_mi + 3 * se, (seed, mean, true_mi)


def test_mi_bound_tight_at_exact_posterior_and_after_training_symmetric(symmetric_eval):
  batch, entropy, true_mi = symmetric_eval
  joint = P_SYM[:, None] * _symmetric_channel()              # [c, x]
  posterior = joint / joint.sum(0, keepdims=True)            # p(c | x)
  exact = {'w': np.log(posterior).T.astype(np.float32), 'b': np.zeros(K_SYM, np.float32)}
  mean, se = _mean_and_se(_sym_bound_terms(exact, batch, entropy))
  assert abs(mean - true_mi) < 4 * se + 1e-4

  def loss(params, b):
    x, c = b
    return -jnp.mean(losses.categorical_log_q(q_logits=x @ params['w'] + params['b'], target=c))
  init = {'w': np.zeros((K_SYM, K_SYM), np.float32), 'b': np.zeros(K_SYM, np.float32)}
  trained = _train(loss, init, _sample_symmetric, steps=300, lr=0.1)
  mean, se = _mean_and_se(_sym_bound_terms(trained, batch, entropy))
  assert abs(mean - true_mi) < 0.05, (mean, true_mi)
  assert mean <= true_mi + 3 * se
  assert true_mi > 0.3  # the toy has real information to find


# ----------------------------------------------------------------------------------
# Toy 2: c ~ p over K = 2, x' = onehot(c) + sigma * noise in R^2. The exact posterior
# depends on x' only through d = x'_0 - x'_1 ~ N(+-1, 2 sigma^2), so the true MI is a
# 1-d integral. A linear softmax Q represents the exact posterior.

SIGMA_CAT = 0.8
P_GAUSS = np.array([0.7, 0.3])


def _gaussian_channel_mi_by_quadrature() -> float:
  s = SIGMA_CAT * math.sqrt(2.0)
  mus = (1.0, -1.0)

  def integrand(d):
    dens = np.array([scipy.stats.norm.pdf(d, m, s) for m in mus])
    marginal = np.dot(P_GAUSS, dens)
    return float(np.sum(P_GAUSS * dens * np.log(np.maximum(dens, 1e-300) / marginal)))
  value, err = scipy.integrate.quad(integrand, -25, 25, limit=200)
  assert err < 1e-7
  return value


def _sample_gaussian_channel(key, n):
  kc, kn = jax.random.split(key)
  c = jax.random.categorical(kc, jnp.log(jnp.asarray(P_GAUSS, jnp.float32)), shape=(n,))
  target = jax.nn.one_hot(c, 2)
  return target + SIGMA_CAT * jax.random.normal(kn, (n, 2)), target


def test_mi_bound_on_gaussian_channel_for_categorical_code():
  true_mi = _gaussian_channel_mi_by_quadrature()
  x, c = jax.jit(_sample_gaussian_channel, static_argnums=1)(jax.random.PRNGKey(200), N_EVAL)
  entropy = aggregate_entropy(logits=np.log(P_GAUSS).astype(np.float32)[None])

  @jax.jit
  def terms(params):
    q_logits = x @ params['w'] + params['b']
    return losses.mi_lower_bound(log_q=losses.categorical_log_q(q_logits=q_logits, target=c),
                                 entropy=entropy)

  def bound(params):
    return _mean_and_se(terms(params))

  # Exact posterior: log p(c|x') = log p(c) + x'_c / sigma^2 + const.
  exact = {'w': (np.eye(2) / SIGMA_CAT**2).astype(np.float32),
           'b': np.log(P_GAUSS).astype(np.float32)}
  mean, se = bound(exact)
  assert abs(mean - true_mi) < 4 * se + 1e-4, (mean, true_mi)

  # Untrained (uniform) and random Q: below the true MI.
  zeros = {'w': np.zeros((2, 2), np.float32), 'b': np.zeros(2, np.float32)}
  mean, se = bound(zeros)
  assert mean <= true_mi + 3 * se
  rng = np.random.default_rng(1)
  for seed in range(3):
    params = {'w': 3.0 * rng.normal(size=(2, 2)).astype(np.float32), 'b': zeros['b']}
    mean, se = bound(params)
    assert mean <= true_mi + 3 * se, (seed, mean, true_mi)

  def loss(params, b):
    xb, cb = b
    return -jnp.mean(losses.categorical_log_q(q_logits=xb @ params['w'] + params['b'], target=cb))
  trained = _train(loss, zeros, _sample_gaussian_channel,
                   steps=400, lr=0.05)
  mean, se = bound(trained)
  assert abs(mean - true_mi) < 0.05, (mean, true_mi)
  assert mean <= true_mi + 3 * se


# ----------------------------------------------------------------------------------
# Toy 3: z ~ N(0, 1), x' = z + sigma * noise; I = 1/2 log(1 + 1/sigma^2). The exact
# posterior is N(x' / (1 + sigma^2), sigma^2 / (1 + sigma^2)): a linear-Gaussian Q.

SIGMA_Z = 0.5


def _sample_gaussian_toy(key, n):
  kz, kn = jax.random.split(key)
  z = jax.random.normal(kz, (n, 1))
  return z + SIGMA_Z * jax.random.normal(kn, (n, 1)), z


def _gauss_log_q(params, x, z):
  return losses.gaussian_log_q(q_mean=params['a'] * x + params['b'],
                               q_logvar=jnp.broadcast_to(params['lv'], x.shape), target=z)


def test_mi_bound_gaussian_toy():
  true_mi = 0.5 * math.log(1 + 1 / SIGMA_Z**2)
  assert true_mi == pytest.approx(0.5 * math.log(5.0))
  x, z = jax.jit(_sample_gaussian_toy, static_argnums=1)(jax.random.PRNGKey(300), N_EVAL)
  entropy = losses.gaussian_prior_entropy(num_dims=1)

  terms = jax.jit(lambda p: losses.mi_lower_bound(log_q=_gauss_log_q(p, x, z), entropy=entropy))

  def bound(params):
    return _mean_and_se(terms(params))

  exact = {'a': np.float32(1 / (1 + SIGMA_Z**2)), 'b': np.float32(0.0),
           'lv': np.float32(math.log(SIGMA_Z**2 / (1 + SIGMA_Z**2)))}
  mean, se = bound(exact)
  assert abs(mean - true_mi) < 4 * se + 1e-4

  untrained = {'a': np.float32(0.0), 'b': np.float32(0.0), 'lv': np.float32(0.0)}
  mean, se = bound(untrained)          # Q = N(0, 1) = the prior: bound ~ 0
  assert abs(mean) < 4 * se + 1e-4
  rng = np.random.default_rng(0)
  for _ in range(5):
    params = {k: np.float32(v) for k, v in zip('a b lv'.split(), rng.normal(size=3))}
    mean, se = bound(params)
    assert mean <= true_mi + 3 * se

  def loss(params, b):
    return -jnp.mean(_gauss_log_q(params, *b))
  trained = _train(loss, untrained, _sample_gaussian_toy, steps=300, lr=0.05)
  mean, se = bound(trained)
  assert abs(mean - true_mi) < 0.05, (mean, true_mi)
  assert mean <= true_mi + 3 * se


@pytest.mark.parametrize('aggregate_var', [1.0, 4.0])
def test_gaussian_aggregate_entropy_mc_approximates_true_entropy(aggregate_var):
  # q(z|x_j) = N(mu_j, s^2) with mu_j ~ N(0, v - s^2): the aggregate is exactly N(0, v).
  b, s2 = 2000, 0.25
  rng = np.random.default_rng(4)
  mean = (math.sqrt(aggregate_var - s2) * rng.normal(size=(b, 1))).astype(np.float32)
  logvar = np.full((b, 1), math.log(s2), np.float32)
  samples = (mean + math.sqrt(s2) * rng.normal(size=(b, 1))).astype(np.float32)
  est = float(jax.jit(losses.gaussian_aggregate_entropy_mc)(samples=samples, mean=mean,
                                                           logvar=logvar))
  true_h = 0.5 * math.log(2 * math.pi * math.e * aggregate_var)
  assert est == pytest.approx(true_h, abs=0.06)
  if aggregate_var == 1.0:
    assert est == pytest.approx(losses.gaussian_prior_entropy(num_dims=1), abs=0.06)
  else:  # the prior entropy is then wrong by 1/2 log 4 = 0.69 nats; the MC estimate is not
    assert abs(losses.gaussian_prior_entropy(num_dims=1) - true_h) > 0.6


def test_gaussian_prior_entropy_is_the_mean_negative_log_density_of_prior_samples():
  # Monte Carlo: H(N(0, I_S)) = E[-log N(z; 0, I)], with the library's density.
  for s in (1, 2, 5):
    z = jax.random.normal(jax.random.PRNGKey(s), (100_000, s))
    neg_log = -distributions.gaussian_log_density(z, mean=jnp.zeros(s), logvar=jnp.zeros(s))
    mean, se = _mean_and_se(neg_log)
    assert abs(losses.gaussian_prior_entropy(num_dims=s) - mean) < 4 * se, (s, mean)
    assert se < 0.01


# ----------------------------------------------------------------------------------
# Exact code MI and aggregate entropy.


def test_exact_categorical_mi_hand_computed():
  # Rows q(c|x_1) = (0.9, 0.1), q(c|x_2) = (0.2, 0.8).
  #   aggregate = (0.55, 0.45); H(aggregate) = 0.328810 + 0.359329 = 0.688139
  #   H(row 1) = 0.9 * 0.105361 + 0.1 * 2.302585 = 0.325083
  #   H(row 2) = 0.2 * 1.609438 + 0.8 * 0.223144 = 0.500402
  #   I = 0.688139 - (0.325083 + 0.500402) / 2 = 0.275396
  logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32))
  assert aggregate_entropy(logits=logits) == pytest.approx(0.688139, abs=2e-6)
  assert exact_mi(logits=logits) == pytest.approx(0.275396, abs=2e-6)
  # Logits are only defined up to a per-row constant.
  shifted = logits + np.array([[3.0], [-2.0]], np.float32)
  assert exact_mi(logits=shifted) == pytest.approx(0.275396, abs=2e-6)


def test_exact_categorical_mi_three_classes_hand_computed():
  # Rows (0.5, 0.25, 0.25), (0.1, 0.8, 0.1), (0.2, 0.2, 0.6):
  #   aggregate = (0.266667, 0.416667, 0.316667), H = 1.081384
  #   row entropies 1.039721, 0.639032, 0.950271 -> mean 0.876341; I = 0.205043
  logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], np.float32))
  assert aggregate_entropy(logits=logits) == pytest.approx(1.081384, abs=3e-6)
  assert exact_mi(logits=logits) == pytest.approx(0.205043, abs=3e-6)


def test_exact_categorical_mi_limits():
  row = np.array([0.3, -1.0, 2.0, 0.0, 0.5], np.float32)
  identical = np.tile(row, (7, 1))
  assert exact_mi(logits=identical) == pytest.approx(0.0, abs=1e-6)
  assert aggregate_entropy(logits=identical) == pytest.approx(
      scipy.stats.entropy(scipy.special.softmax(row.astype(np.float64))), rel=1e-5)
  for k in (5, 10):
    one_hot = 50.0 * np.eye(k, dtype=np.float32)   # distinct, (numerically) one-hot rows
    assert exact_mi(logits=one_hot) == pytest.approx(math.log(k), rel=1e-5)
    assert aggregate_entropy(logits=one_hot) == pytest.approx(math.log(k), rel=1e-5)
  same_one_hot = np.tile(50.0 * np.eye(5, dtype=np.float32)[:1], (7, 1))  # shape of `identical`
  assert aggregate_entropy(logits=same_one_hot) == pytest.approx(0.0, abs=1e-6)
  assert exact_mi(logits=same_one_hot) == pytest.approx(0.0, abs=1e-6)


def test_exact_categorical_mi_bounded():
  logits = (3 * np.random.default_rng(0).normal(size=(64, 6))).astype(np.float32)
  mi = exact_mi(logits=logits)
  assert 0.0 < mi < math.log(6)


# ----------------------------------------------------------------------------------
# Per-example log-likelihood terms.


def test_bernoulli_log_likelihood_matches_scipy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 4, 1)) * 3
  targets = (rng.uniform(size=(3, 4, 4, 1)) < 0.5).astype(np.float64)
  grey = rng.uniform(size=(3, 4, 4, 1))
  f = jax.jit(losses.bernoulli_log_likelihood)
  ours = f(logits=np.float32(logits), targets=np.float32(targets))
  chex.assert_shape(ours, (3,))
  probs = scipy.special.expit(logits)
  ref = scipy.stats.bernoulli.logpmf(targets, probs).reshape(3, -1).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  # Grey levels: the cross-entropy x log p + (1 - x) log(1 - p).
  ours = f(logits=np.float32(logits), targets=np.float32(grey))
  ref = (grey * np.log(probs) + (1 - grey) * np.log1p(-probs)).reshape(3, -1).sum(-1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_gaussian_log_likelihood_and_mse():
  rng = np.random.default_rng(1)
  mean, targets = rng.uniform(size=(2, 3, 5, 5, 1))
  f = jax.jit(losses.gaussian_log_likelihood)
  for logvar in (0.0, -2.0):
    ours = f(mean=np.float32(mean), logvar=np.float32(logvar), targets=np.float32(targets))
    chex.assert_shape(ours, (3,))
    ref = scipy.stats.norm(mean, math.exp(logvar / 2)).logpdf(targets).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
  mse = jax.jit(losses.negative_mean_squared_error)(prediction=np.float32(mean),
                                                    targets=np.float32(targets))
  np.testing.assert_allclose(mse, -((mean - targets) ** 2).reshape(3, -1).mean(-1), rtol=1e-5)


def test_log_q_terms():
  q_logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
  log_sm = np.log(scipy.special.softmax(q_logits.astype(np.float64), -1))
  one_hot = np.eye(3, dtype=np.float32)[[1, 0]]
  relaxed = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], np.float32)
  f = jax.jit(losses.categorical_log_q)
  np.testing.assert_allclose(f(q_logits=q_logits, target=one_hot), log_sm[[0, 1], [1, 0]],
                             rtol=1e-6)
  # A relaxed target is the convex combination of the one-hot terms.
  np.testing.assert_allclose(f(q_logits=q_logits, target=relaxed), (relaxed * log_sm).sum(-1),
                             rtol=1e-5)
  q_mean, q_logvar, z = np.random.default_rng(2).normal(size=(3, 4, 2)).astype(np.float32)
  ref = scipy.stats.norm(q_mean, np.exp(q_logvar / 2)).logpdf(z).sum(-1)
  np.testing.assert_allclose(jax.jit(losses.gaussian_log_q)(q_mean=q_mean, q_logvar=q_logvar,
                                                            target=z), ref, rtol=1e-5)


def test_mi_lower_bound_adds_entropy_per_example():
  log_q = np.array([-1.0, -2.5, -0.1], np.float32)
  np.testing.assert_allclose(losses.mi_lower_bound(log_q=log_q, entropy=1.5), [0.5, -1.0, 1.4],
                             rtol=1e-6)
  # Per-example entropy terms pair with the same examples' log Q terms.
  np.testing.assert_allclose(
      losses.mi_lower_bound(log_q=log_q, entropy=np.array([1.0, 2.0, 3.0], np.float32)),
      [0.0, -0.5, 2.9], rtol=1e-6)


def test_entropy_kind_decides_whether_the_bound_is_a_lower_bound():
  # z_sel's aggregate posterior is N(0, V) with V = 1/4, not the prior N(0, 1):
  # q(z|x) = N(mu_x, 1/16), mu_x ~ N(0, 3/16); x' = z + SIGMA_Z noise; Q the exact
  # posterior. True I(z; x') = 1/2 log(1 + V / SIGMA_Z^2) = 1/2 log 2.
  v, s2, n = 0.25, 1 / 16, 4000
  assert set(losses.ENTROPY_KINDS) == {'categorical_aggregate', 'gaussian_prior',
                                      'gaussian_aggregate_mc', 'joint_aggregate_mc'}
  true_mi = 0.5 * math.log(1 + v / SIGMA_Z**2)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(400), 3)
  mu = math.sqrt(v - s2) * jax.random.normal(k1, (n, 1))
  logvar = jnp.full((n, 1), math.log(s2))
  z = mu + math.sqrt(s2) * jax.random.normal(k2, (n, 1))
  x = z + SIGMA_Z * jax.random.normal(k3, (n, 1))
  log_q = losses.gaussian_log_q(q_mean=v / (v + SIGMA_Z**2) * x,
                                q_logvar=jnp.full((n, 1), math.log(v * SIGMA_Z**2 / (v + SIGMA_Z**2))),
                                target=z)
  h_terms = losses.gaussian_aggregate_entropy_mc(samples=z, mean=mu, logvar=logvar,
                                                 per_example=True)
  terms = losses.mi_lower_bound(log_q=log_q, entropy=h_terms)       # 'gaussian_aggregate_mc'
  mean, se = _mean_and_se(terms)
  assert mean <= true_mi + 3 * se and abs(mean - true_mi) < 4 * se + 0.01, (mean, true_mi)
  # 'gaussian_prior' assumes q(z) = p(z): here it adds 1/2 log(1/V) = 0.69 nats and the
  # "bound" exceeds the true MI by far more than its standard error.
  prior_terms = losses.mi_lower_bound(log_q=log_q,
                                      entropy=losses.gaussian_prior_entropy(num_dims=1))
  prior_mean, prior_se = _mean_and_se(prior_terms)
  assert prior_mean - true_mi > 0.6 and prior_mean - true_mi > 20 * prior_se
