"""Config validation (vmivae_jax/config/validation.py): every bad config is a ConfigError naming
the key and the value, raised before any data is read or code compiled.

Property-based: hypothesis mutates one field of a valid config (every smoke config in
configs/) to a bad value of a random kind (wrong type, negative, zero, NaN/Inf, out of
range, unknown choice, missing/unknown key) and requires ``ConfigError`` whose message
names the key, never another exception type. docs/reliability.md lists what is checked.
"""

import importlib.util
from pathlib import Path
import time

import hypothesis
from hypothesis import strategies as st
import ml_collections
import numpy as np
import pytest

from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.config.validation import ConfigError
from vmivae_jax.data import sources as data
from vmivae_jax.train import trainer

REPO = Path(__file__).resolve().parents[1]
EXISTING_DIR = str(REPO)  # any existing directory passes the data_dir check
SETTINGS = hypothesis.settings(max_examples=150, deadline=None, derandomize=False,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])


def _load_config(path: Path, variant: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f'cfg_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.data_dir = EXISTING_DIR
  return config


CONFIG_FILES = sorted((REPO / 'configs').glob('*.py'))
SMOKE_CONFIGS = {p.stem: _load_config(p, 'smoke') for p in CONFIG_FILES}
FULL_CONFIGS = {p.stem: _load_config(p, '') for p in CONFIG_FILES}


def _leaves(config, prefix=''):
  """{dotted key: reference value} of every non-group field."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


BASE_LEAVES = _leaves(config_lib.get_base_config())


def _with(config: ml_collections.ConfigDict, key: str, value, *, delete=False):
  """A copy of ``config`` (as a plain, unlocked ConfigDict) with ``key`` set/deleted;
  built from a dict so that any type can be stored, as from a JSON file or code."""
  d = config.to_dict()
  node = d
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  if delete:
    del node[leaf]
  else:
    node[leaf] = value
  try:
    return ml_collections.ConfigDict(d)
  except Exception as e:  # pylint: disable=broad-except  (a key ConfigDict itself refuses)
    hypothesis.assume(False)
    raise AssertionError('unreachable') from e


def _assert_config_error(config, key, num_devices=1, **kwargs):
  with pytest.raises(ConfigError) as info:
    validation.validate(config, num_devices=num_devices, **kwargs)
  message = str(info.value)
  assert f'config.{key}' in message, message
  return message


# ------------------------------------------------------------------------------------
# The configs in configs/ are valid.


@pytest.mark.parametrize('name', sorted(SMOKE_CONFIGS))
def test_every_smoke_config_is_valid_on_1_and_8_devices(name):
  validation.validate(SMOKE_CONFIGS[name], num_devices=1)
  validation.validate(SMOKE_CONFIGS[name], num_devices=8)


@pytest.mark.parametrize('name', sorted(FULL_CONFIGS))
def test_every_full_config_is_valid_on_1_device(name):
  validation.validate(FULL_CONFIGS[name], num_devices=1)


# ------------------------------------------------------------------------------------
# Bad values by kind: one field at a time.

WRONG_TYPES = {
    int: ['64', 1.5, 2.0, [1], None, True, {'a': 1}, float('nan')],
    float: ['1.0', None, [1.0], (1.0,), True, False, {'a': 1.0}, float('nan'), float('inf'),
            -float('inf'), 10**400],
    str: [1, 1.0, ['mnist'], ('mnist',), None, True, {'a': 'b'}],
    bool: ['yes', 'True', 1, 0, None, 1.0, [True]],
    tuple: ['abc', '0', 5, 1.5, None, True, {'a': 1}],
}
# Minimum of each numeric field (value < minimum is bad) and the fields where 0 is bad.
NON_NEGATIVE_FLOATS = {
    'mi_weight', 'beta', 'capacity.gaussian.gamma', 'capacity.gaussian.max_nats',
    'capacity.categorical.gamma', 'capacity.categorical.max_nats', 'temperature.initial',
    'temperature.floor', 'temperature.anneal_rate', 'eval.q_learning_rate',
    'eval.traversal_range'} | {f'{o}.{k}' for o in ('vae_optimizer', 'q_optimizer',
                                                  'disentangle.discriminator_optimizer')
                               for k in ('learning_rate', 'b1', 'b2', 'weight_decay',
                                         'grad_clip_norm')} | {
    f'invariance.{k}' for k in ('consistency_weight', 'paired_mi_weight', 'vat_weight',
                                'vat_epsilon', 'vat_xi')} | {
    f'invariance.augment.{k}' for k in ('max_rotation', 'max_scale', 'max_aspect',
                                        'max_shear', 'max_translation', 'elastic_alpha',
                                        'elastic_sigma', 'dilate_prob', 'erode_prob',
                                        'flip_prob', 'crop_min_area', 'crop_max_aspect')} | {
    'invariance.neighbour_weight'} | {
    'mixture_prior.init_scale'} | {
    f'code_training.{k}' for k in ('marginal_entropy_weight', 'conditional_entropy_weight',
                                   'generative_gradient')} | {
    f'disentangle.{k}' for k in ('index_code_mi_weight', 'tc_weight', 'dimwise_kl_weight',
                                 'dip_lambda_od', 'dip_lambda_d_factor_i',
                                 'dip_lambda_d_factor_ii')}
STRICTLY_POSITIVE = {
    'batch_size', 'num_train_steps', 'steps_per_chunk', 'checkpoint_every_steps',
    'keep_checkpoints', 'capacity.gaussian.steps', 'capacity.categorical.steps',
    'temperature.initial', 'temperature.floor', 'vae_optimizer.learning_rate',
    'q_optimizer.learning_rate', 'disentangle.discriminator_optimizer.learning_rate',
    'eval.batch_size', 'eval.iwae_samples', 'eval.iwae_chunk',
    'eval.q_train_steps', 'eval.q_batch_size', 'eval.q_learning_rate', 'eval.traversal_range',
    'eval.traversal_steps', 'invariance.vat_epsilon', 'invariance.vat_power_iterations',
    'invariance.augment.elastic_sigma', 'invariance.neighbour_count',
    'invariance.augment.crop_min_area'}
CHOICES = {
    'dataset': data.DATASETS, 'pixel_range': tuple(validation.PIXEL_RANGES),
    'likelihood': ('bernoulli', 'gaussian', 'mse'),
    'mi.gaussian_entropy': ('gaussian_prior', 'gaussian_aggregate_mc'),
    'model.family': ('mlp', 'conv'), 'model.norm': ('none', 'batch', 'layer'),
    'model.activation': ('relu', 'leaky_relu', 'elu', 'gelu', 'tanh'),
    'vae_optimizer.name': validation.OPTIMIZERS, 'q_optimizer.name': validation.OPTIMIZERS,
    'invariance.augment.thickness_footprint': ('square', 'cross'),
    'data_feed': config_lib.DATA_FEEDS,
    'disentangle.method': config_lib.DISENTANGLE_METHODS,
    'disentangle.estimator': ('mws', 'mss'),
    'disentangle.discriminator_optimizer.name': validation.OPTIMIZERS,
}
WIDTH_KEYS = {f'model.{k}' for k in ('encoder_hidden', 'decoder_hidden', 'q_hidden',
                                     'encoder_channels', 'decoder_channels', 'q_channels')} | {
    'disentangle.discriminator_hidden'}


def test_bad_value_tables_cover_every_field():
  """Each numeric field's range is declared above (a new key must be added here)."""
  for key, ref in BASE_LEAVES.items():
    if isinstance(ref, float) and key != 'gaussian_logvar':
      assert key in NON_NEGATIVE_FLOATS, key
  assert set(CHOICES) <= set(BASE_LEAVES)
  assert STRICTLY_POSITIVE <= set(BASE_LEAVES)


@st.composite
def bad_mutation(draw):
  """(config name, key, bad value or None for 'delete', why) for one field."""
  name = draw(st.sampled_from(sorted(SMOKE_CONFIGS)))
  config = SMOKE_CONFIGS[name]
  key = draw(st.sampled_from(sorted(BASE_LEAVES)))
  ref = BASE_LEAVES[key]
  kinds = ['wrong_type', 'missing']
  if isinstance(ref, int) and not isinstance(ref, bool):
    kinds += ['negative', 'too_large']
  if isinstance(ref, float) and key in NON_NEGATIVE_FLOATS:
    kinds.append('negative')
  if key in STRICTLY_POSITIVE:
    kinds.append('zero')
  if key in CHOICES:
    kinds.append('unknown_choice')
  if key in WIDTH_KEYS or key in ('latent.categorical_sizes', 'mi.gaussian_indices',
                                  'mi.categorical_indices'):
    kinds.append('bad_item')
  if key.endswith(('.b1', '.b2')):
    kinds.append('at_least_one')
  if key == 'data_dir':
    kinds.append('missing_dir')
  kind = draw(st.sampled_from(kinds))
  if kind == 'wrong_type':
    value = draw(st.sampled_from(WRONG_TYPES[type(ref)]))
  elif kind == 'missing':
    value = None
  elif kind == 'negative':
    value = (-draw(st.integers(1, 2**40)) if isinstance(ref, int)
             else -draw(st.floats(1e-12, 1e12)))
  elif kind == 'too_large':
    value = draw(st.integers(2**32, 2**70))
  elif kind == 'zero':
    value = 0 if isinstance(ref, int) else 0.0
  elif kind == 'unknown_choice':
    value = draw(st.text(max_size=12).filter(lambda s: s not in CHOICES[key]))
  elif kind == 'at_least_one':
    value = draw(st.floats(1.0, 1e6))
  elif kind == 'missing_dir':
    value = '/nonexistent/' + draw(st.text('abcdefgh_-', min_size=1, max_size=12))
  else:  # bad_item
    if key == 'latent.categorical_sizes':
      item = draw(st.one_of(st.integers(-5, 1), st.just('10'), st.just(2.5), st.none()))
    elif key in WIDTH_KEYS:
      item = draw(st.one_of(st.integers(-5, 0), st.just('32'), st.just(8.0)))
    else:  # MI target index out of range, of the wrong type, or repeated
      size = (config.latent.gaussian_dims if key == 'mi.gaussian_indices'
              else len(config.latent.categorical_sizes))
      item = draw(st.one_of(st.integers(size, size + 100), st.integers(-100, -1),
                            st.just('0'), st.just(0.0), st.just(True)))
    original = tuple(config[key.split('.')[0]][key.split('.')[1]])
    position = draw(st.integers(0, len(original)))
    value = original[:position] + (item,) + original[position:]
  return name, key, kind, value


@SETTINGS
@hypothesis.given(bad_mutation())
def test_any_single_bad_field_is_a_config_error_naming_the_key(mutation):
  name, key, kind, value = mutation
  config = _with(SMOKE_CONFIGS[name], key, value, delete=(kind == 'missing'))
  message = _assert_config_error(config, key)
  if kind == 'missing':
    assert 'missing' in message
  elif kind == 'missing_dir':
    assert value in message and 'does not exist' in message


@SETTINGS
@hypothesis.given(name=st.sampled_from(sorted(SMOKE_CONFIGS)),
                  parent=st.sampled_from(['', 'latent.', 'mi.', 'model.', 'eval.',
                                          'vae_optimizer.', 'capacity.gaussian.']),
                  new_key=st.from_regex(r'[a-z][a-z0-9_]{0,15}', fullmatch=True),
                  value=st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_an_unknown_key_is_refused(name, parent, new_key, value):
  config = SMOKE_CONFIGS[name]
  node = config
  for part in parent.rstrip('.').split('.') if parent else ():
    node = node[part]
  hypothesis.assume(new_key not in node)
  _assert_config_error(_with(config, parent + new_key, value), parent + new_key)


JSON_LIKE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
              st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=6)
GROUPS = sorted({k.rsplit('.', 1)[0] for k in BASE_LEAVES if '.' in k})


@SETTINGS
@hypothesis.given(name=st.sampled_from(sorted(SMOKE_CONFIGS)),
                  edits=st.lists(st.tuples(st.sampled_from(sorted(BASE_LEAVES) + GROUPS),
                                           JSON_LIKE), min_size=1, max_size=3),
                  num_devices=st.sampled_from([1, 2, 8]))
def test_random_junk_is_never_anything_but_a_config_error(name, edits, num_devices):
  """Whatever is stored anywhere: validate passes or raises ConfigError('config.<key>...')."""
  config = SMOKE_CONFIGS[name]
  for key, value in edits:
    try:
      config = _with(config, key, value)
    except (KeyError, TypeError):  # an earlier edit replaced a parent group
      hypothesis.assume(False)
  try:
    validation.validate(config, num_devices=num_devices)
  except ConfigError as e:
    assert str(e).startswith('config.'), str(e)


@SETTINGS
@hypothesis.given(batch_size=st.integers(1, 4096).filter(lambda b: b % 8))
def test_batch_size_not_divisible_by_8_devices(batch_size):
  config = _with(SMOKE_CONFIGS['mnist_joint'], 'batch_size', batch_size)
  config = _with(config, 'train_limit', 0)
  message = _assert_config_error(config, 'batch_size', num_devices=8)
  assert f'config.batch_size={batch_size}: must be divisible by the number of devices (8)' \
      == message


@SETTINGS
@hypothesis.given(
    name=st.sampled_from(sorted(SMOKE_CONFIGS)),
    seed=st.integers(0, 2**32 - 1),
    lr=st.floats(1e-8, 10.0), beta=st.floats(0.0, 100.0), mi_weight=st.floats(0.0, 100.0),
    temps=st.tuples(st.floats(1e-3, 10.0), st.floats(1e-3, 10.0)),
    per_device=st.integers(1, 8), num_devices=st.sampled_from([1, 2, 4, 8]))
def test_random_valid_values_pass(name, seed, lr, beta, mi_weight, temps, per_device,
                                  num_devices):
  """No false alarms: in-range values of the same fields are accepted."""
  config = SMOKE_CONFIGS[name]
  batch = per_device * num_devices
  for key, value in [('seed', seed), ('vae_optimizer.learning_rate', lr), ('beta', beta),
                     ('mi_weight', mi_weight), ('temperature.initial', max(temps)),
                     ('temperature.floor', min(temps)), ('batch_size', batch),
                     ('train_limit', max(batch, 64))]:
    config = _with(config, key, value)
  validation.validate(config, num_devices=num_devices)


# ------------------------------------------------------------------------------------
# The cases, each spelled out (the message shapes docs/reliability.md shows).

JOINT = SMOKE_CONFIGS['mnist_joint']
GAUSS = SMOKE_CONFIGS['mnist_gauss']


@pytest.mark.parametrize('key,value,expected', [
    ('mi_weight', -1.0, 'config.mi_weight=-1.0: must be >= 0.0'),
    ('beta', -0.5, 'config.beta=-0.5: must be >= 0.0'),
    ('vae_optimizer.learning_rate', -1e-3,
     'config.vae_optimizer.learning_rate=-0.001: must be > 0.0'),
    ('q_optimizer.learning_rate', 0.0, 'config.q_optimizer.learning_rate=0.0: must be > 0.0'),
    ('temperature.initial', -1.0, 'config.temperature.initial=-1.0: must be > 0.0'),
    ('temperature.floor', 0.0, 'config.temperature.floor=0.0: must be > 0.0'),
    ('temperature.floor', 2.0, 'config.temperature.floor=2.0: above temperature.initial=1.0'),
    ('latent.categorical_sizes', (1,),
     'config.latent.categorical_sizes[0]=1: a categorical code needs an integer K >= 2'),
    ('mi.categorical_indices', (1,),
     'config.mi.categorical_indices=(1,): code 1 (item 0) does not exist '
     '(latent.categorical_sizes=(10,))'),
    ('mi.gaussian_indices', (16,),
     'config.mi.gaussian_indices=(16,): index 16 (item 0) is not a Gaussian dim '
     '(latent.gaussian_dims=16)'),
    ('dataset', 'cifar10', "config.dataset='cifar10': choose one of ('mnist', 'fashion_mnist', 'dsprites')"),
    ('batch_size', '64', "config.batch_size='64': expected an integer (like 256)"),
    ('batch_size', 64.0, 'config.batch_size=64.0: expected an integer (like 256)'),
    ('mi_weight', '10', "config.mi_weight='10': expected a number (like 0.0)"),
    ('model.family', ['mlp'], "config.model.family=['mlp']: expected a string (like 'mlp')"),
    ('binarize', 'yes', "config.binarize='yes': expected a bool (True/False) (like False)"),
    ('seed', 2**32, 'config.seed=4294967296: must be <= 4294967295'),
    ('eval.iwae_samples', 0, 'config.eval.iwae_samples=0: must be > 0'),
    ('eval.iwae_chunk', 3, 'config.eval.iwae_chunk=3: must divide eval.iwae_samples=8'),
    ('eval.q_learning_rate', -1.0, 'config.eval.q_learning_rate=-1.0: must be > 0.0'),
    ('vae_optimizer.weight_decay', 0.1,
     "config.vae_optimizer.weight_decay=0.1: only the 'adamw' optimizer uses it"),
    ('learn_output_logvar', True,
     "config.learn_output_logvar=True: only the 'gaussian' likelihood has an output variance"),
    ('mi_wieght', 1.0, 'config.mi_wieght=1.0: unknown key; did you mean mi_weight?'),
])
def test_named_cases(key, value, expected):
  message = _assert_config_error(_with(JOINT, key, value), key)
  assert message.startswith(expected), message


def test_mi_target_in_a_latent_group_that_does_not_exist():
  message = _assert_config_error(_with(GAUSS, 'mi.categorical_indices', (0,)),
                                 'mi.categorical_indices')
  assert 'code 0 (item 0) does not exist (latent.categorical_sizes=())' in message
  message = _assert_config_error(_with(_with(JOINT, 'latent.gaussian_dims', 0),
                                       'mi.gaussian_indices', (0,)), 'mi.gaussian_indices')
  assert 'latent.gaussian_dims=0' in message


def test_capacity_for_a_latent_group_that_does_not_exist():
  message = _assert_config_error(_with(GAUSS, 'capacity.categorical.gamma', 1.0),
                                 'capacity.categorical.gamma')
  assert 'there is no categorical latent group' in message


def test_mi_weight_without_targets():
  config = _with(JOINT, 'mi.categorical_indices', ())
  assert 'select nothing' in _assert_config_error(config, 'mi_weight')


def test_missing_key_and_missing_group():
  assert _assert_config_error(_with(JOINT, 'seed', None, delete=True), 'seed') == (
      'config.seed is missing (expected like 0)')
  assert 'is missing' in _assert_config_error(_with(JOINT, 'eval', None, delete=True), 'eval')
  assert 'expected a group of settings' in _assert_config_error(_with(JOINT, 'eval', 3), 'eval')


def test_too_many_conv_layers():
  config = _with(_with(JOINT, 'model.family', 'conv'), 'model.encoder_channels', (4,) * 5)
  assert 'at most 4 layers' in _assert_config_error(config, 'model.encoder_channels')


def test_missing_data_dir_names_the_path(tmp_path):
  missing = tmp_path / 'no' / 'such' / 'dir'
  message = _assert_config_error(_with(JOINT, 'data_dir', str(missing)), 'data_dir')
  assert message == (f'config.data_dir={str(missing)!r}: data directory {missing} does not '
                     'exist or is not a directory')
  # A file is not a data directory either.
  (tmp_path / 'file').write_text('x')
  _assert_config_error(_with(JOINT, 'data_dir', str(tmp_path / 'file')), 'data_dir')
  # check_paths=False (e.g. checking a stored config) skips it.
  validation.validate(_with(JOINT, 'data_dir', str(missing)), check_paths=False)


def test_empty_data_dir_with_a_missing_env_dir(monkeypatch, tmp_path):
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / 'gone'))
  message = _assert_config_error(_with(JOINT, 'data_dir', ''), 'data_dir')
  assert f'${data.DATA_DIR_ENV}=' in message and 'gone' in message
  monkeypatch.delenv(data.DATA_DIR_ENV)
  validation.validate(_with(JOINT, 'data_dir', ''))  # '' and no env var: tfds, later


