"""Masked categories: a logit of -inf is a class with probability exactly 0.

Every categorical function must then give the value and the gradient of the same
computation on the unmasked sub-vocabulary (0 log 0 = 0; no NaN, no inf in gradients),
and must give the same bits as before for finite logits (a golden training test relies
on bitwise-identical runs): masked logits are raised to a finite stand-in with an
elementwise max, which for finite logits changes no value.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax import distributions
from vmivae_jax import losses

NEG_INF = -np.inf
K, KEEP = 6, np.array([0, 2, 3, 5])          # classes 1 and 4 masked in every row


def _logits(seed=0, rows=5, k=K, scale=2.0):
  return (scale * np.random.default_rng(seed).normal(size=(rows, k))).astype(np.float32)


def _masked(logits):
  out = np.full_like(logits, NEG_INF)
  out[:, KEEP] = logits[:, KEEP]
  return out


def _assert_finite_grad(grad):
  assert np.all(np.isfinite(np.asarray(grad))), grad


def _check_against_sub(fn, logits, *, offset=0.0):
  """fn(masked logits) == fn(sub-vocabulary logits) + offset, values and gradients."""
  full, sub = jnp.asarray(_masked(logits)), jnp.asarray(logits[:, KEEP])
  value_full, value_sub = fn(full), fn(sub)
  assert np.all(np.isfinite(np.asarray(value_full)))
  np.testing.assert_allclose(value_full, np.asarray(value_sub) + offset, rtol=1e-5, atol=1e-6)
  grad_full = jax.grad(lambda l: jnp.sum(fn(l)))(full)
  grad_sub = jax.grad(lambda l: jnp.sum(fn(l)))(sub)
  _assert_finite_grad(grad_full)
  np.testing.assert_allclose(np.asarray(grad_full)[:, KEEP], grad_sub, rtol=1e-5, atol=1e-6)
  masked_cols = np.setdiff1d(np.arange(K), KEEP)
  np.testing.assert_array_equal(np.asarray(grad_full)[:, masked_cols], 0.0)


def test_categorical_entropy_with_masked_classes():
  _check_against_sub(lambda l: distributions.categorical_entropy(logits=l), _logits(0))


def test_kl_to_uniform_with_masked_classes_keeps_the_prior_over_all_k():
  # KL(q || U(K)) = log K - H(q) = KL(q_sub || U(K_sub)) + log(K / K_sub).
  _check_against_sub(lambda l: distributions.categorical_kl_to_uniform(logits=l), _logits(1),
                     offset=math.log(K / KEEP.size))


@pytest.mark.parametrize('per_example', [False, True])
def test_exact_mi_and_aggregate_entropy_with_masked_classes(per_example):
  logits = _logits(2, rows=9)
  _check_against_sub(lambda l: losses.exact_categorical_mutual_information(
      logits=l, per_example=per_example), logits)
  _check_against_sub(lambda l: losses.categorical_aggregate_entropy(
      logits=l, per_example=per_example), logits)


def test_row_specific_masks_equal_a_finite_underflowing_surrogate():
  # Class masked in some rows only: compare with a logit so low that its probability
  # underflows to exactly 0 in float32 (the old formulas were already right there).
  logits = _logits(3, rows=4)
  masked, surrogate = logits.copy(), logits.copy()
  masked[0, 1] = masked[2, 4] = masked[2, 0] = NEG_INF
  surrogate[0, 1] = surrogate[2, 4] = surrogate[2, 0] = -1e4
  fns = [lambda l: distributions.categorical_entropy(logits=l),
         lambda l: losses.exact_categorical_mutual_information(logits=l),
         lambda l: losses.exact_categorical_mutual_information(logits=l, per_example=True),
         lambda l: losses.categorical_aggregate_entropy(logits=l, per_example=True)]
  for fn in fns:
    np.testing.assert_allclose(fn(masked), fn(surrogate), rtol=1e-6)
    g_masked = jax.grad(lambda l: jnp.sum(fn(l)))(jnp.asarray(masked))
    g_surrogate = jax.grad(lambda l: jnp.sum(fn(l)))(jnp.asarray(surrogate))
    _assert_finite_grad(g_masked)
    np.testing.assert_allclose(g_masked, g_surrogate, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('hard', [False, True])
def test_gumbel_softmax_sample_with_masked_classes(hard):
  logits = _logits(4)
  gumbel = np.random.default_rng(5).gumbel(size=logits.shape).astype(np.float32)

  def sample(l, g, tau):
    return distributions.gumbel_softmax_sample(logits=l, gumbel=g, temperature=tau, hard=hard)
  full = sample(jnp.asarray(_masked(logits)), gumbel, 0.7)
  sub = sample(jnp.asarray(logits[:, KEEP]), gumbel[:, KEEP], 0.7)
  np.testing.assert_allclose(np.asarray(full)[:, KEEP], sub, rtol=1e-6)
  np.testing.assert_array_equal(np.delete(np.asarray(full), KEEP, axis=1), 0.0)
  weights = np.random.default_rng(6).normal(size=(KEEP.size,)).astype(np.float32)

  def objective(l, tau):
    return jnp.sum(sample(l, gumbel, tau)[:, KEEP] * weights)
  g_full = jax.grad(objective, argnums=(0, 1))(jnp.asarray(_masked(logits)), 0.7)
  g_sub = jax.grad(lambda l, t: jnp.sum(sample(l, gumbel[:, KEEP], t) * weights),
                   argnums=(0, 1))(jnp.asarray(logits[:, KEEP]), 0.7)
  _assert_finite_grad(g_full[0])
  assert np.isfinite(float(g_full[1]))          # d/d tau too (no -inf / tau in the tape)
  np.testing.assert_allclose(np.asarray(g_full[0])[:, KEEP], g_sub[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_full[1], g_sub[1], rtol=1e-5, atol=1e-6)


def test_categorical_log_q_with_masked_classes():
  logits = _logits(7)
  rng = np.random.default_rng(8)
  target_sub = rng.dirichlet(np.ones(KEEP.size), size=logits.shape[0]).astype(np.float32)
  target = np.zeros_like(logits)
  target[:, KEEP] = target_sub

  def log_q(q_logits, t):
    return losses.categorical_log_q(q_logits=q_logits, target=t)
  full = log_q(jnp.asarray(_masked(logits)), target)
  np.testing.assert_allclose(full, log_q(jnp.asarray(logits[:, KEEP]), target_sub), rtol=1e-6)
  grads = jax.grad(lambda l, t: jnp.sum(log_q(l, t)), argnums=(0, 1))(
      jnp.asarray(_masked(logits)), jnp.asarray(target))
  grads_sub = jax.grad(lambda l, t: jnp.sum(log_q(l, t)), argnums=(0, 1))(
      jnp.asarray(logits[:, KEEP]), jnp.asarray(target_sub))
  for g, gs in zip(grads, grads_sub):
    _assert_finite_grad(g)
    np.testing.assert_allclose(np.asarray(g)[:, KEEP], gs, rtol=1e-5, atol=1e-6)
  # Target weight on a class Q has masked: probability 0, log Q ~ -1e30 (the finite
  # stand-in for -inf), not NaN.
  bad = target.copy()
  bad[0] = np.eye(K, dtype=np.float32)[1]
  out = np.asarray(log_q(jnp.asarray(_masked(logits)), bad))
  assert out[0] < -1e29 and np.all(np.isfinite(out))


def test_joint_aggregate_entropy_with_masked_classes():
  rng = np.random.default_rng(9)
  logits = _logits(10, rows=8)
  mean = rng.normal(size=(8, 2)).astype(np.float32)
  logvar = (0.3 * rng.normal(size=(8, 2))).astype(np.float32)
  samples = (mean + np.exp(logvar / 2) * rng.normal(size=(8, 2))).astype(np.float32)

  def h(l):
    return losses.joint_aggregate_entropy_mc(samples=samples, mean=mean, logvar=logvar,
                                             logits=l, per_example=True)
  _check_against_sub(h, logits)


# ----------------------------------------------------------------------------------
# Finite logits: the same bits as the plain formulas the masking replaced.


def _old_entropy(logits):
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def _old_gumbel(logits, gumbel, tau, hard):
  soft = jax.nn.softmax((jax.nn.log_softmax(logits) + gumbel) / tau, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
  return soft + jax.lax.stop_gradient(one_hot - soft)


def _old_log_q(q_logits, target):
  return jnp.sum(target * jax.nn.log_softmax(q_logits, axis=-1), axis=-1)


def _old_exact_mi(logits):
  aggregate = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  h_agg = -jnp.sum(aggregate * jnp.log(jnp.clip(aggregate, 1e-30)))
  return h_agg - jnp.mean(_old_entropy(logits))


@pytest.mark.parametrize('scale', [1.0, 30.0])   # 30: probabilities underflow to 0
def test_finite_logits_give_bitwise_identical_values_and_gradients(scale):
  logits = jnp.asarray(_logits(11, rows=64, k=10, scale=scale))
  gumbel = jnp.asarray(np.random.default_rng(12).gumbel(size=(64, 10)).astype(np.float32))
  target = jax.nn.softmax(jnp.asarray(_logits(13, rows=64, k=10)), axis=-1)
  weights = jnp.linspace(-1.0, 1.0, 10)
  pairs = [
      (lambda l: distributions.categorical_entropy(logits=l), _old_entropy),
      (lambda l: distributions.categorical_kl_to_uniform(logits=l),
       lambda l: math.log(10) - _old_entropy(l)),
      (lambda l: losses.exact_categorical_mutual_information(logits=l), _old_exact_mi),
      (lambda l: losses.categorical_log_q(q_logits=l, target=target),
       lambda l: _old_log_q(l, target)),
  ]
  for hard in (False, True):
    pairs.append((lambda l, hard=hard: distributions.gumbel_softmax_sample(
        logits=l, gumbel=gumbel, temperature=0.5, hard=hard) @ weights,
                  lambda l, hard=hard: _old_gumbel(l, gumbel, 0.5, hard) @ weights))
  for new, old in pairs:
    for transform in (lambda f: f, jax.jit):
      np.testing.assert_array_equal(transform(new)(logits), transform(old)(logits))
    grad_new = jax.grad(lambda l: jnp.sum(new(l)))
    grad_old = jax.grad(lambda l: jnp.sum(old(l)))
    np.testing.assert_array_equal(grad_new(logits), grad_old(logits))
    # Jitted alone, XLA may fuse a tiny gradient graph differently (last-bit changes
    # were seen for the exact MI and, at scale 30, Gumbel-softmax gradients); the
    # training graphs were checked bit for bit separately (20-step smoke runs).
    np.testing.assert_allclose(jax.jit(grad_new)(logits), jax.jit(grad_old)(logits),
                               rtol=1e-6, atol=1e-12)
