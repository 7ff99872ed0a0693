"""The categorical code's invariance terms in the train step (vmivae_jax/model/invariance.py).

Configs (tiny MLP of conftest, MI on and SGD), each compiled once per module:
'base' (the defaults: every invariance weight 0), 'zero' (weights 0, other invariance
settings changed), 'cons' (consistency only), 'cons_train' (consistency 1000, Adam) and
'all' (consistency + paired MI + VAT + neighbours).
"""

import dataclasses
import functools
import math

import jax
import numpy as np
import pytest

from conftest import CountingSchedule
from conftest import make_tiny_config
from conftest import random_uint8_images
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.config.validation import ConfigError
from vmivae_jax.model import invariance
from vmivae_jax.train import build
from vmivae_jax.train import train_state
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel

N = 128
IMAGES = random_uint8_images(N, seed=1)


def _config(name):
  c = make_tiny_config()
  inv = c.invariance
  if name == 'zero':
    inv.update(vat_epsilon=3.0, vat_xi=0.1, vat_power_iterations=2)
    inv.augment.update(max_rotation=30.0, elastic_alpha=8.0, erode_prob=0.1,
                       thickness_footprint='square')
  elif name == 'cons':
    inv.consistency_weight = 10.0
  elif name == 'cons_train':   # dominant consistency term, Adam: the metric must fall
    inv.consistency_weight = 1000.0
    c.vae_optimizer.update(name='adam', learning_rate=1e-3)
  elif name == 'all':
    inv.update(consistency_weight=1.0, paired_mi_weight=1.0, vat_weight=1.0,
               neighbour_weight=1.0, neighbour_count=3)
  return c


@functools.cache
def _cfg(name):
  c = _config(name)
  model = build.build_model(c, batch_norm_axis=parallel.DATA_AXIS)
  statics = build.step_statics(c, model, num_train_examples=N)
  return dataclasses.replace(statics, temperature=CountingSchedule())


@functools.cache
def _mesh(n):
  return parallel.make_mesh(n)


@functools.cache
def _chunk(name, devices, steps):
  return train_step.make_train_chunk(_cfg(name), _mesh(devices), steps)


@functools.cache
def _initial(name='base'):
  """Host initial state (the same networks for every config; 'cons_train' uses Adam)."""
  cfg = _cfg(name)
  state = train_state.create(cfg.model, train_state.run_keys(0)['init'], vae_tx=cfg.vae_tx,
                             q_tx=cfg.q_tx)
  return jax.tree.map(np.asarray, state)


def _run(name, devices=1, steps=1, calls=1):
  mesh = _mesh(devices)
  fn = _chunk(name, devices, steps)
  keys = train_state.run_keys(0)
  state = parallel.replicate(_initial('cons_train' if name == 'cons_train' else 'base'), mesh)
  images = parallel.replicate(
      train_step.device_training_set(IMAGES, _cfg(name).objective.invariance), mesh)
  metrics = []
  for _ in range(calls):
    state, m = fn(state, images, keys['step'], keys['data'])
    metrics.append(jax.tree.map(np.asarray, m))
  metrics = jax.tree.map(lambda *m: np.concatenate(m), *metrics)
  return jax.tree.map(np.asarray, state), metrics


def _bitwise_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------------
# Config and settings.


def test_default_section_is_off_and_named_as_the_suite_expects():
  inv = config_lib.get_base_config().invariance.to_dict()
  assert inv == dict(
      consistency_weight=0.0, paired_mi_weight=0.0, vat_weight=0.0, vat_epsilon=1.2,
      vat_xi=0.0, vat_power_iterations=1, neighbour_weight=0.0, neighbour_count=20,
      augment=dict(max_rotation=15.0, max_scale=0.1, max_aspect=0.0, max_shear=10.0,
                   max_translation=2.0, elastic_alpha=0.0, elastic_sigma=4.0,
                   dilate_prob=0.25, erode_prob=0.0, thickness_footprint='cross',
                   flip_prob=0.0, crop_min_area=1.0, crop_max_aspect=0.0))
  settings = build.invariance_settings(config_lib.get_base_config())
  assert not settings.enabled
  assert settings.augment.max_rotation == 15.0 and settings.augment.thickness_footprint == 'cross'
  hash(settings)   # part of the static StepStatics
  # A config stored before the section existed builds with the terms off.
  old = config_lib.get_base_config()
  del old['invariance']
  assert build.invariance_settings(old) == invariance.InvarianceSettings()


