"""Invariance losses (vmivae_jax.consistency) against brute-force numpy and jax.hessian."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax import consistency
from vmivae_jax.data import augment


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _logits(shape, seed=0, scale=2.0):
  return jnp.asarray((scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32))


def test_docstring_examples():
  results = doctest.testmod(consistency, verbose=False, report=False)
  assert results.attempted >= 8
  assert results.failed == 0


# ----------------------------------------------------------------------------------
# Consistency KL / cross-entropy.


def test_kl_matches_brute_force_numpy_and_is_positive():
  a, b = _logits((5, 10), 0), _logits((5, 10), 1)
  kl = consistency.consistency_kl(logits=a, perturbed_logits=b)
  p, q = _softmax(np.asarray(a, np.float64)), _softmax(np.asarray(b, np.float64))
  expect = np.sum(p * (np.log(p) - np.log(q)), -1)
  assert kl.shape == (5,)
  np.testing.assert_allclose(kl, expect, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(kl) > 1e-3)
  # Not symmetric: the clean side is the first argument.
  rev = consistency.consistency_kl(logits=b, perturbed_logits=a)
  assert not np.allclose(kl, rev)
  # Cross-entropy = KL + H(p).
  ce = consistency.consistency_cross_entropy(logits=a, perturbed_logits=b)
  np.testing.assert_allclose(ce, expect - np.sum(p * np.log(p), -1), rtol=1e-5)


def test_kl_is_zero_for_identical_logits_and_handles_zero_probabilities():
  a = _logits((4, 10))
  np.testing.assert_allclose(consistency.consistency_kl(logits=a, perturbed_logits=a), 0.0,
                             atol=1e-6)
  # Shift invariance of the softmax: adding a constant changes nothing.
  np.testing.assert_allclose(consistency.consistency_kl(logits=a, perturbed_logits=a + 3.0),
                             0.0, atol=1e-6)
  hard = jnp.array([[0.0, -jnp.inf, 1.0]])
  kl = consistency.consistency_kl(logits=hard, perturbed_logits=jnp.zeros((1, 3)))
  assert np.isfinite(np.asarray(kl)).all()
  p = _softmax(np.array([0.0, -np.inf, 1.0]))
  np.testing.assert_allclose(kl, np.sum(p[[0, 2]] * np.log(p[[0, 2]] * 3)), rtol=1e-5)


@pytest.mark.parametrize('fn', [consistency.consistency_kl,
                                consistency.consistency_cross_entropy])
def test_gradient_flows_only_to_the_perturbed_side_when_stop_gradient_clean(fn):
  a, b = _logits((3, 5), 0), _logits((3, 5), 1)
  ga, gb = jax.grad(lambda a, b: jnp.sum(fn(logits=a, perturbed_logits=b)), (0, 1))(a, b)
  np.testing.assert_array_equal(ga, 0.0)
  # d KL / d perturbed logits = softmax(b) - softmax(a).
  np.testing.assert_allclose(gb, _softmax(np.asarray(b)) - _softmax(np.asarray(a)), atol=1e-6)
  ga, _ = jax.grad(lambda a, b: jnp.sum(fn(logits=a, perturbed_logits=b,
                                           stop_gradient_clean=False)), (0, 1))(a, b)
  assert np.abs(np.asarray(ga)).sum() > 1e-3


def test_symmetric_kl_is_symmetric_and_zero_on_equal_views():
  a, b = _logits((3, 5), 0), _logits((3, 5), 1)
  s = consistency.symmetric_consistency_kl(logits_a=a, logits_b=b)
  np.testing.assert_allclose(s, consistency.symmetric_consistency_kl(logits_a=b, logits_b=a),
                             rtol=1e-6)
  np.testing.assert_array_less(0.0, s)
  np.testing.assert_allclose(consistency.symmetric_consistency_kl(logits_a=a, logits_b=a), 0,
                             atol=1e-6)


def test_invariant_encoder_has_zero_consistency_loss_and_a_pixel_encoder_does_not():
  x = jnp.asarray(np.random.default_rng(0).random((4, 9, 9)).astype(np.float32))
  rot = augment.affine_from_params(rotation=jnp.full((4,), 90.0), scale=jnp.ones(4),
                                   shear=jnp.zeros(4), translation=jnp.zeros((4, 2)),
                                   height=9, width=9)
  tx = augment.apply_affine(x, rot)
  w = _logits((3, 10), 2)

  def invariant(x):       # pixel-intensity statistics: unchanged by a 90-degree turn
    feats = jnp.stack([x.mean((1, 2)), (x ** 2).mean((1, 2)), (x ** 3).mean((1, 2))], -1)
    return feats @ w

  v = _logits((81, 10), 3, scale=0.3)

  def pixelwise(x):
    return x.reshape(x.shape[0], -1) @ v

  np.testing.assert_allclose(consistency.consistency_kl(
      logits=invariant(x), perturbed_logits=invariant(tx)), 0.0, atol=1e-5)
  assert np.all(np.asarray(consistency.consistency_kl(
      logits=pixelwise(x), perturbed_logits=pixelwise(tx))) > 1e-3)


# ----------------------------------------------------------------------------------
# IIC mutual information.


def test_iic_mi_is_log_k_for_perfect_uniform_pairs_and_zero_for_independent_ones():
  k = 5
  onehot = jnp.eye(k)[jnp.arange(4 * k) % k]
  np.testing.assert_allclose(consistency.paired_assignment_mi(probs_a=onehot, probs_b=onehot),
                             np.log(k), rtol=1e-5)
  # Every (i, j) pair once: the joint is uniform, the codes independent.
  i, j = np.meshgrid(np.arange(k), np.arange(k), indexing='ij')
  a, b = jnp.eye(k)[i.ravel()], jnp.eye(k)[j.ravel()]
  np.testing.assert_allclose(consistency.paired_assignment_mi(probs_a=a, probs_b=b), 0.0,
                             atol=1e-5)
  # Uniform soft assignments carry no information either.
  u = jnp.full((7, k), 1.0 / k)
  np.testing.assert_allclose(consistency.paired_assignment_mi(probs_a=u, probs_b=u), 0.0,
                             atol=1e-5)
  # Perfect agreement but all in one cluster: zero (the degenerate solution IIC avoids).
  one = jnp.eye(k)[jnp.zeros(6, jnp.int32)]
  np.testing.assert_allclose(consistency.paired_assignment_mi(probs_a=one, probs_b=one), 0.0,
                             atol=1e-5)


def test_iic_mi_matches_brute_force_with_symmetrisation():
  pa = jax.nn.softmax(_logits((8, 4), 0))
  pb = jax.nn.softmax(_logits((8, 4), 1))
  mi = consistency.paired_assignment_mi(probs_a=pa, probs_b=pb)
  assert mi.shape == ()
  a, b = np.asarray(pa, np.float64), np.asarray(pb, np.float64)
  joint = sum(np.outer(a[n], b[n]) for n in range(8)) / 8
  joint = 0.5 * (joint + joint.T)
  pi, pj = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
  np.testing.assert_allclose(mi, np.sum(joint * np.log(joint / (pi * pj))), rtol=1e-4)
  np.testing.assert_allclose(mi, consistency.paired_assignment_mi(probs_a=pb, probs_b=pa),
                             rtol=1e-6)
  # marginal_weight > 1 adds (w - 1) * 2 H(marginal).
  h = -np.sum(pi * np.log(pi))
  np.testing.assert_allclose(consistency.paired_assignment_mi(probs_a=pa, probs_b=pb,
                                                              marginal_weight=1.5),
                             float(mi) + 0.5 * 2 * h, rtol=1e-4)


# ----------------------------------------------------------------------------------
# VAT.

N_IN, K = 6, 4


def _mlp():
  rng = np.random.default_rng(5)
  w1 = jnp.asarray(rng.normal(size=(N_IN, 8)).astype(np.float32))
  # Unequal output scales give each example's Hessian a clear eigen-gap.
  w2 = jnp.asarray((rng.normal(size=(8, K)) * [3.0, 1.0, 0.3, 0.1]).astype(np.float32))
  return lambda x: jnp.tanh(x @ w1) @ w2


def _dominant_eigenvectors(logits_fn, x):
  """Top eigenvector of each example's Hessian of KL(p(x) || p(x + r)) at r = 0."""
  out = []
  for b in range(x.shape[0]):
    xb = x[b:b + 1]
    p = jax.lax.stop_gradient(logits_fn(xb))
    hess = jax.hessian(lambda r: jnp.sum(consistency.consistency_kl(
        logits=p, perturbed_logits=logits_fn(xb + r[None]))))(jnp.zeros(N_IN))
    # Known form J^T F J, F = diag(p) - p p^T (checks the test's own Hessian).
    jac = jax.jacobian(lambda v: logits_fn(v[None])[0])(xb[0])
    prob = jax.nn.softmax(p[0])
    fisher = jnp.diag(prob) - jnp.outer(prob, prob)
    np.testing.assert_allclose(hess, jac.T @ fisher @ jac, atol=1e-4)
    vals, vecs = np.linalg.eigh(np.asarray(hess, np.float64))
    assert vals[-1] > 1.5 * vals[-2]               # a clear eigen-gap for the test
    out.append(vecs[:, -1])
  return np.stack(out)


