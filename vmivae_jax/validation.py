"""Config validation: every check names the key and the bad value, before any compute.

``validate`` is called by train.py/eval.py before data is read or code compiled, so
a typo'd or out-of-range value fails in a second with a message like
``config.mi.categorical_indices=(1,): code 1 does not exist (latent.categorical_sizes=(10,))``.
"""

import math
from typing import Any

from vmivae_jax import config_lib
from vmivae_jax import models
from vmivae_jax import vmi

PIXEL_RANGES = config_lib.PIXEL_RANGES
OPTIMIZERS = config_lib.OPTIMIZERS


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the value."""




def _fail(key: str, value: Any, why: str):
  raise ConfigError(f'config.{key}={value!r}: {why}')


def _check_number(config, key: str, *, kind=float, minimum=None, strict=False):
  value = config
  for part in key.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
    _fail(key, value, f'expected {"a number" if kind is float else "an integer"}')
  if kind is float and not math.isfinite(value):
    _fail(key, value, 'must be finite')
  if minimum is not None and (value <= minimum if strict else value < minimum):
    _fail(key, value, f'must be {">" if strict else ">="} {minimum}')
  return value


def validate(config, *, num_devices: int = 1) -> None:
  """Raises ConfigError for the first invalid value found."""
  from vmivae_jax import data  # pylint: disable=g-import-not-at-top  (keeps this module light)
  if config.dataset not in data.DATASETS:
    _fail('dataset', config.dataset, f'unknown dataset; choose one of {data.DATASETS}')
  if not isinstance(config.data_dir, str):
    _fail('data_dir', config.data_dir, 'expected a string path ("" = env var or tfds)')
  _check_number(config, 'seed', kind=int, minimum=0)
  for key in ('batch_size', 'num_train_steps', 'steps_per_chunk', 'checkpoint_every_steps',
              'keep_checkpoints'):
    _check_number(config, key, kind=int, minimum=0, strict=True)
  for key in ('train_limit', 'test_limit'):
    _check_number(config, key, kind=int, minimum=0)
  if config.batch_size % num_devices:
    _fail('batch_size', config.batch_size,
          f'must be divisible by the number of devices ({num_devices})')
  if config.train_limit and config.train_limit < config.batch_size:
    _fail('train_limit', config.train_limit, f'smaller than batch_size={config.batch_size}')
  if config.pixel_range not in PIXEL_RANGES:
    _fail('pixel_range', config.pixel_range, f'choose one of {tuple(PIXEL_RANGES)}')
  if config.likelihood not in vmi.LIKELIHOODS:
    _fail('likelihood', config.likelihood, f'choose one of {vmi.LIKELIHOODS}')
  if config.likelihood == 'bernoulli' and config.pixel_range != 'zero_one':
    _fail('pixel_range', config.pixel_range, "the Bernoulli likelihood needs 'zero_one'")
  if config.binarize and config.pixel_range != 'zero_one':
    _fail('binarize', config.binarize, "binarisation needs pixel_range='zero_one'")
  for key in ('mi_weight', 'beta'):
    _check_number(config, key, minimum=0.0)
  _check_number(config, 'gaussian_logvar')
  for group in ('gaussian', 'categorical'):
    _check_number(config, f'capacity.{group}.gamma', minimum=0.0)
    _check_number(config, f'capacity.{group}.max_nats', minimum=0.0)
    _check_number(config, f'capacity.{group}.steps', kind=int, minimum=0, strict=True)
  _check_number(config, 'temperature.initial', minimum=0.0, strict=True)
  _check_number(config, 'temperature.floor', minimum=0.0, strict=True)
  _check_number(config, 'temperature.anneal_rate', minimum=0.0)
  for name in ('vae_optimizer', 'q_optimizer'):
    opt = config[name]
    if opt.name not in OPTIMIZERS:
      _fail(f'{name}.name', opt.name, f'choose one of {OPTIMIZERS}')
    _check_number(config, f'{name}.learning_rate', minimum=0.0, strict=True)
    _check_number(config, f'{name}.grad_clip_norm', minimum=0.0)
    _check_number(config, f'{name}.weight_decay', minimum=0.0)

  _check_number(config, 'latent.gaussian_dims', kind=int, minimum=0)
  sizes = tuple(config.latent.categorical_sizes)
  for i, k in enumerate(sizes):
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
      _fail(f'latent.categorical_sizes[{i}]', k, 'a categorical code needs an integer K >= 2')
  if config.latent.gaussian_dims == 0 and not sizes:
    _fail('latent', config.latent.to_dict(), 'the latent has no dimensions')
  for i in config.mi.gaussian_indices:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < config.latent.gaussian_dims:
      _fail('mi.gaussian_indices', tuple(config.mi.gaussian_indices),
            f'index {i!r} is not a Gaussian dim (latent.gaussian_dims='
            f'{config.latent.gaussian_dims})')
  for i in config.mi.categorical_indices:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(sizes):
      _fail('mi.categorical_indices', tuple(config.mi.categorical_indices),
            f'code {i!r} does not exist (latent.categorical_sizes={sizes})')
  for key in ('gaussian_indices', 'categorical_indices'):
    if len(set(config.mi[key])) != len(tuple(config.mi[key])):
      _fail(f'mi.{key}', tuple(config.mi[key]), 'repeated index')
  if config.mi.gaussian_entropy not in vmi.GAUSSIAN_ENTROPY_KINDS:
    _fail('mi.gaussian_entropy', config.mi.gaussian_entropy,
          f'choose one of {vmi.GAUSSIAN_ENTROPY_KINDS}')
  if config.mi_weight > 0 and not (config.mi.gaussian_indices or config.mi.categorical_indices):
    _fail('mi_weight', config.mi_weight, 'is > 0 but mi.gaussian_indices and '
          'mi.categorical_indices select nothing')

  m = config.model
  if m.family not in models.FAMILIES:
    _fail('model.family', m.family, f'choose one of {models.FAMILIES}')
  if m.norm not in models.NORMS:
    _fail('model.norm', m.norm, f'choose one of {models.NORMS}')
  if m.activation not in models._ACTIVATIONS:  # pylint: disable=protected-access
    _fail('model.activation', m.activation, f'choose one of {tuple(models._ACTIVATIONS)}')  # pylint: disable=protected-access
  for key in ('encoder_hidden', 'decoder_hidden', 'q_hidden', 'encoder_channels',
              'decoder_channels', 'q_channels'):
    for width in m[key]:
      if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        _fail(f'model.{key}', tuple(m[key]), 'widths must be positive integers')
  if m.family == 'conv' and 28 % (2 ** len(m.decoder_channels)):
    _fail('model.decoder_channels', tuple(m.decoder_channels),
          'a conv decoder doubles the side per layer: 28 must divide by 2**len(channels)')
  e = config.eval
  for key in ('batch_size', 'iwae_samples', 'iwae_chunk', 'q_train_steps', 'q_batch_size'):
    _check_number(config, f'eval.{key}', kind=int, minimum=0, strict=True)
  _check_number(config, 'eval.q_learning_rate', minimum=0.0, strict=True)
  if e.iwae_samples % e.iwae_chunk:
    _fail('eval.iwae_chunk', e.iwae_chunk, f'must divide eval.iwae_samples={e.iwae_samples}')