def test_not_a_config_at_all():
  with pytest.raises(ConfigError, match='expected a ConfigDict'):
    validation.validate(['not', 'a', 'config'])


# ------------------------------------------------------------------------------------
# trainer.train validates first: before data, workdir or compilation.


def _forbid(what):
  def fail(*args, **kwargs):
    raise AssertionError(f'{what} was reached with an invalid config')
  return fail


@pytest.mark.parametrize('key,value', [
    ('vae_optimizer.learning_rate', -1.0), ('latent.categorical_sizes', (1,)),
    ('batch_size', 60), ('data_dir', '/nonexistent/data'), ('temperature.initial', 0.0),
    ('data_feed', 'hosts')])
def test_train_raises_config_error_before_data_workdir_or_compilation(
    monkeypatch, tmp_path, key, value):
  monkeypatch.setattr(trainer, 'load_train_images', _forbid('data loading'))
  monkeypatch.setattr(trainer.train_step, 'cached_train_chunk', _forbid('compilation'))
  monkeypatch.setattr(trainer.workdir_lib, 'lock', _forbid('the workdir'))
  monkeypatch.setattr(trainer.workdir_lib, 'claim', _forbid('the workdir'))
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError) as info:
    trainer.train(_with(JOINT, key, value), workdir, num_devices=8)
  assert str(info.value).startswith(f'config.{key}')
  assert not workdir.exists()


