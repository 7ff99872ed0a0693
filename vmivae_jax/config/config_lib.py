"""The base experiment config and its variants: defaults only (ml_collections only).

Every file in ``configs/`` starts from :func:`get_base_config` (or a setting built on it)
and changes a few fields; ``validation.validate`` checks a config, and ``build.py``
turns it into library objects.
"""

import ml_collections

from vmivae_jax.config.sections import DISENTANGLE_METHODS  # pylint: disable=unused-import
from vmivae_jax.config.sections import SWEEP_KEYS  # pylint: disable=unused-import
from vmivae_jax.config.sections import disentangle_section
from vmivae_jax.config.sections import optimizer_section
from vmivae_jax.config.sections import sweep_section

PIXEL_RANGES = ('zero_one', 'minus_one_one')   # preprocess.PIXEL_RANGES maps them
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'rmsprop')
DATA_FEEDS = ('device', 'host')   # config.data_feed; train_step.make_train_chunk's feed


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults: MLP VAE on MNIST, 32-d Gaussian latent, MI on dims (0, 1), lambda = 0."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = 'mnist'
  c.data_dir = ''            # '' = $VMIVAE_DATA_DIR, else tensorflow-datasets
  # A writable folder for rendered datasets (dsprites' packed-bit cache, 377 MB); '' = the
  # data directory. Validation refuses a folder that lacks the cache and is not writable.
  c.data_cache_dir = ''
  c.train_limit = 0          # > 0: use only the first N training examples (smoke tests)
  # How batches reach the devices (same batches, same parameters either way):
  # 'device': the training set is placed whole on every device, each gathers its rows;
  # 'host': per chunk each process feeds only its devices' rows of every global batch
  # (jax.make_array_from_process_local_data); for data too large to replicate, or
  # several hosts. Single runs only (a sweep refuses 'host').
  c.data_feed = 'device'
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
      norm='none', activation='relu',
      separate_code_encoder=False,  # True: the codes' heads get their own trunk
      # Conv formulations (vmivae_jax/model/conv_ops.py): 'auto' = the backend's default
      # (networks.conv_impls: matmul/custom-VJP formulations on CPU, native lax on GPU/TPU).
      conv_impl='auto', deconv_impl='auto'))
  c.likelihood = 'bernoulli'
  c.gaussian_logvar = 0.0
  c.learn_output_logvar = False
  c.beta = 1.0
  c.capacity = ml_collections.ConfigDict(dict(
      gaussian=ml_collections.ConfigDict(dict(gamma=0.0, max_nats=0.0, steps=1)),
      categorical=ml_collections.ConfigDict(dict(gamma=0.0, max_nats=0.0, steps=1))))
  c.temperature = ml_collections.ConfigDict(dict(initial=1.0, floor=0.5, anneal_rate=0.0,
                                                 hard=False))
  # Invariance of the categorical codes q(c|x) to small transforms T (the class-code recipe); every
  # weight 0 = off (no extra work, bitwise the plain objective). See vmivae_jax/model/invariance.py.
  c.invariance = ml_collections.ConfigDict(dict(
      consistency_weight=0.0,   # + w * mean KL(q(c|x) || q(c|T(x))) per code (clean side fixed)
      paired_mi_weight=0.0,     # - w * IIC paired-assignment MI between q(c|x) and q(c|T(x))
      vat_weight=0.0, vat_epsilon=1.2, vat_xi=0.0, vat_power_iterations=1,  # + w * VAT on q(c|x)
      # + w * SCAN's -log sum_c q(c|x) q(c|n(x)), n(x) one of x's k nearest training examples
      neighbour_weight=0.0, neighbour_count=20,
      augment=ml_collections.ConfigDict(dict(
          max_rotation=15.0, max_scale=0.1, max_aspect=0.0, max_shear=10.0,
          max_translation=2.0, elastic_alpha=0.0, elastic_sigma=4.0, dilate_prob=0.25,
          erode_prob=0.0, thickness_footprint='cross',
          flip_prob=0.0,            # left-right mirror (clothing, not digits)
          crop_min_area=1.0, crop_max_aspect=0.0))))   # random resized crop (1 = off)
  # What else trains the categorical codes' logits (model/objectives.py CodeTraining);
  # the defaults are off and leave the objective bitwise as it is.
  c.code_training = ml_collections.ConfigDict(dict(
      marginal_entropy_weight=0.0,     # - w * H(qbar_batch(c)) per code
      conditional_entropy_weight=0.0,  # + w * mean_x H(q(c|x)) per code
      aggregate_kl=False,              # train with KL(qbar_batch(c) || U), not the per-example KL
      generative_gradient=1.0,         # scale of the gradient into the logits via the sample
      generative_gradient_warmup_steps=0))  # scale 0 before this step
  # 'bfloat16': bfloat16 activations and matmul/conv inputs (GPU/TPU); parameters,
  # optimizer states and every loss stay float32. 'float32' is the reference model.
  c.compute_dtype = 'float32'
  # Mixture prior p(z | c) = N(mu_c, sigma_c^2) on the Gaussian group, conditioned on code
  # c = latent.categorical_sizes[code_index] (GMVAE / VaDE); off = N(0, I).
  c.mixture_prior = ml_collections.ConfigDict(dict(
      enabled=False, code_index=0,
      learn_logvars=False,   # learned sigma_c^2 (else 1)
      init_scale=1.0))       # component means initialised N(0, init_scale^2)
  c.disentangle = disentangle_section()
  c.vae_optimizer = optimizer_section(1e-3)
  c.q_optimizer = optimizer_section(1e-3)

  c.sweep = sweep_section()  # per-member values: many runs in one program (vmivae_jax/rundir/sweep.py)
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=500, iwae_samples=1000, iwae_chunk=100, q_train_steps=3000, q_batch_size=256,
      q_learning_rate=1e-3, num_figure_examples=10, traversal_range=3.0, traversal_steps=7,
      # Factor datasets (dsprites): the six disentanglement scores' sample sizes, as
      # disentanglement_lib's defaults (num_test: SAP/DCI test points and the BetaVAE /
      # FactorVAE eval points; batch_size: the fixed-factor batches).
      disentanglement=ml_collections.ConfigDict(dict(
          num_train=10_000, num_test=5_000, batch_size=64, num_variance_estimate=10_000))))
  return c


