"""Tests for vmivae_jax.latents: layout, noise, sampling, code order, mode, per-group KL."""

import math

import chex
import jax
import numpy as np
import scipy.special

from vmivae_jax import latents

SPEC = latents.LatentSpec(gaussian_dims=3, categorical_sizes=(4, 2))
B = 5

kl_per_group = jax.jit(latents.kl_per_group, static_argnums=1)
draw_noise = jax.jit(latents.draw_noise, static_argnums=(1, 2))
sample = jax.jit(latents.sample, static_argnames='hard')
mode = jax.jit(latents.mode)


def _posterior(seed=0, spec=SPEC, b=B):
  rng = np.random.default_rng(seed)
  return latents.PosteriorParams(
      mean=rng.normal(size=(b, spec.gaussian_dims)).astype(np.float32),
      logvar=rng.normal(scale=0.5, size=(b, spec.gaussian_dims)).astype(np.float32),
      logits=tuple(rng.normal(scale=2.0, size=(b, k)).astype(np.float32)
                   for k in spec.categorical_sizes))


def test_spec_layout():
  assert SPEC.code_size == 3 + 4 + 2
  assert SPEC.group_names() == ('gaussian', 'categorical_0', 'categorical_1')
  only_codes = latents.LatentSpec(gaussian_dims=0, categorical_sizes=(10,))
  assert only_codes.group_names() == ('categorical_0',)
  assert only_codes.code_size == 10
  assert latents.LatentSpec(gaussian_dims=32).group_names() == ('gaussian',)


def test_kl_per_group_keys_and_joint_kl():
  post = _posterior()
  kls = kl_per_group(post, SPEC)
  assert sorted(kls) == sorted(SPEC.group_names())  # (jit returns dicts key-sorted)
  for v in kls.values():
    chex.assert_shape(v, (B,))
  # Joint KL of the factorised posterior to the factorised prior N(0, I) x U(4) x U(2),
  # computed independently in float64 (eq 4.18: the sum of the per-group KLs).
  m, lv = post.mean.astype(np.float64), post.logvar.astype(np.float64)
  joint = 0.5 * np.sum(np.exp(lv) + m**2 - 1 - lv, axis=-1)
  for logits, k in zip(post.logits, SPEC.categorical_sizes):
    p = scipy.special.softmax(logits.astype(np.float64), axis=-1)
    joint += np.sum(p * np.log(p * k), axis=-1)
  total = sum(np.asarray(v, np.float64) for v in kls.values())
  np.testing.assert_allclose(total, joint, rtol=1e-5)
  # Every group contributes (otherwise the sum could hide a missing term).
  assert all(float(np.min(v)) > 1e-3 for v in kls.values())


def test_kl_per_group_without_gaussian_dims():
  spec = latents.LatentSpec(gaussian_dims=0, categorical_sizes=(3,))
  post = latents.PosteriorParams(mean=np.zeros((2, 0), np.float32),
                                 logvar=np.zeros((2, 0), np.float32),
                                 logits=(np.log(np.array([[0.5, 0.25, 0.25], [1, 1, 1]],
                                                         np.float32)),))
  kls = kl_per_group(post, spec)
  assert tuple(kls) == ('categorical_0',)
  # KL((1/2, 1/4, 1/4) || U(3)) = log 3 - H = 1.098612 - 1.039721 = 0.058892; uniform: 0.
  np.testing.assert_allclose(kls['categorical_0'], [0.058892, 0.0], atol=2e-6)


def test_draw_noise_shapes_and_determinism():
  key = jax.random.PRNGKey(0)
  noise = draw_noise(key, SPEC, B)
  chex.assert_shape(noise.gaussian, (B, 3))
  assert len(noise.gumbel) == 2
  chex.assert_shape(noise.gumbel[0], (B, 4))
  chex.assert_shape(noise.gumbel[1], (B, 2))
  again = draw_noise(key, SPEC, B)
  chex.assert_trees_all_equal(noise, again)
  other = draw_noise(jax.random.PRNGKey(1), SPEC, B)
  assert not np.allclose(noise.gaussian, other.gaussian)
  # The groups use independent streams (not the same numbers reused).
  assert not np.allclose(np.asarray(noise.gumbel[0])[:, :2], np.asarray(noise.gumbel[1]))


def test_draw_noise_with_a_batch_shape_equals_shaped_draws():
  # Draws are made flat and reshaped (fast to compile): the values of shaped draws, and a
  # batch of shape (S, B) holds S batches of B.
  key = jax.random.PRNGKey(3)
  noise = draw_noise(key, SPEC, (2, B))
  keys = jax.random.split(key, 3)
  np.testing.assert_array_equal(noise.gaussian, jax.random.normal(keys[0], (2, B, 3)))
  np.testing.assert_array_equal(noise.gumbel[1], jax.random.gumbel(keys[2], (2, B, 2)))
  chex.assert_trees_all_equal(draw_noise(key, SPEC, B), draw_noise(key, SPEC, (B,)))


def test_sample_shapes_and_reparameterisation():
  post = _posterior(1)
  noise = draw_noise(jax.random.PRNGKey(2), SPEC, B)
  s = sample(post, noise, temperature=np.float32(0.5))
  chex.assert_shape(s.gaussian, (B, 3))
  chex.assert_shape(s.categorical[0], (B, 4))
  chex.assert_shape(s.categorical[1], (B, 2))
  np.testing.assert_allclose(
      s.gaussian, post.mean + np.exp(post.logvar / 2) * np.asarray(noise.gaussian), rtol=1e-5,
      atol=1e-6)
  for y, logits, g in zip(s.categorical, post.logits, noise.gumbel):
    ref = scipy.special.softmax(
        (scipy.special.log_softmax(logits, -1) + np.asarray(g)) / 0.5, axis=-1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-6)
  hard = sample(post, noise, temperature=np.float32(0.5), hard=True)
  for y in hard.categorical:
    assert set(np.unique(np.asarray(y))) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(y).sum(-1), 1.0)


def test_code_concatenation_order():
  gaussian = np.full((2, 3), 7.0, np.float32)
  cat0 = np.tile(np.arange(4, dtype=np.float32) + 10, (2, 1))
  cat1 = np.tile(np.array([20.0, 21.0], np.float32), (2, 1))
  code = np.asarray(jax.jit(lambda s: s.code())(latents.LatentSample(gaussian, (cat0, cat1))))
  chex.assert_shape(code, (2, SPEC.code_size))
  np.testing.assert_array_equal(code[0], [7, 7, 7, 10, 11, 12, 13, 20, 21])


def test_mode():
  post = _posterior(3)
  m = mode(post)
  np.testing.assert_array_equal(m.gaussian, post.mean)
  for y, logits in zip(m.categorical, post.logits):
    np.testing.assert_array_equal(y, np.eye(logits.shape[-1])[logits.argmax(-1)])


def test_sample_gradients_reach_posterior():
  tau = 1.0
  post = _posterior(4)
  noise = draw_noise(jax.random.PRNGKey(5), SPEC, B)
  w = np.random.default_rng(6).normal(size=(B, SPEC.code_size)).astype(np.float32)
  grads = jax.jit(jax.grad(lambda p: (w * latents.sample(p, noise, temperature=tau).code()).sum()))(
      post)
  for leaf in jax.tree.leaves(grads):
    assert np.abs(np.asarray(leaf)).max() > 1e-4
  assert math.isfinite(float(sum(np.asarray(l).sum() for l in jax.tree.leaves(grads))))
