"""Config validation: every check names the key and the bad value, before any compute.

``validate`` is called by train.py (through ``trainer.train``) before data is read or
code compiled, so a typo'd or out-of-range value fails in a second with a message like
``config.mi.categorical_indices=(1,): code 1 does not exist (latent.categorical_sizes=(10,))``.

Two layers:

1. Structure and types, against :func:`config_lib.get_base_config` (every config in
   ``configs/`` starts from it): an unknown key, a missing key, or a value of the
   wrong type (a string for a number, a float for an integer, a list for a string,
   a bool for a number, ...) is refused, whatever the key.
2. Values: ranges, choices, and the relations between keys (MI targets that exist,
   batch size divisible by the device count, ...). A setting that would be silently
   ignored (weight decay with Adam, a capacity for a latent group that does not
   exist, ...) is refused too: a run never silently differs from its config.

Every failure is a :class:`ConfigError` whose message starts with ``config.<key>``.
"""

import difflib
import os
from typing import Any

import ml_collections

from vmivae_jax import decompositions
from vmivae_jax.config import config_lib
from vmivae_jax.config.checks import ConfigError
from vmivae_jax.config.checks import (TYPE_NAMES, check_choice, check_int_items, check_number,
                                      fail, get_key, is_dict, is_finite, is_int, show, type_ok)
from vmivae_jax.model import invariance
from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib

PIXEL_RANGES = config_lib.PIXEL_RANGES
OPTIMIZERS = config_lib.OPTIMIZERS
MAX_SEED = 2**32          # jax.random.PRNGKey(seed) wraps at 2**32: 2**32 would equal seed 0
MAX_INT = 2**31 - 1       # integers reach JAX as int32 (the step counter, sizes, ...)


def _check_structure(config: Any, reference: ml_collections.ConfigDict, prefix: str = '') -> None:
  """Unknown keys, missing keys and types, against the reference (base) config."""
  keys, ref_keys = set(config.keys()), set(reference.keys())
  for key in sorted(keys - ref_keys, key=str):
    close = difflib.get_close_matches(str(key), [str(k) for k in ref_keys], n=1)
    hint = f'; did you mean {prefix}{close[0]}?' if close else ''
    fail(f'{prefix}{key}', config[key], f'unknown key{hint}')
  for key in sorted(ref_keys - keys):
    raise ConfigError(f'config.{prefix}{key} is missing (expected like '
                      f'{show(reference[key])})')
  for key in sorted(ref_keys):
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not is_dict(value):
        fail(f'{prefix}{key}', value, 'expected a group of settings like '
              f'{show(ref)}')
      _check_structure(value, ref, f'{prefix}{key}.')
      continue
    expected = type(ref) if isinstance(ref, (bool, int, float, str, tuple)) else None
    if expected is not None and not type_ok(expected, value):
      fail(f'{prefix}{key}', value, f'expected {TYPE_NAMES[expected]} (like {ref!r})')
    if expected is float and not is_finite(value):
      fail(f'{prefix}{key}', value, 'must be finite')
    if expected is int and f'{prefix}{key}' != 'seed' and abs(value) > MAX_INT:
      fail(f'{prefix}{key}', value, f'out of range: |value| must be <= {MAX_INT} (int32)')


def check_data_dir(config) -> None:
  """``config.data_dir`` (or $VMIVAE_DATA_DIR when it is empty) must be a directory."""
  from vmivae_jax.data import datasets as data  # pylint: disable=g-import-not-at-top  (keeps this module light)
  if config.data_dir:
    path = os.path.expanduser(config.data_dir)
    if not os.path.isdir(path):
      fail('data_dir', config.data_dir,
            f'data directory {os.path.abspath(path)} does not exist or is not a directory')
  else:
    env = os.environ.get(data.DATA_DIR_ENV, '')
    if env and not os.path.isdir(os.path.expanduser(env)):
      fail('data_dir', config.data_dir,
            f'empty, so ${data.DATA_DIR_ENV} is used, but ${data.DATA_DIR_ENV}={env!r} '
            'does not exist or is not a directory')
  problem = data.config_cache_problem(config)
  if problem:
    fail('data_cache_dir', config.data_cache_dir, problem)


