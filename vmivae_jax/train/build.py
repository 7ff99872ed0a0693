"""Config -> library objects: the one place where a config becomes a model, objective
settings, optimizers and the step's static arguments (:class:`Run`), used by training,
evaluation, benchmarks and tests. Configs are validated before (``validation.validate``).
"""

import dataclasses
import functools

import jax
import ml_collections
import optax

from vmivae_jax import latents
from vmivae_jax.data import preprocess
from vmivae_jax.model import disentangle
from vmivae_jax.model import invariance
from vmivae_jax.model import networks
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.rundir import sweep as sweep_lib
from vmivae_jax.train import sweep_step
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel


def latent_spec(config) -> latents.LatentSpec:
  """The latent layout, with the code that conditions the mixture prior (if enabled)."""
  mp = config.get('mixture_prior')   # absent in configs stored before it existed: off
  return latents.LatentSpec(
      gaussian_dims=int(config.latent.gaussian_dims),
      categorical_sizes=tuple(int(k) for k in config.latent.categorical_sizes),
      mixture_code=int(mp.code_index) if mp and mp.enabled else None)


def build_model(config, *, batch_norm_axis: str | None = None) -> model_lib.VMIModel:
  """The VMIModel a config describes; ``batch_norm_axis`` names the data-parallel axis."""
  m = config.model
  spec = latent_spec(config)
  dtype = networks.COMPUTE_DTYPES[config.get('compute_dtype', 'float32')]

  def extractor(hidden, channels):
    return networks.FeatureExtractor(family=m.family, hidden=tuple(hidden),
                                   conv_channels=tuple(channels), norm=m.norm,
                                   activation=m.activation, batch_norm_axis=batch_norm_axis,
                                   conv_impl=m.get('conv_impl', 'auto'), dtype=dtype)

  cat_idx = tuple(int(i) for i in config.mi.categorical_indices)
  vae = networks.VAE(
      encoder=networks.Encoder(
          spec=spec, trunk=extractor(m.encoder_hidden, m.encoder_channels),
          code_trunk=(extractor(m.encoder_hidden, m.encoder_channels)
                      if m.get('separate_code_encoder', False) else None)),
      decoder=networks.Decoder(family=m.family, hidden=tuple(m.decoder_hidden),
                             conv_channels=tuple(m.decoder_channels), norm=m.norm,
                             activation=m.activation, batch_norm_axis=batch_norm_axis,
                             deconv_impl=m.get('deconv_impl', 'auto'), dtype=dtype),
      learn_output_logvar=bool(config.learn_output_logvar and config.likelihood == 'gaussian'),
      **mixture_prior_fields(config))
  q = networks.QNetwork(num_gaussian=len(config.mi.gaussian_indices),
                      categorical_sizes=tuple(spec.categorical_sizes[i] for i in cat_idx),
                      trunk=extractor(m.q_hidden, m.q_channels))
  return model_lib.VMIModel(vae=vae, q=q, latent=spec,
                      mi_gaussian_indices=tuple(int(i) for i in config.mi.gaussian_indices),
                      mi_categorical_indices=cat_idx, likelihood=config.likelihood,
                      pixel_range=preprocess.PIXEL_RANGES[config.pixel_range],
                      gaussian_logvar=float(config.gaussian_logvar))


def mixture_prior_fields(config) -> dict:
  """networks.VAE's mixture-prior fields (the defaults when the prior is off)."""
  mp = config.get('mixture_prior')
  if not (mp and mp.enabled):
    return {}
  return dict(learn_prior_logvars=bool(mp.learn_logvars), prior_init_scale=float(mp.init_scale))


def objective_settings(config, *, num_train_examples: int = 0) -> objectives.ObjectiveSettings:
  """The VAE objective's settings; ``num_train_examples`` is the dataset size N that
  beta-TCVAE's stratified estimator weighs by."""
  spec = latent_spec(config)
  capacity = []
  for group in spec.group_names():
    cap = config.capacity.gaussian if group == 'gaussian' else config.capacity.categorical
    if cap.gamma > 0:
      capacity.append((group, objectives.Capacity(gamma=float(cap.gamma),
                                                  max_nats=float(cap.max_nats),
                                                  steps=int(cap.steps))))
  return objectives.ObjectiveSettings(
      weights=objectives.ObjectiveWeights(mi_weight=float(config.mi_weight),
                                          beta=float(config.beta), capacity=tuple(capacity)),
      gaussian_entropy_kind=config.mi.gaussian_entropy,
      stop_target_gradient=bool(config.mi.stop_target_gradient),
      mi_warmup_steps=int(config.mi_warmup_steps),
      invariance=invariance_settings(config), code=code_training(config),
      disentangle=disentangle_settings(config, num_train_examples=num_train_examples))