def stored_dict(config: ml_collections.ConfigDict) -> dict:
  """``config`` as written to a workdir's config.json: an empty (unused) sweep section is
  left out, so a single run's file is what it was before sweeps existed."""
  d = config.to_dict()
  sweep = d.get('sweep')
  if isinstance(sweep, dict) and not _any_values(sweep):
    del d['sweep']
  return d


def _any_values(tree) -> bool:
  if isinstance(tree, dict):
    return any(_any_values(v) for v in tree.values())
  return bool(tree)


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



def class_config(dataset: str, *, max_rotation: float, max_shear: float,
                 dilate_prob: float) -> ml_collections.ConfigDict:
  """The joint setting plus the invariance terms of the class-code recipe.

  Consistency of q(c|x) under random affine (and stroke-thickness) augmentation, weight
  10, and VAT, weight 1, radius 1.2; MI weight 10; 30 epochs at batch 256. The
  augmentation's strength is per dataset.
  """
  config = joint_config(dataset)
  config.mi_weight = 10.0
  config.invariance.update(consistency_weight=10.0, vat_weight=1.0, vat_epsilon=1.2)
  config.invariance.augment.update(
      max_rotation=max_rotation, max_scale=0.1, max_aspect=0.0, max_shear=max_shear,
      max_translation=2.0, elastic_alpha=0.0, dilate_prob=dilate_prob, erode_prob=0.0,
      thickness_footprint='cross')
  config.num_train_steps = 7020          # 30 epochs at batch 256
  config.checkpoint_every_steps = 2340   # every 10 epochs
  return config

def classifier_code(config: ml_collections.ConfigDict, *, warmup_steps: int = 0
                    ) -> ml_collections.ConfigDict:
  """``config`` with its code trained like IMSAT's classifier inside the VAE.

  The code is trained by the invariance terms, the encoder-side information term
  (marginal entropy 4, conditional 1, IMSAT's 4:1) and the aggregate KL(qbar(c) || U) in
  place of the per-example KL, which would penalise the information in the code. The
  reconstruction's and the MI bound's gradients do not reach the code's logits through
  its sample: never (``warmup_steps`` 0), or only during the first ``warmup_steps``
  steps, after which the code is trained by the whole objective. The decoder and Q
  always read the code, and the MI term always shapes the decoder.
  """
  config.code_training.update(
      generative_gradient=1.0 if warmup_steps else 0.0,
      generative_gradient_warmup_steps=warmup_steps, aggregate_kl=True,
      marginal_entropy_weight=4.0, conditional_entropy_weight=1.0)
  return config


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
  smoke_widths(config.model)
  config.eval.update(batch_size=100, iwae_samples=8, iwae_chunk=4, q_train_steps=20,
                     q_batch_size=50, num_figure_examples=4)
  config.eval.disentanglement.update(num_train=200, num_test=100, batch_size=8,
                                     num_variance_estimate=200)
  return config