def test_a_stored_config_without_the_section_loads_with_it_off(tmp_path):
  """config.json of a run from before the section existed: eval still reads it."""
  import json  # pylint: disable=g-import-not-at-top
  from vmivae_jax.rundir import workdir  # pylint: disable=g-import-not-at-top
  old = config_lib.get_base_config().to_dict()
  del old['invariance']
  old['data_dir'] = '.'
  (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(old))
  loaded = workdir.load_config(tmp_path)
  assert loaded.invariance.to_dict() == config_lib.get_base_config().invariance.to_dict()
  validation.validate(loaded, check_paths=False)


@pytest.mark.parametrize('name', ['mnist_class', 'fashion_class'])
def test_recipe_configs(name):
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'configs.{name}')
  for variant in ('', 'smoke'):
    c = module.get_config(variant)
    c.data_dir = '.'
    validation.validate(c)
    assert c.latent.categorical_sizes == (10,) and c.mi_weight == 10.0
    assert c.invariance.consistency_weight == 10.0 and c.invariance.vat_weight == 1.0
    assert c.invariance.vat_epsilon == 1.2
  full = module.get_config()
  assert full.num_train_steps == 7020 and full.checkpoint_every_steps == 2340
  a = full.invariance.augment
  if name == 'mnist_class':
    assert (a.max_rotation, a.max_scale, a.max_shear, a.max_translation, a.dilate_prob,
            a.thickness_footprint) == (15.0, 0.1, 10.0, 2.0, 0.25, 'cross')
  else:
    assert (a.max_rotation, a.max_scale, a.max_shear, a.max_translation, a.dilate_prob,
            a.erode_prob) == (10.0, 0.1, 5.0, 2.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------
# The step.


def test_zero_weights_are_bitwise_the_plain_step():
  """Weights 0 with every other invariance setting changed: same state and metrics, bitwise,
  as the defaults (whose step tests/test_golden.py locks against the recorded runs)."""
  s_base, m_base = _run('base', steps=2)
  s_zero, m_zero = _run('zero', steps=2)
  assert _bitwise_equal(s_base, s_zero)
  assert m_base.keys() == m_zero.keys()
  assert _bitwise_equal(m_base, m_zero)
  assert not set(invariance.METRICS) & set(m_base)


def test_every_term_is_logged_and_finite():
  _, metrics = _run('all', steps=3)
  for name in invariance.METRICS:
    assert metrics[name].shape == (3,)
    assert np.all(np.isfinite(metrics[name])), (name, metrics[name])
  assert np.all(metrics['consistency'] >= 0) and np.all(metrics['vat'] >= 0)
  assert np.all(metrics['neighbour'] >= 0) and np.all(metrics['neighbour'] <= 3 * math.log(10))
  assert np.all(metrics['paired_mi'] >= -1e-6)
  assert np.all(metrics['paired_mi'] <= math.log(10) + 1e-5)
  _, cons = _run('cons')
  assert 'consistency' in cons and 'paired_mi' not in cons and 'vat' not in cons


def test_consistency_changes_the_encoder_gradient_only():
  """One SGD step: with the consistency term the encoder moves differently; the decoder
  and Q move exactly as without it (the term reads only the encoder's output)."""
  s0 = _initial()
  s_off, _ = _run('base')
  s_on, _ = _run('cons')
  def delta(params, part):
    return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, params[part],
                        s0.vae_params[part])
  assert set(s0.vae_params) >= {'encoder', 'decoder'}, set(s0.vae_params)
  enc_off, enc_on = delta(s_off.vae_params, 'encoder'), delta(s_on.vae_params, 'encoder')
  dec_off, dec_on = delta(s_off.vae_params, 'decoder'), delta(s_on.vae_params, 'decoder')
  enc_diff = max(float(np.abs(a - b).max()) for a, b in
                 zip(jax.tree.leaves(enc_off), jax.tree.leaves(enc_on)))
  assert enc_diff > 1e-7, enc_diff
  for a, b in zip(jax.tree.leaves(dec_off), jax.tree.leaves(dec_on)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)
  assert _bitwise_equal(s_off.q_params, s_on.q_params)