def disentangle_settings(config, *, num_train_examples: int = 0
                         ) -> disentangle.DisentangleSettings:
  """``config.disentangle`` as a frozen dataclass (absent in older configs: none). DIP's
  lambda_d is lambda_od times the variant's factor (disentanglement_lib's convention)."""
  d = config.get('disentangle')
  if d is None or d.method == 'none':
    return disentangle.DisentangleSettings()
  factor = d.dip_lambda_d_factor_i if d.method == 'dip_vae_i' else d.dip_lambda_d_factor_ii
  return disentangle.DisentangleSettings(
      method=str(d.method), index_code_mi_weight=float(d.index_code_mi_weight),
      tc_weight=float(d.tc_weight), dimwise_kl_weight=float(d.dimwise_kl_weight),
      estimator=str(d.estimator), dataset_size=int(num_train_examples),
      lambda_od=float(d.dip_lambda_od), lambda_d=float(d.dip_lambda_od) * float(factor),
      discriminator_hidden=tuple(int(w) for w in d.discriminator_hidden))


def discriminator_optimizer(config) -> optax.GradientTransformation | None:
  """FactorVAE's discriminator optimizer, or None when the baseline is off."""
  if not disentangle_settings(config).has_discriminator:
    return None
  return build_optimizer(config.disentangle.discriminator_optimizer)


def code_training(config) -> objectives.CodeTraining:
  """``config.code_training`` as a frozen dataclass (absent in older configs: off)."""
  if 'code_training' not in config:
    return objectives.CodeTraining()
  c = config.code_training
  return objectives.CodeTraining(
      marginal_entropy_weight=float(c.marginal_entropy_weight),
      conditional_entropy_weight=float(c.conditional_entropy_weight),
      aggregate_kl=bool(c.aggregate_kl), generative_gradient=float(c.generative_gradient),
      generative_gradient_warmup_steps=int(c.generative_gradient_warmup_steps))


def invariance_settings(config) -> invariance.InvarianceSettings:
  """``config.invariance`` as a frozen (hashable) dataclass; numbers as Python floats.

  A config stored before the section existed (an older workdir's config.json) means off.
  """
  if 'invariance' not in config:
    return invariance.InvarianceSettings()
  inv, a = config.invariance, config.invariance.augment
  floats = ('max_rotation', 'max_scale', 'max_aspect', 'max_shear', 'max_translation',
            'elastic_alpha', 'elastic_sigma', 'dilate_prob', 'erode_prob')
  augment = invariance.AugmentSettings(**{k: float(a[k]) for k in floats},
                                       thickness_footprint=str(a.thickness_footprint),
                                       flip_prob=float(a.get('flip_prob', 0.0)),
                                       crop_min_area=float(a.get('crop_min_area', 1.0)),
                                       crop_max_aspect=float(a.get('crop_max_aspect', 0.0)))
  return invariance.InvarianceSettings(
      consistency_weight=float(inv.consistency_weight),
      paired_mi_weight=float(inv.paired_mi_weight), vat_weight=float(inv.vat_weight),
      vat_epsilon=float(inv.vat_epsilon), vat_xi=float(inv.vat_xi),
      vat_power_iterations=int(inv.vat_power_iterations),
      neighbour_weight=float(inv.get('neighbour_weight', 0.0)),
      neighbour_count=int(inv.get('neighbour_count', 20)), augment=augment)


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


@functools.partial(jax.jit, static_argnums=0)
def _jit_init(model: model_lib.VMIModel, key: jax.Array):
  return model.init(key)


@dataclasses.dataclass(frozen=True)
class _JitInit:
  """``model`` whose ``init`` is jitted (one compilation, cached per model, instead of
  dozens of op-by-op ones: seconds per run). Same values as the eager init."""
  model: model_lib.VMIModel

  def init(self, key):
    return _jit_init(self.model, key)

  @property
  def latent(self):
    return self.model.latent