def check_train_examples(config, num_examples: int) -> None:
  """The loaded training set must hold at least one batch."""
  from vmivae_jax.data import datasets as data  # pylint: disable=g-import-not-at-top  (keeps this module light)
  if num_examples < config.batch_size:
    raise ConfigError(
        f'config.batch_size={config.batch_size}: larger than the {num_examples} training '
        f'examples of {config.dataset} in {config.data_dir or "$" + data.DATA_DIR_ENV}')


def validate(config, *, num_devices: int = 1, check_paths: bool = True) -> None:
  """Raises ConfigError for the first invalid value found.

  Args:
    config: the experiment config (a ConfigDict built from config_lib.get_base_config).
    num_devices: devices of the data-parallel mesh; batch_size must divide by it.
    check_paths: also require the data directory to exist (train.py); eval checks of a
      stored config may skip it.
  """
  from vmivae_jax.data import datasets as data  # pylint: disable=g-import-not-at-top  (keeps this module light)
  if not is_dict(config):
    raise ConfigError(f'config={show(config)}: expected a ConfigDict')
  _check_structure(config, config_lib.get_base_config())

  # --- Data and run length.
  check_choice(config, 'dataset', data.DATASETS)
  if check_paths:
    check_data_dir(config)
  check_number(config, 'seed', minimum=0, maximum=MAX_SEED - 1)
  for key in ('batch_size', 'steps_per_chunk', 'checkpoint_every_steps', 'keep_checkpoints'):
    check_number(config, key, minimum=0, strict=True)
  check_number(config, 'num_train_steps', minimum=0, strict=True, maximum=MAX_INT)
  for key in ('train_limit', 'test_limit'):
    check_number(config, key, minimum=0)
  if not is_int(num_devices) or num_devices < 1:
    raise ConfigError(f'num_devices={num_devices!r}: must be a positive integer')
  if config.batch_size % num_devices:
    fail('batch_size', config.batch_size,
          f'must be divisible by the number of devices ({num_devices})')
  if config.train_limit and config.train_limit < config.batch_size:
    fail('train_limit', config.train_limit,
          f'fewer training examples than one batch (batch_size={config.batch_size})')
  check_choice(config, 'data_feed', config_lib.DATA_FEEDS)
  check_choice(config, 'pixel_range', PIXEL_RANGES)
  check_choice(config, 'likelihood', model_lib.LIKELIHOODS)
  if config.likelihood == 'bernoulli' and config.pixel_range != 'zero_one':
    fail('pixel_range', config.pixel_range, "the Bernoulli likelihood needs 'zero_one'")
  if config.binarize and config.pixel_range != 'zero_one':
    fail('binarize', config.binarize, "binarisation needs pixel_range='zero_one'")
  if config.learn_output_logvar and config.likelihood != 'gaussian':
    fail('learn_output_logvar', config.learn_output_logvar,
          f"only the 'gaussian' likelihood has an output variance (likelihood="
          f"{config.likelihood!r}); it would be ignored")

  # --- Objective.
  for key in ('mi_weight', 'beta'):
    check_number(config, key, minimum=0.0)
  check_number(config, 'mi_warmup_steps', minimum=0, maximum=MAX_INT)
  check_number(config, 'latent.gaussian_dims', minimum=0)
  sizes = check_int_items(config, 'latent.categorical_sizes', minimum=2,
                           why='a categorical code needs an integer K >= 2')
  if config.latent.gaussian_dims == 0 and not sizes:
    fail('latent', config.latent, 'the latent has no dimensions')
  groups = {'gaussian': config.latent.gaussian_dims > 0, 'categorical': bool(sizes)}
  for group, exists in groups.items():
    check_number(config, f'capacity.{group}.gamma', minimum=0.0)
    check_number(config, f'capacity.{group}.max_nats', minimum=0.0)
    check_number(config, f'capacity.{group}.steps', minimum=0, strict=True)
    if config.capacity[group].gamma > 0 and not exists:
      fail(f'capacity.{group}.gamma', config.capacity[group].gamma,
            f'there is no {group} latent group (latent.gaussian_dims='
            f'{config.latent.gaussian_dims}, latent.categorical_sizes={sizes})')
  t = config.temperature
  check_number(config, 'temperature.initial', minimum=0.0, strict=True)
  check_number(config, 'temperature.floor', minimum=0.0, strict=True)
  check_number(config, 'temperature.anneal_rate', minimum=0.0)
  if t.floor > t.initial:
    fail('temperature.floor', t.floor,
          f'above temperature.initial={t.initial!r}: the initial value would never be used')
  for name in ('vae_optimizer', 'q_optimizer', 'disentangle.discriminator_optimizer'):
    opt = get_key(config, name)
    check_choice(config, f'{name}.name', OPTIMIZERS)
    check_number(config, f'{name}.learning_rate', minimum=0.0, strict=True)
    for beta in ('b1', 'b2'):
      value = check_number(config, f'{name}.{beta}', minimum=0.0)
      if value >= 1.0:
        fail(f'{name}.{beta}', value, 'must be < 1')
    check_number(config, f'{name}.grad_clip_norm', minimum=0.0)
    check_number(config, f'{name}.weight_decay', minimum=0.0)
    if opt.weight_decay > 0 and opt.name != 'adamw':
      fail(f'{name}.weight_decay', opt.weight_decay,
         f"only the 'adamw' optimizer uses it ({name}.name={opt.name!r}); it would be "
         'ignored')
  check_number(config, 'gaussian_logvar')

  # --- MI targets: they must name latent dimensions / codes that exist.
  for i, index in enumerate(config.mi.gaussian_indices):
    if not is_int(index) or not 0 <= index < config.latent.gaussian_dims:
      fail('mi.gaussian_indices', tuple(config.mi.gaussian_indices),
            f'index {index!r} (item {i}) is not a Gaussian dim (latent.gaussian_dims='
            f'{config.latent.gaussian_dims})')
  for i, index in enumerate(config.mi.categorical_indices):
    if not is_int(index) or not 0 <= index < len(sizes):
      fail('mi.categorical_indices', tuple(config.mi.categorical_indices),
            f'code {index!r} (item {i}) does not exist (latent.categorical_sizes={sizes})')
  for key in ('gaussian_indices', 'categorical_indices'):
    if len(set(config.mi[key])) != len(tuple(config.mi[key])):
      fail(f'mi.{key}', tuple(config.mi[key]), 'repeated index')
  check_choice(config, 'mi.gaussian_entropy', model_lib.GAUSSIAN_ENTROPY_KINDS)
  if config.mi_weight > 0 and not (config.mi.gaussian_indices or config.mi.categorical_indices):
    fail('mi_weight', config.mi_weight, 'is > 0 but mi.gaussian_indices and '
          'mi.categorical_indices select nothing')

  # --- Invariance of the categorical codes (the class-code recipe).
  weights = ('consistency_weight', 'paired_mi_weight', 'vat_weight', 'neighbour_weight')
  for key in weights + ('vat_xi',):
    check_number(config, f'invariance.{key}', minimum=0.0)
  check_number(config, 'invariance.vat_epsilon', minimum=0.0, strict=True)
  check_number(config, 'invariance.vat_power_iterations', minimum=0, strict=True)
  check_number(config, 'invariance.neighbour_count', minimum=0, strict=True)
  if config.invariance.neighbour_weight > 0 and config.data_feed != 'device':
    fail('data_feed', config.data_feed, 'the neighbour term (invariance.neighbour_weight > '
         "0) gathers each example's neighbour from the on-device training set: use "
         "data_feed='device'")
  for key in weights:
    if config.invariance[key] > 0 and not sizes:
      fail(f'invariance.{key}', config.invariance[key],
            f'the invariance terms act on categorical codes and there is none '
            f'(latent.categorical_sizes={sizes})')
  for key in ('max_rotation', 'max_aspect', 'max_translation', 'elastic_alpha',
              'crop_max_aspect'):
    check_number(config, f'invariance.augment.{key}', minimum=0.0)
  check_number(config, 'invariance.augment.crop_min_area', minimum=0.0, strict=True,
               maximum=1.0)
  if check_number(config, 'invariance.augment.max_scale', minimum=0.0) >= 1.0:
    fail('invariance.augment.max_scale', config.invariance.augment.max_scale,
          'must be < 1 (zoom factors are drawn from [1 - max_scale, 1 + max_scale])')
  if check_number(config, 'invariance.augment.max_shear', minimum=0.0) >= 90.0:
    fail('invariance.augment.max_shear', config.invariance.augment.max_shear,
          'must be < 90 (degrees)')
  check_number(config, 'invariance.augment.elastic_sigma', minimum=0.0, strict=True)
  for key in ('dilate_prob', 'erode_prob', 'flip_prob'):
    check_number(config, f'invariance.augment.{key}', minimum=0.0, maximum=1.0)
  a = config.invariance.augment
  if a.dilate_prob + a.erode_prob > 1.0:
    fail('invariance.augment.erode_prob', a.erode_prob,
          f'invariance.augment.dilate_prob + erode_prob = {a.dilate_prob + a.erode_prob!r} '
          'must be <= 1 (one draw picks dilation, erosion or neither)')
  check_choice(config, 'invariance.augment.thickness_footprint', invariance.FOOTPRINTS)

  _check_mixture_prior(config, sizes)
  _check_code_training(config, sizes)
  _check_disentangle(config, sizes)

  # --- Networks.
  m = config.model
  check_choice(config, 'model.family', networks.FAMILIES)
  check_choice(config, 'model.norm', networks.NORMS)
  check_choice(config, 'model.activation', networks._ACTIVATIONS)  # pylint: disable=protected-access
  check_choice(config, 'model.conv_impl', networks.CONV_CHOICES)
  check_choice(config, 'model.deconv_impl', networks.DECONV_CHOICES)
  check_choice(config, 'compute_dtype', networks.COMPUTE_DTYPES)
  conv = m.family in networks.CONV_FAMILIES
  if conv and m.deconv_impl.startswith('vjp:') and num_devices > 1:
    fail('model.deconv_impl', m.deconv_impl,
          f'the vjp:* formulations (jax.linear_transpose) cannot run in the data-parallel '
          f'step on {num_devices} devices; choose another (e.g. \'auto\')')
  for key in ('encoder_hidden', 'decoder_hidden', 'q_hidden', 'encoder_channels',
              'decoder_channels', 'q_channels'):
    check_int_items(config, f'model.{key}', minimum=1,
                     why='widths must be positive integers')
  full = networks.image_shape(m.family)[0]
  if networks.image_shape(m.family) != data.image_shape(config.dataset):
    fail('model.family', m.family, f'its networks take {full}x{full} images; config.dataset='
          f'{config.dataset!r} has {data.image_shape(config.dataset)} (dsprites: dlib_conv)')
  if conv and full % (2 ** len(m.decoder_channels)):
    fail('model.decoder_channels', tuple(m.decoder_channels), f'a conv decoder doubles the '
          f'side per layer: {full} (family {m.family!r}) must divide by 2**len(channels)')
  for key in ('encoder_channels', 'q_channels'):
    side = full
    for _ in m[key]:
      side = (side + 2 - 4) // 2 + 1  # 4x4 kernel, stride 2, padding 1
    if conv and side < 1:
      fail(f'model.{key}', tuple(m[key]), f'too many conv layers: each halves the {full}-pixel '
            f'side (family {m.family!r}: at most {full.bit_length() - 1} layers)')

  # --- Evaluation.
  e = config.eval
  for key in ('batch_size', 'iwae_samples', 'iwae_chunk', 'q_train_steps', 'q_batch_size',
              'traversal_steps', *(f'disentanglement.{k}' for k in e.disentanglement)):
    check_number(config, f'eval.{key}', minimum=0, strict=True)
  check_number(config, 'eval.num_figure_examples', minimum=0)
  check_number(config, 'eval.q_learning_rate', minimum=0.0, strict=True)
  check_number(config, 'eval.traversal_range', minimum=0.0, strict=True)
  if e.iwae_samples % e.iwae_chunk:
    fail('eval.iwae_chunk', e.iwae_chunk, f'must divide eval.iwae_samples={e.iwae_samples}')


