"""Tests for vmivae_jax.data.preprocess: scaling, binarisation, the epoch's example order."""

import jax
import numpy as np

from vmivae_jax.data import preprocess

N = 128


def test_epoch_permutation():
  key = jax.random.PRNGKey(0)
  perms = np.stack([np.asarray(preprocess.epoch_permutation(key, e, N)) for e in range(2)])
  for p in perms:
    np.testing.assert_array_equal(np.sort(p), np.arange(N))
  assert not np.array_equal(perms[0], perms[1])
  np.testing.assert_array_equal(preprocess.epoch_permutation(key, 0, N), perms[0])


def test_batch_indices_walk_the_epochs_permutations_whatever_the_chunks():
  key = jax.random.PRNGKey(0)
  b = 48   # 2 batches per epoch of 128; the last 32 examples of each order are left out
  perms = [np.asarray(preprocess.epoch_permutation(key, e, N)) for e in range(3)]
  want = np.stack([p[i * b:(i + 1) * b] for p in perms for i in range(2)])
  whole = np.asarray(preprocess.batch_indices(key, 0, 6, batch_size=b, num_examples=N))
  np.testing.assert_array_equal(whole, want)
  split = [np.asarray(preprocess.batch_indices(key, first, n, batch_size=b, num_examples=N))
           for first, n in ((0, 1), (1, 2), (3, 3))]   # chunks starting mid-epoch
  np.testing.assert_array_equal(np.concatenate(split), want)


def test_scale_images_numpy_and_jax():
  u8 = np.array([0, 51, 255], np.uint8)
  np.testing.assert_allclose(preprocess.scale_images(u8, (0.0, 1.0)), [0.0, 0.2, 1.0], rtol=1e-6)
  np.testing.assert_allclose(preprocess.scale_images(u8, (-1.0, 1.0)), [-1.0, -0.6, 1.0], rtol=1e-6)
  assert isinstance(preprocess.scale_images(u8, (0.0, 1.0)), np.ndarray)
  on_device = preprocess.scale_images(jax.numpy.asarray(u8), (-1.0, 1.0))
  # Same expression; XLA may fuse it differently from numpy (last-bit differences).
  np.testing.assert_allclose(on_device, preprocess.scale_images(u8, (-1.0, 1.0)), rtol=1e-6)
  floats = np.array([0.25], np.float64)   # float images pass through as float32
  assert preprocess.scale_images(floats, (0.0, 1.0)).dtype == np.float32


def test_binarize_and_unit_range():
  u8 = np.array([[0, 255, 128]] * 2000, np.uint8)
  b = preprocess.binarize_uint8(u8, jax.random.PRNGKey(1))
  assert set(np.unique(b)) <= {0.0, 1.0}
  np.testing.assert_array_equal(b[:, 0], 0.0)
  np.testing.assert_array_equal(b[:, 1], 1.0)
  assert abs(b[:, 2].mean() - 128 / 255) < 0.05
  np.testing.assert_allclose(preprocess.to_unit_range(np.array([-1.0, 0.0, 2.0]), (-1.0, 1.0)),
                             [0.0, 0.5, 1.0])