def smoke_widths(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Tiny layer widths for ``config.model``, keeping its family and its number of conv
  layers (smoke runs, benchmarks)."""
  model.encoder_hidden = model.decoder_hidden = model.q_hidden = (
      (32,) if model.family == 'mlp' else (16,))
  if model.family == 'dlib_conv':   # four layers: 64 -> 4 as in the full network
    model.encoder_channels = model.q_channels = (4, 4, 8, 8)
    model.decoder_channels = (8, 8, 4, 4)
    return model
  model.encoder_channels = model.q_channels = (4, 8)
  model.decoder_channels = (8, 4)
  return model


def authors_architecture(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The authors' conv networks in ``config.model``: k4 s2 convs 64/128, BatchNorm,
  LeakyReLU 0.2, Linear 512, transpose-conv decoder."""
  model.update(family='conv', encoder_hidden=(512,), decoder_hidden=(512,),
               q_hidden=(512,), encoder_channels=(64, 128), decoder_channels=(128, 64),
               q_channels=(64, 128), norm='batch', activation='leaky_relu')
  return model


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
  authors_architecture(config.model)
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


# Config keys (sections or dotted leaves) added after runs were stored; their defaults
# leave such runs unchanged, so a stored config lacking one is the same run with it set
# to its default. Every key added to get_base_config later must be listed here.
LATER_KEYS = ('invariance', 'invariance.augment.flip_prob', 'model.separate_code_encoder',
              'mixture_prior', 'model.conv_impl', 'model.deconv_impl', 'compute_dtype',
              'sweep', 'data_feed', 'code_training', 'invariance.neighbour_weight',
              'invariance.neighbour_count', 'invariance.augment.crop_min_area',
              'invariance.augment.crop_max_aspect', 'disentangle', 'data_cache_dir',
              'eval.disentanglement')


def with_later_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A stored config (an older workdir's config.json) with the keys added since it was
  written (``LATER_KEYS``) set to their defaults, which switch them off."""
  base = get_base_config()
  for dotted in LATER_KEYS:
    *parents, leaf = dotted.split('.')
    node, default = config, base
    for part in parents:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        break
      node, default = node[part], default[part]
    else:  # a parent that is not a section (a foreign file) is left to validation
      if isinstance(node, ml_collections.ConfigDict) and leaf not in node:
        node[leaf] = default[leaf]
  return config


VARIANTS = ('', 'smoke', 'mixprior', 'capacity', 'mi_all_dims')


def mi_all_dims(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The MI term on every Gaussian dim (instead of the config's selection)."""
  config.mi.gaussian_indices = tuple(range(config.latent.gaussian_dims))
  return config


def mixture_prior(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The mixture prior p(z | c) on the Gaussian group, conditioned on code 0, with
  learned component variances."""
  config.mixture_prior.update(enabled=True, code_index=0, learn_logvars=True, init_scale=1.0)
  return config


# The capacity recipe: MI on the code plus a JointVAE-style capacity limit on the
# Gaussian group, so that the class has to go into the code (docs/results.md).
CAPACITY_MI_WEIGHT = 10.0


def capacity_gaussian(max_nats: float) -> dict:
  """Overrides (``override``) for a capacity limit of ``max_nats`` on the Gaussian group
  (gamma 30, the limit reached linearly over 2000 steps)."""
  return {'capacity.gaussian.gamma': 30.0, 'capacity.gaussian.max_nats': max_nats,
          'capacity.gaussian.steps': 2000}


def capacity_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MI (lambda = 10) with a 2-nat capacity limit on the Gaussian group (the results
  page's ``mi_capz2``), and the Gumbel temperature annealed 1.0 -> 0.5 (rate 3e-4, the
  floor reached after 2310 steps).

  Why the anneal (docs/mi_entropy_training.md): with the Gaussian
  group capped the decoder must read the code, and at a fixed temperature of 1.0 it
  learns to read soft codes the discrete model never produces: the relaxed ELBO beats
  the hard-code ELBO by 3.4 nats after 10 epochs (12 after 30). Annealed, the gap is
  0.9 nats and the hard-code ELBO 2.9 nats better (one tuning seed, 10 epochs).
  """
  config = override(config, {'mi_weight': CAPACITY_MI_WEIGHT, **capacity_gaussian(2.0)})
  config.temperature.update(initial=1.0, floor=0.5, anneal_rate=3e-4)
  return config


def variant(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Applies named variants (``--config=configs/x.py:<name>``, several joined by '+',
  e.g. 'mixprior+smoke'); unknown names are errors."""
  for part in name.split('+') if name else ():
    if part not in VARIANTS[1:]:
      raise ValueError(f'config variant {name!r} is unknown; choose from {VARIANTS}, '
                       "joined by '+' ('' is the full config)")
    config = {'smoke': smoke, 'mixprior': mixture_prior, 'capacity': capacity_recipe,
              'mi_all_dims': mi_all_dims}[part](config)
  return config


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