def _check_mixture_prior(config, sizes: tuple) -> None:
  """The mixture prior p(z | c) needs Gaussian dims and an existing code to condition on."""
  mp = config.mixture_prior
  index = check_number(config, 'mixture_prior.code_index', minimum=0)
  check_number(config, 'mixture_prior.init_scale', minimum=0.0)
  if not mp.enabled:
    if mp.learn_logvars:
      fail('mixture_prior.learn_logvars', mp.learn_logvars,
            'the mixture prior is off (mixture_prior.enabled=False); it would be ignored')
    return
  if config.latent.gaussian_dims == 0:
    fail('mixture_prior.enabled', mp.enabled,
          'the mixture prior p(z|c) acts on the Gaussian group and there is none '
          '(latent.gaussian_dims=0)')
  if not sizes:
    fail('mixture_prior.enabled', mp.enabled,
          'the mixture prior p(z|c) is conditioned on a categorical code and there is none '
          f'(latent.categorical_sizes={sizes})')
  if index >= len(sizes):
    fail('mixture_prior.code_index', index,
          f'code {index} does not exist (latent.categorical_sizes={sizes})')


def _check_code_training(config, sizes) -> None:
  """``config.code_training``: non-negative weights, a scale in [0, 1], and a code to act on."""
  if 'code_training' not in config:
    return
  c = config.code_training
  for key in ('marginal_entropy_weight', 'conditional_entropy_weight'):
    check_number(config, f'code_training.{key}', minimum=0.0)
  check_number(config, 'code_training.generative_gradient', minimum=0.0, maximum=1.0)
  check_number(config, 'code_training.generative_gradient_warmup_steps', minimum=0)
  used = [k for k in ('marginal_entropy_weight', 'conditional_entropy_weight')
          if c[k] > 0] + (['aggregate_kl'] if c.aggregate_kl else [])
  if (c.generative_gradient != 1.0 or c.generative_gradient_warmup_steps > 0):
    used.append('generative_gradient')
  if used and not sizes:
    fail(f'code_training.{used[0]}', c[used[0]],
          f'acts on categorical codes and there is none (latent.categorical_sizes={sizes})')
  if c.aggregate_kl and config.capacity.categorical.gamma > 0:
    fail('code_training.aggregate_kl', True, 'cannot be combined with a capacity target on '
          f'the codes (capacity.categorical.gamma={config.capacity.categorical.gamma})')