@pytest.mark.parametrize('xi', [0.0, 1e-2])
def test_vat_direction_is_the_dominant_hessian_eigenvector(xi):
  fn = _mlp()
  x = _logits((3, N_IN), 7, scale=0.5)
  expect = _dominant_eigenvectors(fn, x)
  r = consistency.vat_perturbation(fn, x, jax.random.key(0), epsilon=1.0, xi=xi,
                                   num_power_iterations=30)
  cos = np.abs(np.sum(np.asarray(r) * expect, -1))
  np.testing.assert_allclose(cos, 1.0, atol=2e-3)


def test_vat_radius_is_epsilon_per_example_and_scalar_or_vector():
  fn = _mlp()
  x = _logits((4, N_IN), 8, scale=0.5)
  r = consistency.vat_perturbation(fn, x, jax.random.key(1), epsilon=0.3)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r), axis=-1), 0.3, rtol=1e-5)
  eps = jnp.array([0.1, 0.2, 0.3, 0.4])
  # Image-shaped inputs: the norm runs over every non-batch axis.
  img = x.reshape(4, 2, 3, 1)
  r = consistency.vat_perturbation(lambda v: fn(v.reshape(4, N_IN)), img, jax.random.key(1),
                                   epsilon=eps)
  assert r.shape == img.shape
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r).reshape(4, -1), axis=-1), eps,
                             rtol=1e-5)


