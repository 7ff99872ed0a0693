"""Shared test setup for the vmivae_jax core-library suite.

JAX must see 8 CPU devices before its backend initialises, so the device count is
set here, at import time (pytest imports conftest.py before any test module). Every
test then sees 8 host devices; ``parallel.make_mesh(1)`` / ``make_mesh(8)`` choose.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

from vmivae_jax.model import conv_ops  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
# The CPU XLA options train.py and eval.py use (vmivae_jax.app.cli), set before the backend
# starts so that tests and golden files see the same compiled programs.
conv_ops.apply_cpu_xla_flags()

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vmivae_jax.train import train_step  # noqa: E402

NUM_FORCED_DEVICES = 8


# The Bernoulli log-likelihood is summed over 784 pixels, so VAE gradients are O(100):
# a small SGD rate keeps a few steps well-conditioned (no blow-up that would amplify
# float rounding differences between device counts).
TINY_VAE_LR = 1e-3
TINY_Q_LR = 0.05


def make_tiny_config(**overrides):
  """A small config: 4 Gaussian dims + one 10-way code, MLP widths (32,), batch 64.

  MI targets Gaussian dim 0 and code 0; SGD for both networks so that parameter
  comparisons are not dominated by Adam's division by tiny second moments
  (learning rates TINY_VAE_LR and TINY_Q_LR).
  ``overrides`` are dotted keys, e.g. ``make_tiny_config(**{'model.family': 'conv'})``.
  """
  from vmivae_jax.config import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.get_base_config()
  c.latent.gaussian_dims = 4
  c.latent.categorical_sizes = (10,)
  c.mi.gaussian_indices = (0,)
  c.mi.categorical_indices = (0,)
  c.mi_weight = 1.0
  c.batch_size = 64
  c.model.encoder_hidden = (32,)
  c.model.decoder_hidden = (32,)
  c.model.q_hidden = (32,)
  c.vae_optimizer.name = 'sgd'
  c.q_optimizer.name = 'sgd'
  c.vae_optimizer.learning_rate = TINY_VAE_LR
  c.q_optimizer.learning_rate = TINY_Q_LR
  return config_lib.override(c, overrides)


@pytest.fixture
def tiny_config():
  """A fresh tiny config (see :func:`make_tiny_config`); tests may mutate it."""
  return make_tiny_config()


def random_uint8_images(n: int, seed: int = 0) -> np.ndarray:
  """[n, 28, 28, 1] random uint8 images: step tests need no data set on disk."""
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def numpy_variables(abstract, seed: int = 0):
  """Concrete Flax variables for an abstract tree (from ``jax.eval_shape(model.init, key)``).

  Filled with numpy: LeCun-normal kernels, unit BatchNorm/LayerNorm scales and running
  variances, zero biases and means. Compiling ``model.init`` costs seconds per large
  layer on CPU (one RNG program each); tests that do not test initialisation itself
  use this instead.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def check_iwae_against_elbo(model, vae_vars, images, *, ks=(1, 64), reps=8):
  """Asserts that IWAE with k = 1 equals the ELBO up to Monte Carlo error (paired over
  examples; same exact categorical sampling) and that the largest k is above the ELBO.

  Returns (elbo, {k: iwae}): per-example means over ``reps`` independent draws.
  """
  from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(1)

  def per_example(fn, offset):
    return np.mean([fn(jax.random.fold_in(key, offset + r)) for r in range(reps)], axis=0)

  elbo = per_example(lambda k: evaluation.vae_statistics(
      model, vae_vars, images, key=k, temperature=1.0, batch_size=64)['elbo'], 0)
  iwae = {n: per_example(lambda k, n=n: evaluation.iwae_log_likelihood(
      model, vae_vars, images, num_samples=n, chunk=min(n, 16), key=k, batch_size=32), 100 * n)
          for n in ks}
  diff = iwae[1] - elbo
  standard_error = np.std(diff) / np.sqrt(len(diff))
  assert abs(np.mean(diff)) < 4 * standard_error + 0.05, (np.mean(diff), standard_error)
  assert np.mean(iwae[max(ks)]) > np.mean(elbo)
  assert np.mean(iwae[max(ks)] >= elbo) > 0.9
  return elbo, iwae


def restore_latest(workdir):
  """The latest checkpointed TrainState of a train.py workdir (built from its config.json)."""
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = workdir_lib.load_config(workdir)
  run = build.build_run(config, num_train_examples=int(config.train_limit))
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    return workdir_lib.restore_checkpoint(manager, run.abstract_state())
  finally:
    workdir_lib.close(manager)


def pytest_report_header(config):
  del config
  return f'jax {jax.__version__}; forced CPU devices: {NUM_FORCED_DEVICES}'


@dataclasses.dataclass(frozen=True)
class CountingSchedule(train_step.TemperatureSchedule):
  """A temperature schedule that counts how often the step function is traced."""
  traces: list = dataclasses.field(default_factory=list, compare=False, hash=False)

  def __call__(self, step):
    self.traces.append(1)
    return super().__call__(step)


def partial_dsprites_cache(folder, indices) -> None:
  """A dSprites cache in ``folder`` with only the rows ``indices`` rendered (the others
  zero, a sparse file): what data tests read, without the 45 s full render."""
  from vmivae_jax.data import dsprites  # pylint: disable=g-import-not-at-top
  path = dsprites.cache_path(str(folder))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  out = np.lib.format.open_memmap(path, mode='w+', dtype=np.uint8,
                                  shape=(dsprites.num_images, 512))
  indices = np.unique(np.asarray(indices, np.int64))
  images = dsprites.render(dsprites.factors_of(indices))
  out[indices] = np.packbits(images.reshape(len(indices), -1), axis=1)
  out.flush()
  del out