# config.disentangle's keys and the methods that read them (the others ignore them).
_DISENTANGLE_USERS = {
    'index_code_mi_weight': ('beta_tcvae',), 'tc_weight': ('beta_tcvae', 'factor_vae'),
    'dimwise_kl_weight': ('beta_tcvae',), 'estimator': ('beta_tcvae',),
    'dip_lambda_od': ('dip_vae_i', 'dip_vae_ii'), 'dip_lambda_d_factor_i': ('dip_vae_i',),
    'dip_lambda_d_factor_ii': ('dip_vae_ii',), 'discriminator_hidden': ('factor_vae',),
    'discriminator_optimizer': ('factor_vae',)}


def _check_disentangle(config, sizes) -> None:
  """``config.disentangle``: a known method on a Gaussian group with the N(0, I) prior,
  non-negative weights, and no changed key that the method would ignore."""
  d = config.disentangle
  check_choice(config, 'disentangle.method', config_lib.DISENTANGLE_METHODS)
  for key in ('index_code_mi_weight', 'tc_weight', 'dimwise_kl_weight', 'dip_lambda_od',
              'dip_lambda_d_factor_i', 'dip_lambda_d_factor_ii'):
    check_number(config, f'disentangle.{key}', minimum=0.0)
  check_choice(config, 'disentangle.estimator', decompositions.ESTIMATORS)
  check_int_items(config, 'disentangle.discriminator_hidden', minimum=1,
                  why='widths must be positive integers')
  default = config_lib.disentangle_section()
  for key, users in _DISENTANGLE_USERS.items():
    value, reference = d[key], default[key]
    if isinstance(reference, ml_collections.ConfigDict):
      value, reference = value.to_dict(), reference.to_dict()
    if d.method not in users and _tuple_or(value) != _tuple_or(reference):
      fail(f'disentangle.{key}', value, f'only {" and ".join(users)} read it '
           f'(disentangle.method={d.method!r}); it would be ignored')
  if d.method == 'none':
    return
  where = f'disentangle.method={d.method!r}'
  if config.latent.gaussian_dims == 0:
    fail('disentangle.method', d.method, 'acts on the Gaussian latent group and there is '
         f'none (latent.gaussian_dims=0, latent.categorical_sizes={sizes})')
  if config.mixture_prior.enabled:
    fail('mixture_prior.enabled', True, f'{where} assumes the N(0, I) prior of the '
         'Gaussian group')
  if d.method == 'beta_tcvae' and config.capacity.gaussian.gamma > 0:
    fail('capacity.gaussian.gamma', config.capacity.gaussian.gamma,
         f'{where} replaces the Gaussian group\'s KL term, which the capacity target '
         'would also replace')
  if config.batch_size < 2:
    fail('batch_size', config.batch_size, f'{where} needs batch statistics (batch_size >= 2)')


def _tuple_or(value):
  """Lists as tuples (a config read from JSON holds lists), for comparisons."""
  return tuple(value) if isinstance(value, list) else value