@dataclasses.dataclass(frozen=True)
class Run:
  """The objects a config defines: model, step statics (objective, optimizers), keys."""
  config: ml_collections.ConfigDict
  model: model_lib.VMIModel
  step_statics: train_step.StepStatics
  keys: dict

  def initial_state(self) -> train_state_lib.TrainState:
    statics = self.step_statics
    return train_state_lib.create(_JitInit(self.model), self.keys['init'],
                                  vae_tx=statics.vae_tx, q_tx=statics.q_tx,
                                  disentangle=statics.objective.disentangle,
                                  discriminator_tx=statics.discriminator_tx)

  def abstract_state(self) -> train_state_lib.TrainState:
    return jax.eval_shape(self.initial_state)


def build_run(config: ml_collections.ConfigDict, *, num_train_examples: int) -> Run:
  """Model, optimizers, step configuration and keys for ``config`` (already validated)."""
  model = build_model(config, batch_norm_axis=parallel.DATA_AXIS)
  return Run(config=config, model=model,
             step_statics=step_statics(config, model, num_train_examples=num_train_examples),
             keys=train_state_lib.run_keys(int(config.seed)))


def temperature_schedule(config) -> train_step.TemperatureSchedule:
  t = config.temperature
  return train_step.TemperatureSchedule(initial=float(t.initial), floor=float(t.floor),
                                        anneal_rate=float(t.anneal_rate), hard=bool(t.hard))


def step_statics(config, model: model_lib.VMIModel, *,
                 num_train_examples: int) -> train_step.StepStatics:
  """The train step's static arguments: ``model``, objective, optimizers, schedule, data."""
  return train_step.StepStatics(
      model=model, objective=objective_settings(config, num_train_examples=num_train_examples),
      vae_tx=build_optimizer(config.vae_optimizer), q_tx=build_optimizer(config.q_optimizer),
      temperature=temperature_schedule(config), batch_size=int(config.batch_size),
      num_examples=int(num_train_examples), binarize=bool(config.binarize),
      discriminator_tx=discriminator_optimizer(config))


@dataclasses.dataclass(frozen=True)
class SweepRun:
  """The objects of a sweep (sweep.py): each member's Run, and what the vmapped step
  takes: placeholder step statics (shared, static) and the members' HParams (arrays)."""
  config: ml_collections.ConfigDict
  members: tuple[Run, ...]
  step_statics: train_step.StepStatics
  hparams: sweep_step.HParams          # stacked: [members] leaves

  def keys(self, name: str) -> jax.Array:
    """The members' ``name`` keys ('step', 'data'), stacked: [members, 2]."""
    return sweep_step.stack([m.keys[name] for m in self.members])


def build_sweep(config: ml_collections.ConfigDict, *, num_train_examples: int) -> SweepRun:
  """Every member's Run (its own config, keys, model) and the shared vmapped-step objects
  (``config`` already validated by ``sweep.validate``)."""
  members = tuple(build_run(m, num_train_examples=num_train_examples)
                  for m in sweep_lib.member_configs(config))
  model = members[0].model
  placeholder = sweep_lib.placeholder_config(members[0].config)
  statics = dataclasses.replace(
      step_statics(placeholder, model, num_train_examples=num_train_examples),
      vae_tx=_shared_optimizer(_items(placeholder.vae_optimizer)),
      q_tx=_shared_optimizer(_items(placeholder.q_optimizer)),
      discriminator_tx=(_shared_optimizer(_items(placeholder.disentangle.discriminator_optimizer))
                        if discriminator_optimizer(placeholder) else None))
  hparams = sweep_step.stack([
      sweep_step.hparams_of(m.step_statics,
                            vae_learning_rate=float(m.config.vae_optimizer.learning_rate),
                            q_learning_rate=float(m.config.q_optimizer.learning_rate))
      for m in members])
  return SweepRun(config=config, members=members, step_statics=statics, hparams=hparams)


def _items(section) -> tuple:
  return tuple(sorted(section.to_dict().items()))


@functools.lru_cache(maxsize=None)
def _shared_optimizer(items: tuple) -> optax.GradientTransformation:
  """One optimizer object per setting (optax transformations compare by identity), so
  that sweeps differing only in values have equal step statics: one compiled program."""
  return build_optimizer(ml_collections.ConfigDict(dict(items)))
