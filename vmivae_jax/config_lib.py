"""The base experiment config and the builders that turn a config into library objects.

Every file in ``configs/`` starts from :func:`get_base_config` and changes a few
fields. :func:`validate` checks a config before anything is compiled and raises
:class:`ConfigError` naming the key and the bad value.
"""

import math
from typing import Any

import ml_collections
import optax

from vmivae_jax import latents
from vmivae_jax import models
from vmivae_jax import objectives
from vmivae_jax import vmi

PIXEL_RANGES = {'zero_one': (0.0, 1.0), 'minus_one_one': (-1.0, 1.0)}
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'rmsprop')


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the value."""


def _optimizer_config(learning_rate: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='adam', learning_rate=learning_rate, b1=0.9, b2=0.999, weight_decay=0.0,
      grad_clip_norm=0.0))


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults: MLP VAE on MNIST, 32-d Gaussian latent, MI on dims (0, 1), lambda = 0."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = 'mnist'
  c.data_dir = ''            # '' = $VMIVAE_DATA_DIR, else tensorflow-datasets
  c.train_limit = 0          # > 0: use only the first N training examples (smoke tests)
  c.test_limit = 0
  c.pixel_range = 'zero_one'  # 'zero_one' (Bernoulli) or 'minus_one_one' (authors' MSE)
  c.binarize = False          # dynamic binarisation, redrawn every step
  c.batch_size = 256
  c.num_train_steps = 10_000
  c.steps_per_chunk = 100     # steps per on-device lax.scan call (= logging period)
  c.checkpoint_every_steps = 2_000
  c.keep_checkpoints = 2
  c.mi_weight = 0.0           # lambda; 0 = ELBO-only baseline (Q still trains, for monitoring)

  c.latent = ml_collections.ConfigDict(dict(gaussian_dims=32, categorical_sizes=()))
  c.mi = ml_collections.ConfigDict(dict(
      gaussian_indices=(0, 1), categorical_indices=(), gaussian_entropy='gaussian_prior',
      stop_target_gradient=False))
  c.model = ml_collections.ConfigDict(dict(
      family='mlp', encoder_hidden=(512, 512), decoder_hidden=(512, 512), q_hidden=(512, 512),
      encoder_channels=(64, 128), decoder_channels=(128, 64), q_channels=(64, 128),
      norm='none', activation='relu'))
  c.likelihood = 'bernoulli'
  c.gaussian_logvar = 0.0
  c.learn_output_logvar = False
  c.beta = 1.0
  c.capacity = ml_collections.ConfigDict(dict(
      gaussian=ml_collections.ConfigDict(dict(gamma=0.0, max_nats=0.0, steps=1)),
      categorical=ml_collections.ConfigDict(dict(gamma=0.0, max_nats=0.0, steps=1))))
  c.temperature = ml_collections.ConfigDict(dict(initial=1.0, floor=0.5, anneal_rate=0.0,
                                                 hard=False))
  c.vae_optimizer = _optimizer_config(1e-3)
  c.q_optimizer = _optimizer_config(1e-3)

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=500, iwae_samples=1000, iwae_chunk=250, q_train_steps=3000, q_batch_size=256,
      q_learning_rate=1e-3, num_figure_examples=10, traversal_range=3.0, traversal_steps=7))
  return c


# ----------------------------------------------------------------------------------
# Builders.


def latent_spec(config) -> latents.LatentSpec:
  return latents.LatentSpec(gaussian_dims=int(config.latent.gaussian_dims),
                            categorical_sizes=tuple(int(k) for k in config.latent.categorical_sizes))


def build_model(config, *, batch_norm_axis: str | None = None) -> vmi.VMIModel:
  """The VMIModel a config describes; ``batch_norm_axis`` names the data-parallel axis."""
  m = config.model
  spec = latent_spec(config)

  def extractor(hidden, channels):
    return models.FeatureExtractor(family=m.family, hidden=tuple(hidden),
                                   conv_channels=tuple(channels), norm=m.norm,
                                   activation=m.activation, batch_norm_axis=batch_norm_axis)

  cat_idx = tuple(int(i) for i in config.mi.categorical_indices)
  vae = models.VAE(
      encoder=models.Encoder(spec=spec, trunk=extractor(m.encoder_hidden, m.encoder_channels)),
      decoder=models.Decoder(family=m.family, hidden=tuple(m.decoder_hidden),
                             conv_channels=tuple(m.decoder_channels), norm=m.norm,
                             activation=m.activation, batch_norm_axis=batch_norm_axis),
      learn_output_logvar=bool(config.learn_output_logvar and config.likelihood == 'gaussian'))
  q = models.QNetwork(num_gaussian=len(config.mi.gaussian_indices),
                      categorical_sizes=tuple(spec.categorical_sizes[i] for i in cat_idx),
                      trunk=extractor(m.q_hidden, m.q_channels))
  return vmi.VMIModel(vae=vae, q=q, latent=spec,
                      mi_gaussian_indices=tuple(int(i) for i in config.mi.gaussian_indices),
                      mi_categorical_indices=cat_idx, likelihood=config.likelihood,
                      pixel_range=PIXEL_RANGES[config.pixel_range],
                      gaussian_logvar=float(config.gaussian_logvar))


def objective_weights(config) -> objectives.ObjectiveWeights:
  spec = latent_spec(config)
  capacity = []
  for group in spec.group_names():
    cap = config.capacity.gaussian if group == 'gaussian' else config.capacity.categorical
    if cap.gamma > 0:
      capacity.append((group, objectives.Capacity(gamma=float(cap.gamma),
                                                  max_nats=float(cap.max_nats),
                                                  steps=int(cap.steps))))
  return objectives.ObjectiveWeights(
      mi_weight=float(config.mi_weight), beta=float(config.beta), capacity=tuple(capacity),
      gaussian_entropy_kind=config.mi.gaussian_entropy,
      stop_target_gradient=bool(config.mi.stop_target_gradient))


def build_optimizer(opt) -> optax.GradientTransformation:
  """An optax chain from an optimizer sub-config (name, learning_rate, ...)."""
  if opt.name == 'adam':
    tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
  elif opt.name == 'adamw':
    tx = optax.adamw(opt.learning_rate, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
  elif opt.name == 'rmsprop':
    tx = optax.rmsprop(opt.learning_rate)
  else:
    tx = optax.sgd(opt.learning_rate)
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx


# ----------------------------------------------------------------------------------
# Validation: every check names the key and the value, and runs before compilation.


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
