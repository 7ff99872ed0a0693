"""Every dataset the trainer reads, by name: ``load_split`` gives a ``sources.Split``.

* 'mnist', 'fashion_mnist': IDX files or tfds (``sources.py``), uint8 [N, 28, 28, 1].
* 'dsprites': procedural dSprites (``dsprites.py``), 64x64x1 binary, factors per image.

dSprites has no official split; disentanglement_lib trains on all 737,280 images and
scores samples of the same grid. Here:

* 'train': all images in flat-index order, or with ``limit`` the first ``limit`` of a
  fixed random order of the grid (``dsprites_order``), sorted: a uniform subset covering
  every factor, where the first N in index order would all be squares of the smallest
  scale. Held as bit-packed rows [N, 512] uint8 (``preprocess.unpack_images``):
  377 MB for the whole grid instead of 3 GB of uint8 pixels, small enough to replicate
  on every device; the train step unpacks its batch.
* 'test': the last ``DSPRITES_TEST_SIZE`` images of that order (the first ``limit`` of
  them), unpacked to uint8 {0, 255} [N, 64, 64, 1]. Disjoint from a limited train split
  of at most 737,280 - 10,000 images; inside the full one (as in disentanglement_lib).

Labels are the shape factor (0 square, 1 ellipse, 2 heart); ``Split.factors`` holds all
five factor indices. The rendered cache lives in ``cache_dir(config)``:
``config.data_cache_dir``, else the data directory (``config.data_dir``, else
$VMIVAE_DATA_DIR); ``cache_problem`` says why a folder cannot hold it.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from vmivae_jax.data import dsprites
from vmivae_jax.data import sources

DATA_DIR_ENV = sources.DATA_DIR_ENV
FACTOR_DATASETS = ('dsprites',)
DATASETS = sources.DATASETS + FACTOR_DATASETS
DSPRITES_TEST_SIZE = 10_000
_ORDER_SEED = 0   # the fixed order of the grid behind train_limit and the test split


def image_shape(name: str) -> tuple[int, int, int]:
  """(H, W, C) of a dataset's images."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {DATASETS}')
  return (dsprites.image_size, dsprites.image_size, 1) if name == 'dsprites' else (28, 28, 1)


def cache_dir(data_dir: str = '', data_cache_dir: str = '') -> str:
  """The folder of rendered caches: ``data_cache_dir``, else the data directory
  (``data_dir``, else $VMIVAE_DATA_DIR); '' when none is set."""
  if data_cache_dir:
    return os.path.expanduser(os.fspath(data_cache_dir))
  return sources.resolve_data_dir(data_dir)


def cache_problem(folder: str) -> str | None:
  """Why ``folder`` cannot serve dSprites' cache (None: it can).

  A folder holding the cache is fine read-only; without it, the folder (or, if it does
  not exist yet, its nearest existing parent) must be writable to render it once.
  """
  if not folder:
    return ('dsprites renders its images into a cache folder and none is set: pass '
            f'--config.data_cache_dir=/a/writable/dir (or data_dir, or ${sources.DATA_DIR_ENV})')
  path = dsprites.cache_path(folder)
  if os.path.exists(path):
    return None
  existing = os.path.abspath(folder)
  while not os.path.isdir(existing):
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK | os.X_OK):
    return (f'the dsprites cache {os.path.abspath(path)} does not exist and {existing} is '
            'not writable, so it cannot be rendered there: pass '
            '--config.data_cache_dir=/a/writable/dir')
  return None


def config_cache_problem(config) -> str | None:
  """``cache_problem`` of a run config's cache folder (None for datasets without one)."""
  if config.dataset not in FACTOR_DATASETS:
    return None
  return cache_problem(cache_dir(config.data_dir, config.get('data_cache_dir', '')))


@functools.lru_cache(maxsize=1)
def dsprites_order() -> np.ndarray:
  """The fixed random order of the 737,280 flat indices (read-only int64)."""
  order = np.random.default_rng(_ORDER_SEED).permutation(dsprites.num_images)
  order.flags.writeable = False
  return order


def dsprites_split_indices(split: str, limit: int | None = None) -> np.ndarray:
  """The sorted flat indices of a dSprites split (see the module docstring)."""
  sources.validate_split(split)
  order = dsprites_order()
  if split == 'train':
    return np.arange(dsprites.num_images) if limit is None else np.sort(order[:limit])
  return np.sort(order[-DSPRITES_TEST_SIZE:][:limit])


def _load_dsprites(split: str, folder: str, limit: int | None) -> sources.Split:
  problem = cache_problem(folder)
  if problem:
    raise sources.DataError(problem)
  packed = dsprites.load_or_build(folder)
  index = dsprites_split_indices(split, limit)
  factors = dsprites.factors_of(index)
  if split == 'train':
    images = np.asarray(packed) if limit is None else np.asarray(packed[index])
  else:
    images = (dsprites.images(packed, index) * np.uint8(255))[..., None]
  images.flags.writeable = False
  return sources.Split(images=images, labels=factors[:, 0].astype(np.int32),
                       source=f'procedural:{dsprites.cache_path(folder)}', factors=factors)


def load_split(name: str, split: str, *, data_dir: str = '', data_cache_dir: str = '',
               limit: int | None = None) -> sources.Split:
  """One split of any dataset in DATASETS (``sources.load_split`` for the IDX/tfds ones).

  Raises:
    ValueError: unknown name/split, or limit <= 0.
    DataError: the data cannot be found, read or rendered (naming the path).
  """
  if name not in FACTOR_DATASETS:
    return sources.load_split(name, split, data_dir=data_dir, limit=limit)
  if limit is not None and limit <= 0:
    raise ValueError(f'limit must be positive or None, got {limit}')
  return _load_dsprites(split, cache_dir(data_dir, data_cache_dir), limit)


def load_config_split(config, split: str) -> sources.Split:
  """``load_split`` of a run config's dataset, folders and limit for ``split``."""
  limit = config.train_limit if split == 'train' else config.test_limit
  return load_split(config.dataset, split, data_dir=config.data_dir,
                    data_cache_dir=config.get('data_cache_dir', ''), limit=limit or None)