def test_vat_perturbation_beats_random_directions_and_loss_is_zero_at_zero_radius():
  fn = _mlp()
  x = _logits((16, N_IN), 9, scale=0.5)
  adv = consistency.vat_loss(fn, x, jax.random.key(2), epsilon=0.05, xi=0.0,
                             num_power_iterations=10)
  rand = consistency.consistency_kl(
      logits=fn(x), perturbed_logits=fn(x + 0.05 * consistency._normalise_per_example(
          jax.random.normal(jax.random.key(3), x.shape))))
  assert adv.shape == (16,)
  assert np.all(np.asarray(adv) >= np.asarray(rand) - 1e-7)
  assert float(adv.mean()) > 2 * float(rand.mean())
  np.testing.assert_allclose(consistency.vat_loss(fn, x, jax.random.key(2), epsilon=0.0), 0.0,
                             atol=1e-6)


def test_vat_loss_gradient_treats_the_clean_side_and_r_adv_as_constants():
  x = _logits((5, N_IN), 10, scale=0.5)
  w = _logits((N_IN, K), 11, scale=1.0)
  key = jax.random.key(4)

  def loss(w):
    return jnp.sum(consistency.vat_loss(lambda v: v @ w, x, key, epsilon=0.5, xi=0.0))

  r = consistency.vat_perturbation(lambda v: v @ w, x, key, epsilon=0.5, xi=0.0)

  def reference(w):        # r fixed, clean side fixed
    return jnp.sum(consistency.consistency_kl(logits=jax.lax.stop_gradient(x @ w),
                                              perturbed_logits=(x + r) @ w))

  np.testing.assert_allclose(jax.grad(loss)(w), jax.grad(reference)(w), rtol=1e-4, atol=1e-6)
  # Under jit, with the key derived from the step.
  jitted = jax.jit(lambda w, step: consistency.vat_loss(
      lambda v: v @ w, x, jax.random.fold_in(key, step), epsilon=0.5))
  assert jitted(w, 0).shape == (5,)


def test_knn_epsilon_matches_brute_force():
  x = _logits((12, 3, 2), 12)
  eps = consistency.knn_epsilon(x, x, k=3, scale=0.5)
  flat = np.asarray(x).reshape(12, -1).astype(np.float64)
  d = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
  expect = 0.5 * np.sort(d, axis=1)[:, 3]              # index 0 is the point itself
  np.testing.assert_allclose(eps, expect, rtol=1e-4)
  other = consistency.knn_epsilon(x[:4], x[4:], k=2, scale=1.0, exclude_self=False)
  np.testing.assert_allclose(other, np.sort(d[:4, 4:], axis=1)[:, 1], rtol=1e-4)


# ----------------------------------------------------------------------------------
# Conditional (mixture) Gaussian KL.


def _gauss_kl_numpy(m, lv, mu, plv):
  return 0.5 * np.sum(plv - lv + (np.exp(lv) + (m - mu) ** 2) / np.exp(plv) - 1.0, -1)


