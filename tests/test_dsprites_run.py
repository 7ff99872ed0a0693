"""64x64 factor data end to end: a smoke dSprites run trained and evaluated (the six
disentanglement scores and the traversal figure), the evaluation's pieces, and a 2-seed
sweep of the dlib_conv family."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import numpy_variables
from conftest import partial_dsprites_cache
from conftest import restore_latest
from vmivae_jax.config import config_lib
from vmivae_jax.data import datasets
from vmivae_jax.data import dsprites
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import disentanglement_eval
from vmivae_jax.evaluation import run as eval_run
from vmivae_jax.train import build
from vmivae_jax.train import trainer

REPO = Path(__file__).resolve().parents[1]
SCORES = ('mig', 'sap', 'modularity', 'dci_disentanglement', 'dci_completeness',
          'dci_informativeness_train', 'dci_informativeness_test', 'beta_vae_train_accuracy',
          'beta_vae_eval_accuracy', 'factor_vae_train_accuracy', 'factor_vae_eval_accuracy')


def _config_file(name: str, variant: str = ''):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """The rows a smoke run reads rendered, plus 20,000 random ones for the scores' draws
  (the others are blank: the scores are then about a partly blank grid, which the smoke
  test does not judge)."""
  folder = tmp_path_factory.mktemp('dsprites')
  extra = np.random.default_rng(1).choice(dsprites.num_images, 20_000, replace=False)
  partial_dsprites_cache(folder, np.concatenate([
      datasets.dsprites_split_indices('train', 512), datasets.dsprites_split_indices('test', 200),
      extra]))
  return str(folder)


def _smoke(cache, name='dsprites_vmi', **overrides):
  config = _config_file(name, 'smoke')
  config.update(data_cache_dir=cache, num_train_steps=10)
  return config_lib.override(config, overrides)


@pytest.fixture(scope='module')
def device_fed_run(tmp_path_factory, cache):
  workdir = tmp_path_factory.mktemp('dsprites_run') / 'run'
  trainer.train(_smoke(cache), workdir, num_devices=1)
  return workdir


def test_smoke_run_trains_and_evaluates_on_64x64(device_fed_run):
  workdir = device_fed_run
  metrics = eval_run.evaluate_workdir(workdir)
  scores = metrics['disentanglement']
  for key in SCORES:
    assert 0.0 <= scores[key] <= 1.0, (key, scores[key])
  assert scores['num_train'] == 200 and scores['batch_size'] == 8
  assert set(scores['seconds']) == {'mig', 'modularity', 'sap', 'dci', 'beta_vae',
                                    'factor_vae'}
  assert np.isfinite(metrics['elbo']) and metrics['elbo'] < 0
  assert np.isfinite(metrics['mi_bound'])
  assert metrics['num_test_examples'] == 200
  for i in range(disentanglement_eval.TRAVERSAL_EXAMPLES):
    assert f'traversal_all_dims_{i}.png' in metrics['figures']
    assert (workdir / 'eval' / f'traversal_all_dims_{i}.png').stat().st_size > 1000
  stored = (workdir / 'eval' / 'metrics.json').read_text()
  assert '"factor_vae_eval_accuracy"' in stored


def test_observations_are_the_images_of_the_drawn_factors(cache):
  packed = dsprites.load_or_build(cache)
  gt = disentanglement_eval.ground_truth(packed)
  index = datasets.dsprites_split_indices('test', 5)
  obs = gt.observations(dsprites.factors_of(index))
  assert obs.shape == (5, 64, 64, 1) and obs.dtype == np.uint8
  np.testing.assert_array_equal(obs[..., 0], 255 * dsprites.render(dsprites.factors_of(index)))


def test_traversal_varies_one_dim_per_row_from_the_posterior_mean(cache):
  model = build.build_model(_smoke(cache))
  vae_vars, _ = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  test = datasets.load_split('dsprites', 'test', data_cache_dir=cache, limit=2)
  x = test.images.astype(np.float32) / 255
  arrays, values = disentanglement_eval.traversal_arrays(model, vae_vars, x, traversal_range=2.0,
                                                         steps=5)
  assert arrays.shape == (2, 10, 5, 64, 64, 1)
  np.testing.assert_allclose(values, [-2, -1, 0, 1, 2])
  means = np.asarray(disentanglement_eval._encoder_mean(model, vae_vars, x))  # pylint: disable=protected-access
  code = means[1].copy()
  code[7] = values[3]   # example 1, dim 7, value 1: only that dim moved
  expected = common.decode_mean(model, vae_vars, code[None])
  np.testing.assert_allclose(arrays[1, 7, 3], np.asarray(expected)[0], atol=1e-5)
  assert not np.allclose(arrays[1, 7, 0], arrays[1, 7, 4])


def test_two_seed_sweep_of_the_dlib_conv_family_equals_its_single_runs(tmp_path, cache):
  sweep_dir = tmp_path / 'sweep'
  trainer.train(_smoke(cache, 'dsprites_beta_vae', **{'sweep.seed': (0, 1)}), sweep_dir,
                num_devices=1)
  single = tmp_path / 'single1'
  trainer.train(_smoke(cache, 'dsprites_beta_vae', seed=1), single, num_devices=1)
  a, b = restore_latest(sweep_dir / 'members' / '1'), restore_latest(single)
  assert int(a.step) == int(b.step) == 10
  for x, y in zip(jax.tree.leaves(a.vae_params), jax.tree.leaves(b.vae_params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
  seeds_differ = restore_latest(sweep_dir / 'members' / '0').vae_params
  assert not np.allclose(jax.tree.leaves(seeds_differ)[0], jax.tree.leaves(a.vae_params)[0])


def test_host_feed_of_packed_rows_trains_the_same_parameters(tmp_path, cache, device_fed_run):
  host = tmp_path / 'host'
  trainer.train(_smoke(cache, data_feed='host'), host, num_devices=1)
  a, b = restore_latest(host), restore_latest(device_fed_run)
  assert int(a.step) == int(b.step) == 10
  for x, y in zip(jax.tree.leaves((a.vae_params, a.q_params)),
                  jax.tree.leaves((b.vae_params, b.q_params))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
