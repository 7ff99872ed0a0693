"""dSprites as a training dataset (vmivae_jax/data/datasets.py): splits, packing, the
cache folder rule, and the packed batches the train step unpacks."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import partial_dsprites_cache
from vmivae_jax.config import config_lib
from vmivae_jax.config import dsprites_config
from vmivae_jax.config import validation
from vmivae_jax.data import datasets
from vmivae_jax.data import dsprites
from vmivae_jax.data import preprocess
from vmivae_jax.data import sources

LIMIT = 300


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  folder = tmp_path_factory.mktemp('dsprites_cache')
  partial_dsprites_cache(folder, np.concatenate([
      datasets.dsprites_split_indices('train', LIMIT),
      datasets.dsprites_split_indices('test', 50)]))
  return str(folder)


def test_limited_train_split_is_a_packed_uniform_subset(cache):
  split = datasets.load_split('dsprites', 'train', data_cache_dir=cache, limit=LIMIT)
  assert split.images.shape == (LIMIT, 512) and split.images.dtype == np.uint8
  index = datasets.dsprites_split_indices('train', LIMIT)
  np.testing.assert_array_equal(split.factors, dsprites.factors_of(index))
  np.testing.assert_array_equal(split.labels, split.factors[:, 0])
  # The rows are those images: unpacked, they are the renderer's bits as {0, 255}.
  unpacked = preprocess.unpack_images(split.images[:5], (64, 64, 1))
  np.testing.assert_array_equal(unpacked[..., 0], 255 * dsprites.render(split.factors[:5]))
  # A random subset, not the first rows in index order (all squares of scale 0.5): every
  # shape and every scale occurs.
  assert set(split.factors[:, 0]) == {0, 1, 2} and set(split.factors[:, 1]) == set(range(6))


def test_test_split_is_unpacked_and_disjoint_from_a_limited_train_split(cache):
  test = datasets.load_split('dsprites', 'test', data_cache_dir=cache, limit=50)
  assert test.images.shape == (50, 64, 64, 1) and set(np.unique(test.images)) == {0, 255}
  np.testing.assert_array_equal(test.images[..., 0], 255 * dsprites.render(test.factors))
  train = datasets.dsprites_split_indices('train', dsprites.num_images - 10_000)
  assert not set(datasets.dsprites_split_indices('test')) & set(train)
  assert len(datasets.dsprites_split_indices('test')) == datasets.DSPRITES_TEST_SIZE


def test_unpack_images_jax_matches_numpy_and_rejects_other_shapes():
  rng = np.random.default_rng(0)
  packed = rng.integers(0, 256, (3, 512), dtype=np.uint8)
  expected = preprocess.unpack_images(packed, (64, 64, 1))
  np.testing.assert_array_equal(expected.reshape(3, -1) // 255, np.unpackbits(packed, axis=1))
  np.testing.assert_array_equal(np.asarray(preprocess.unpack_images(jnp.asarray(packed),
                                                                    (64, 64, 1))), expected)
  images = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
  assert preprocess.unpack_images(images, (28, 28, 1)) is images
  with pytest.raises(ValueError, match=r'\(2, 28, 28, 1\).*\[N, 64, 64, 1\].*\[N, 512\]'):
    preprocess.unpack_images(images, (64, 64, 1))


def _dsprites_config(**kw):
  c = config_lib.get_base_config()
  c.dataset = 'dsprites'
  dsprites_config.dlib_architecture(c.model)
  return config_lib.override(c, kw)


def test_cache_folder_rule(tmp_path, monkeypatch, cache):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  with pytest.raises(validation.ConfigError, match=r"config.data_cache_dir='': .*none is set"):
    validation.validate(_dsprites_config())
  # A read-only folder without the cache: the error names the cache path. (Denied through
  # os.access, which is what the rule asks: tests may run as root, who may write anywhere.)
  readonly = tmp_path / 'ro'
  readonly.mkdir()
  real_access = os.access
  monkeypatch.setattr(datasets.os, 'access',
                      lambda path, mode: path != str(readonly) and real_access(path, mode))
  with pytest.raises(validation.ConfigError,
                     match=rf'data_cache_dir.*{readonly}/dsprites_procedural/images_v1.npy '
                           'does not exist.*not writable'):
    validation.validate(_dsprites_config(data_cache_dir=str(readonly)))
  # The data directory serves when data_cache_dir is empty.
  with pytest.raises(validation.ConfigError, match='data_cache_dir.*not writable'):
    validation.validate(_dsprites_config(data_dir=str(readonly)))
  # A folder not made yet is checked at its nearest existing parent.
  with pytest.raises(validation.ConfigError, match=rf'{readonly} is not writable'):
    validation.validate(_dsprites_config(data_cache_dir=str(readonly / 'new' / 'sub')))
  validation.validate(_dsprites_config(data_cache_dir=str(tmp_path / 'new')))
  # A folder that holds the cache needs no write access.
  validation.validate(_dsprites_config(data_cache_dir=cache))
  with pytest.raises(sources.DataError, match='none is set'):
    datasets.load_split('dsprites', 'train')


def test_dataset_and_family_must_agree():
  config = _dsprites_config()
  config.model.family = 'conv'
  with pytest.raises(validation.ConfigError, match=r"config.model.family='conv'.*28x28.*dsprites"):
    validation.validate(config, check_paths=False)
  config = config_lib.get_base_config()
  dsprites_config.dlib_architecture(config.model)
  with pytest.raises(validation.ConfigError, match=r"model.family='dlib_conv'.*64x64.*mnist"):
    validation.validate(config, check_paths=False)


def test_moving_the_cache_keeps_the_run_but_another_dataset_does_not(tmp_path):
  """The cache folder holds the same rendered images wherever it is: a run may resume
  with another data_cache_dir; a changed train_limit is another run."""
  from vmivae_jax.rundir import extend   # pylint: disable=g-import-not-at-top
  old = _dsprites_config(data_cache_dir='/a').to_dict()
  moved = _dsprites_config(data_cache_dir='/b').to_dict()
  assert 'data_cache_dir' in extend.describe_change(old, moved, workdir=tmp_path,
                                                    checkpoint_steps=[])
  other = _dsprites_config(data_cache_dir='/b', train_limit=1000).to_dict()
  assert extend.describe_change(old, other, workdir=tmp_path, checkpoint_steps=[]) is None