def test_conditional_kl_single_component_mixture_and_zero():
  rng = np.random.default_rng(13)
  b, d, k = 4, 3, 5
  mean, logvar = rng.normal(size=(b, d)), 0.5 * rng.normal(size=(b, d))
  pm, plv = rng.normal(size=(k, d)), 0.5 * rng.normal(size=(k, d))
  probs = _softmax(rng.normal(size=(b, k)))
  f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  kl = consistency.conditional_gaussian_kl(mean=f32(mean), logvar=f32(logvar),
                                           code_probs=f32(probs), prior_means=f32(pm),
                                           prior_logvars=f32(plv))
  per = np.stack([_gauss_kl_numpy(mean, logvar, pm[c], plv[c]) for c in range(k)], -1)
  assert kl.shape == (b,)
  np.testing.assert_allclose(kl, np.sum(probs * per, -1), rtol=1e-5)
  onehot = np.eye(k)[[2, 0, 4, 2]]
  kl1 = consistency.conditional_gaussian_kl(mean=f32(mean), logvar=f32(logvar),
                                            code_probs=f32(onehot), prior_means=f32(pm),
                                            prior_logvars=f32(plv))
  np.testing.assert_allclose(kl1, per[np.arange(b), [2, 0, 4, 2]], rtol=1e-5)
  # Zero when q(z|x) is the selected component.
  kl0 = consistency.conditional_gaussian_kl(mean=f32(pm[[2, 0, 4, 2]]),
                                            logvar=f32(plv[[2, 0, 4, 2]]),
                                            code_probs=f32(onehot), prior_means=f32(pm),
                                            prior_logvars=f32(plv))
  np.testing.assert_allclose(kl0, 0.0, atol=1e-6)


def test_conditional_kl_single_component_agrees_with_monte_carlo():
  rng = np.random.default_rng(14)
  m, lv = np.array([0.3, -1.0]), np.array([-0.4, 0.6])
  mu, plv = np.array([1.0, 0.5]), np.array([0.2, -0.3])
  z = m + np.exp(0.5 * lv) * rng.normal(size=(400_000, 2))
  log_q = -0.5 * np.sum(lv + np.log(2 * np.pi) + (z - m) ** 2 / np.exp(lv), -1)
  log_p = -0.5 * np.sum(plv + np.log(2 * np.pi) + (z - mu) ** 2 / np.exp(plv), -1)
  mc = np.mean(log_q - log_p)
  kl = consistency.conditional_gaussian_kl(
      mean=jnp.asarray([m], jnp.float32), logvar=jnp.asarray([lv], jnp.float32),
      code_probs=jnp.ones((1, 1)), prior_means=jnp.asarray([mu], jnp.float32),
      prior_logvars=jnp.asarray([plv], jnp.float32))
  np.testing.assert_allclose(kl[0], mc, atol=0.01)


# ----------------------------------------------------------------------------------
# Nearest neighbours and SCAN's consistency.


def test_nearest_neighbours_match_brute_force_cosine_and_skip_self():
  rng = np.random.default_rng(0)
  x = rng.random((203, 7, 3)).astype(np.float32)   # 203: chunks of 64 do not divide it
  x[17] = 3.0 * x[5]                               # same direction as x[5]: its nearest
  got = np.asarray(consistency.nearest_neighbours(jnp.asarray(x), k=5, chunk_size=64))
  flat = x.reshape(203, -1).astype(np.float64)
  flat /= np.linalg.norm(flat, axis=1, keepdims=True)
  similarity = flat @ flat.T
  np.fill_diagonal(similarity, -np.inf)
  np.testing.assert_array_equal(got, np.argsort(-similarity, axis=1, kind='stable')[:, :5])
  assert got[5, 0] == 17 and got[17, 0] == 5
  assert not np.any(got == np.arange(203)[:, None])
  with pytest.raises(ValueError, match='k=203 nearest neighbours need 1 <= k < N = 203'):
    consistency.nearest_neighbours(jnp.asarray(x), k=203)


def test_neighbour_consistency_is_minus_log_agreement_with_gradients_to_both():
  a, b = _logits((6, 4), seed=1), _logits((6, 4), seed=2)
  expected = -np.log(np.sum(_softmax(np.asarray(a)) * _softmax(np.asarray(b)), axis=-1))
  got = consistency.neighbour_consistency(logits=a, neighbour_logits=b)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Symmetric, >= 0, and minimal (log 1 = 0) only for identical one-hot codes.
  np.testing.assert_allclose(consistency.neighbour_consistency(logits=b, neighbour_logits=a),
                             got, rtol=1e-6)
  assert np.all(np.asarray(got) > 0)
  ga, gb = jax.grad(lambda p, q: consistency.neighbour_consistency(
      logits=p, neighbour_logits=q).sum(), argnums=(0, 1))(a, b)
  assert np.abs(np.asarray(ga)).max() > 1e-3 and np.abs(np.asarray(gb)).max() > 1e-3