def test_consistency_training_lowers_the_consistency_metric_and_compiles_once():
  """30 steps (six chunks of 5) with consistency weight 1000 (measured: 0.027 -> 0.002);
  with weight 1e-3 the metric stayed at 0.02-0.04."""
  cfg = _cfg('cons_train')
  traces_before = len(cfg.temperature.traces)
  _, metrics = _run('cons_train', steps=5, calls=6)
  # The step was traced once for all six chunks (scan traces its body once).
  assert len(cfg.temperature.traces) - traces_before == 1
  c = metrics['consistency']
  assert c.shape == (30,) and np.all(np.isfinite(c))
  assert c[-10:].mean() < 0.25 * c[:5].mean(), c


def test_one_and_eight_devices_agree_with_every_term_on():
  """Augmentation keys per example of the global batch, VAT starts drawn for the global
  batch, the paired-MI joint averaged over devices: the result is the same."""
  s1, m1 = _run('all', 1, 3)
  s8, m8 = _run('all', 8, 3)
  s0 = _initial()
  moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in
              zip(jax.tree.leaves(s1.vae_params), jax.tree.leaves(s0.vae_params)))
  assert moved > 1e-3
  for part in ('vae_params', 'q_params'):
    for a, b in zip(jax.tree.leaves(getattr(s8, part)), jax.tree.leaves(getattr(s1, part))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
  for name in ('consistency', 'vat', 'neighbour', 'loss', 'elbo_relaxed'):
    np.testing.assert_allclose(m8[name], m1[name], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m8['paired_mi'], m1['paired_mi'], atol=1e-5)


def test_augmented_view_does_not_depend_on_the_slice():
  """Per-example keys: example i's T(x_i) is the same in a batch of 8 as alone."""
  x = np.asarray(IMAGES[:8], np.float32) / 255.0
  keys = jax.random.split(jax.random.key(3), 8)
  settings = invariance.AugmentSettings(max_rotation=15.0, max_translation=2.0,
                                        dilate_prob=0.5, thickness_footprint='cross')
  whole = invariance.augment_examples(keys, x, settings)
  part = invariance.augment_examples(keys[4:], x[4:], settings)
  np.testing.assert_allclose(np.asarray(part), np.asarray(whole[4:]), rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(whole), x)
  # [-1, 1] data are augmented in [0, 1] (background stays -1 where the warp fills).
  minus = invariance.augment_examples(keys, 2 * x - 1, settings, pixel_range=(-1.0, 1.0))
  np.testing.assert_allclose(np.asarray(minus), 2 * np.asarray(whole) - 1, atol=1e-5)


# ----------------------------------------------------------------------------------
# Validation.


def _with(**overrides):
  c = make_tiny_config()
  c.data_dir = '.'
  return config_lib.override(c, overrides)


@pytest.mark.parametrize('key,value,expected', [
    ('invariance.consistency_weight', -1.0,
     'config.invariance.consistency_weight=-1.0: must be >= 0.0'),
    ('invariance.paired_mi_weight', -0.5, 'config.invariance.paired_mi_weight=-0.5: must be >= 0'),
    ('invariance.vat_weight', -2.0, 'config.invariance.vat_weight=-2.0: must be >= 0'),
    ('invariance.vat_epsilon', 0.0, 'config.invariance.vat_epsilon=0.0: must be > 0.0'),
    ('invariance.vat_xi', -1e-3, 'config.invariance.vat_xi=-0.001: must be >= 0'),
    ('invariance.vat_power_iterations', 0,
     'config.invariance.vat_power_iterations=0: must be > 0'),
    ('invariance.augment.dilate_prob', 1.5,
     'config.invariance.augment.dilate_prob=1.5: must be <= 1.0'),
    ('invariance.augment.erode_prob', -0.1,
     'config.invariance.augment.erode_prob=-0.1: must be >= 0'),
    ('invariance.augment.erode_prob', 0.9,
     'config.invariance.augment.erode_prob=0.9: invariance.augment.dilate_prob + erode_prob'),
    ('invariance.augment.thickness_footprint', 'disk',
     "config.invariance.augment.thickness_footprint='disk': choose one of ('square', 'cross')"),
    ('invariance.augment.max_scale', 1.0, 'config.invariance.augment.max_scale=1.0: must be < 1'),
    ('invariance.augment.max_shear', 90.0,
     'config.invariance.augment.max_shear=90.0: must be < 90'),
    ('invariance.augment.elastic_sigma', 0.0,
     'config.invariance.augment.elastic_sigma=0.0: must be > 0'),
    ('invariance.augment.max_rotation', -5.0,
     'config.invariance.augment.max_rotation=-5.0: must be >= 0'),
    ('invariance.neighbour_weight', -1.0, 'config.invariance.neighbour_weight=-1.0: must be >= 0'),
    ('invariance.neighbour_count', 0, 'config.invariance.neighbour_count=0: must be > 0'),
    ('invariance.augment.crop_min_area', 0.0,
     'config.invariance.augment.crop_min_area=0.0: must be > 0'),
    ('invariance.augment.crop_min_area', 1.5,
     'config.invariance.augment.crop_min_area=1.5: must be <= 1'),
    ('invariance.augment.crop_max_aspect', -0.5,
     'config.invariance.augment.crop_max_aspect=-0.5: must be >= 0'),
])
def test_bad_values_name_key_and_value(key, value, expected):
  with pytest.raises(ConfigError) as info:
    validation.validate(_with(**{key: value}))
  assert str(info.value).startswith(expected), str(info.value)


def test_neighbours_need_the_device_feed():
  c = _with(**{'invariance.neighbour_weight': 1.0, 'data_feed': 'host'})
  with pytest.raises(ConfigError, match="config.data_feed='host': the neighbour term"):
    validation.validate(c)


def test_training_set_holds_the_neighbour_table_only_with_the_term_on():
  off = train_step.device_training_set(IMAGES, invariance.InvarianceSettings())
  assert off.neighbours is None and off.images.shape == IMAGES.shape
  on = train_step.device_training_set(
      IMAGES, invariance.InvarianceSettings(neighbour_weight=1.0, neighbour_count=4))
  flat = IMAGES.reshape(N, -1).astype(np.float64)
  flat /= np.linalg.norm(flat, axis=1, keepdims=True)
  similarity = flat @ flat.T
  np.fill_diagonal(similarity, -np.inf)
  np.testing.assert_array_equal(np.asarray(on.neighbours)[:, 0], similarity.argmax(1))
  with pytest.raises(ValueError, match=r'invariance.neighbour_count=128 must be in \[1, 127\]'):
    train_step.device_training_set(
        IMAGES, invariance.InvarianceSettings(neighbour_weight=1.0, neighbour_count=N))


def test_each_step_pairs_every_example_with_one_of_its_neighbours():
  """With k = 1 the neighbour is fixed: the step's neighbour term equals SCAN's loss of
  the clean logits and the neighbours' logits, recomputed outside the step."""
  c = _config('base')
  c.invariance.update(neighbour_weight=1.0, neighbour_count=1)
  model = build.build_model(c, batch_norm_axis=parallel.DATA_AXIS)
  statics = build.step_statics(c, model, num_train_examples=N)
  training_set = train_step.device_training_set(IMAGES, statics.objective.invariance)
  keys = train_state.run_keys(0)
  state = _initial()
  fn = train_step.make_train_chunk(statics, _mesh(1), 1)
  _, metrics = fn(jax.tree.map(np.array, state), training_set, keys['step'], keys['data'])
  from vmivae_jax import consistency  # pylint: disable=g-import-not-at-top
  from vmivae_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  index = np.asarray(preprocess.batch_indices(keys['data'], 0, 1, batch_size=statics.batch_size,
                                              num_examples=N))[0]
  variables = {'params': state.vae_params, **state.vae_state}
  def logits(rows):
    x = preprocess.scale_images(IMAGES[rows], model.pixel_range)
    return invariance.encode_logits(model.vae, variables, x)[0]
  neighbours = np.asarray(training_set.neighbours)[index, 0]
  expected = np.mean(consistency.neighbour_consistency(
      logits=logits(index), neighbour_logits=logits(neighbours)))
  np.testing.assert_allclose(metrics['neighbour'][0], expected, rtol=1e-5)


@pytest.mark.parametrize('key', ['consistency_weight', 'paired_mi_weight', 'vat_weight'])
def test_invariance_without_a_categorical_code(key):
  c = _with(**{'latent.categorical_sizes': (), 'mi.categorical_indices': (),
               f'invariance.{key}': 1.0})
  with pytest.raises(ConfigError) as info:
    validation.validate(c)
  assert str(info.value).startswith(f'config.invariance.{key}=1.0: the invariance terms act '
                                    'on categorical codes and there is none'), str(info.value)
  c[f'invariance'][key] = 0.0
  validation.validate(c)


# ----------------------------------------------------------------------------------
# Conv + BatchNorm: the extra encoder passes do not touch the running statistics.


def _conv_statics(on: bool):
  c = make_tiny_config()
  c.latent.gaussian_dims = 2
  c.latent.categorical_sizes = (3,)
  c.batch_size = 16
  c.binarize = True           # T(x) is binarised with x's uniforms
  c.model.update(family='conv', norm='batch', activation='leaky_relu', encoder_hidden=(16,),
                 decoder_hidden=(16,), q_hidden=(16,), encoder_channels=(4, 8),
                 decoder_channels=(8, 4), q_channels=(4, 8))
  if on:
    c.invariance.update(consistency_weight=1.0, paired_mi_weight=1.0, vat_weight=1.0,
                        neighbour_weight=1.0, neighbour_count=3)
  model = build.build_model(c, batch_norm_axis=parallel.DATA_AXIS)
  return build.step_statics(c, model, num_train_examples=N)


def test_conv_batchnorm_running_statistics_are_updated_by_the_clean_pass_only():
  from conftest import numpy_variables  # pylint: disable=g-import-not-at-top
  off, on = _conv_statics(False), _conv_statics(True)
  vae_vars, q_vars = numpy_variables(jax.eval_shape(off.model.init, jax.random.key(0)))
  vae_params, vae_state = train_state.split_variables(vae_vars)
  q_params, q_state = train_state.split_variables(q_vars)
  assert vae_state['batch_stats']
  state = train_state.TrainState(
      step=np.zeros((), np.int32), vae_params=vae_params, vae_state=vae_state,
      vae_opt_state=off.vae_tx.init(vae_params), q_params=q_params, q_state=q_state,
      q_opt_state=off.q_tx.init(q_params))
  keys = train_state.run_keys(0)
  mesh = _mesh(1)
  results = {}
  for name, statics in (('off', off), ('on', on)):
    fn = train_step.make_train_chunk(statics, mesh, 1)
    training_set = train_step.device_training_set(IMAGES, statics.objective.invariance)
    new, metrics = fn(parallel.replicate(state, mesh), parallel.replicate(training_set, mesh),
                      keys['step'], keys['data'])
    results[name] = jax.tree.map(np.asarray, (new, metrics))
  (s_off, m_off), (s_on, m_on) = results['off'], results['on']
  for name in invariance.METRICS:
    assert np.all(np.isfinite(m_on[name])), name
  # Same clean pass at the same parameters: the running statistics agree exactly as if
  # the augmented / VAT passes had not run (their updates are dropped).
  assert _bitwise_equal(s_off.vae_state, s_on.vae_state)
  assert not _bitwise_equal(s_off.vae_state, vae_state)
