"""The base experiment config and the builders that turn a config into library objects.

Every file in ``configs/`` starts from :func:`get_base_config` and changes a few
fields; ``validation.validate`` checks a config before anything is built.
"""

import ml_collections
import optax

from vmivae_jax import latents
from vmivae_jax import networks
from vmivae_jax import objectives
from vmivae_jax import model as model_lib

PIXEL_RANGES = {'zero_one': (0.0, 1.0), 'minus_one_one': (-1.0, 1.0)}
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'rmsprop')


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
  c.mi_warmup_steps = 0       # > 0: lambda rises linearly from 0 over this many steps

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
      batch_size=500, iwae_samples=1000, iwae_chunk=100, q_train_steps=3000, q_batch_size=256,
      q_learning_rate=1e-3, num_figure_examples=10, traversal_range=3.0, traversal_steps=7))
  return c


def joint_config(dataset: str):
  """The joint Gaussian + categorical setting shared by MNIST and Fashion-MNIST."""
  config = get_base_config()
  config.dataset = dataset
  config.latent.gaussian_dims = 16
  config.latent.categorical_sizes = (10,)
  config.mi.gaussian_indices = ()
  config.mi.categorical_indices = (0,)
  config.mi_weight = 10.0
  config.num_train_steps = 4680   # 20 epochs at batch 256
  return config


# ----------------------------------------------------------------------------------
# Builders.


def latent_spec(config) -> latents.LatentSpec:
  return latents.LatentSpec(gaussian_dims=int(config.latent.gaussian_dims),
                            categorical_sizes=tuple(int(k) for k in config.latent.categorical_sizes))


def build_model(config, *, batch_norm_axis: str | None = None) -> model_lib.VMIModel:
  """The VMIModel a config describes; ``batch_norm_axis`` names the data-parallel axis."""
  m = config.model
  spec = latent_spec(config)

  def extractor(hidden, channels):
    return networks.FeatureExtractor(family=m.family, hidden=tuple(hidden),
                                   conv_channels=tuple(channels), norm=m.norm,
                                   activation=m.activation, batch_norm_axis=batch_norm_axis)

  cat_idx = tuple(int(i) for i in config.mi.categorical_indices)
  vae = networks.VAE(
      encoder=networks.Encoder(spec=spec, trunk=extractor(m.encoder_hidden, m.encoder_channels)),
      decoder=networks.Decoder(family=m.family, hidden=tuple(m.decoder_hidden),
                             conv_channels=tuple(m.decoder_channels), norm=m.norm,
                             activation=m.activation, batch_norm_axis=batch_norm_axis),
      learn_output_logvar=bool(config.learn_output_logvar and config.likelihood == 'gaussian'))
  q = networks.QNetwork(num_gaussian=len(config.mi.gaussian_indices),
                      categorical_sizes=tuple(spec.categorical_sizes[i] for i in cat_idx),
                      trunk=extractor(m.q_hidden, m.q_channels))
  return model_lib.VMIModel(vae=vae, q=q, latent=spec,
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
      stop_target_gradient=bool(config.mi.stop_target_gradient),
      mi_warmup_steps=int(config.mi_warmup_steps))


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


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny variant of ``config`` for tests: few examples, small nets, few steps.

  Keeps the family and the latent/MI layout, so a smoke run exercises the same code.
  """
  config.train_limit = 512
  config.test_limit = 200
  config.batch_size = 64
  config.num_train_steps = 20
  config.steps_per_chunk = 5
  config.checkpoint_every_steps = 10
  m = config.model
  m.encoder_hidden = m.decoder_hidden = m.q_hidden = (32,) if m.family == 'mlp' else (16,)
  m.encoder_channels = m.q_channels = (4, 8)
  m.decoder_channels = (8, 4)
  config.eval.update(batch_size=100, iwae_samples=8, iwae_chunk=4, q_train_steps=20,
                     q_batch_size=50, num_figure_examples=4)
  return config


def authors_config(dataset: str, setting: str) -> ml_collections.ConfigDict:
  """The authors' PyTorch setting (aserdega/VMI-VAE), as far as it is documented.

  Conv encoder/decoder/Q (64, 128 channels, k4 s2, BatchNorm, LeakyReLU 0.2, Linear
  512), data in [-1, 1], per-pixel mean squared error, KL weight 0.005, Adam lr 1e-4,
  batch 124, 150k iterations, MI weight 0.01 (MNIST code) or 0.0005 (Fashion code and
  the Gaussian 2-dim case), Gumbel temperature fixed at 1.0 (their schedule never
  anneals). Unlike their code, the MI term keeps H(c) (the aggregate entropy).

  Args:
    dataset: 'mnist' or 'fashion_mnist'.
    setting: 'joint' (16 Gaussian + 10-way code, MI on the code) or 'gauss'
      (32 Gaussian dims, MI on dims 0 and 1).
  """
  config = joint_config(dataset) if setting == 'joint' else get_base_config()
  config.dataset = dataset
  if setting == 'gauss':
    config.latent.gaussian_dims = 32
    config.mi.gaussian_indices = (0, 1)
  config.model.update(family='conv', encoder_hidden=(512,), decoder_hidden=(512,),
                      q_hidden=(512,), encoder_channels=(64, 128), decoder_channels=(128, 64),
                      q_channels=(64, 128), norm='batch', activation='leaky_relu')
  config.pixel_range = 'minus_one_one'
  config.likelihood = 'mse'
  config.beta = 0.005
  config.vae_optimizer.learning_rate = 1e-4
  config.q_optimizer.learning_rate = 1e-4
  config.batch_size = 124
  config.num_train_steps = 150_000
  config.checkpoint_every_steps = 5_000
  config.mi_weight = 0.01 if (dataset == 'mnist' and setting == 'joint') else 0.0005
  config.temperature.update(initial=1.0, floor=1.0, anneal_rate=0.0)
  return config


VARIANTS = ('', 'smoke')


def variant(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Applies a named variant (``--config=configs/x.py:<name>``); unknown names are errors."""
  if name not in VARIANTS:
    raise ValueError(f'config variant {name!r} is unknown; choose one of {VARIANTS} '
                     "('' is the full config)")
  return smoke(config) if name == 'smoke' else config


def override(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys, as ``--config.a.b=v`` flags do: ``override(c, {'model.norm': 'batch'})``.

  Lists become tuples (the configs' sequence type); an unknown key raises.
  """
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config