@pytest.mark.parametrize('value', ['hosts', 'Host', '', 'cpu'])
def test_an_unknown_data_feed_names_the_value_and_the_choices(value):
  with pytest.raises(ConfigError) as info:
    validation.validate(_with(JOINT, 'data_feed', value), num_devices=1)
  assert str(info.value) == (f"config.data_feed={value!r}: choose one of ('device', 'host')")
  for feed in config_lib.DATA_FEEDS:
    validation.validate(_with(JOINT, 'data_feed', feed), num_devices=1)


def test_train_refuses_a_batch_larger_than_the_data(monkeypatch, tmp_path):
  images = np.zeros((40, 28, 28, 1), np.uint8)
  monkeypatch.setattr(trainer, 'load_train_images', lambda config: images)
  monkeypatch.setattr(trainer.train_step, 'cached_train_chunk', _forbid('compilation'))
  config = _with(JOINT, 'train_limit', 0)
  with pytest.raises(ConfigError, match=r'config.batch_size=64: larger than the 40 training'):
    trainer.train(config, tmp_path / 'run', num_devices=1)
  assert not (tmp_path / 'run').exists()


def test_validate_is_fast():
  """Validation runs before compilation; it must not itself be slow (no JAX work)."""
  start = time.perf_counter()
  for _ in range(20):
    validation.validate(JOINT, num_devices=8)
  assert (time.perf_counter() - start) / 20 < 0.1
