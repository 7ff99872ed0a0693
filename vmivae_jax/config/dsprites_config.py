"""The dSprites settings: disentanglement_lib's 64x64 networks and training setup
(ml_collections only; ``configs/dsprites_*.py`` start from :func:`dsprites_config`)."""

import ml_collections

from vmivae_jax.config import config_lib


def dlib_architecture(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """disentanglement_lib's conv_encoder / deconv_decoder (64x64x1) in ``config.model``:
  k4 s2 convs 32-32-64-64, ReLU, dense 256; decoder dense 256, dense 4x4x64, transpose
  convs 64-32-32-1; no normalisation. Q reads x' with the encoder's trunk."""
  model.update(family='dlib_conv', encoder_hidden=(256,), decoder_hidden=(256,),
               q_hidden=(256,), encoder_channels=(32, 32, 64, 64),
               decoder_channels=(64, 64, 32, 32), q_channels=(32, 32, 64, 64), norm='none',
               activation='relu')
  return model


def dsprites_config() -> ml_collections.ConfigDict:
  """dSprites with disentanglement_lib's model and optimiser (Locatello et al. 2019):
  its conv encoder/decoder (``dlib_architecture``), 10 Gaussian dims, Bernoulli
  likelihood, Adam 1e-4 (b1 0.9, b2 0.999), batch 64. lambda 0 with Q trained on dims 0
  and 1 for monitoring (the repository's ELBO-only baseline: the MI configs differ only
  in mi_weight, so they start from the same parameters and batches).

  The step budget is 30,000 steps (2.6 epochs), not disentanglement_lib's 300,000: see
  configs/dsprites_beta_vae.py for the time per step on CPU. The cache of rendered
  images goes to ~/.cache/vmivae_jax (writable for the user; a shared copy can be named
  with --config.data_cache_dir). Traversals span [-2, 2], as in the field's figures.
  Evaluation: IWAE with 100 samples (below); the disentanglement scores at
  disentanglement_lib's sample sizes (``config.eval.disentanglement``).
  """
  config = config_lib.get_base_config()
  config.dataset = 'dsprites'
  config.data_cache_dir = '~/.cache/vmivae_jax'
  dlib_architecture(config.model)
  config.latent.gaussian_dims = 10
  config.latent.categorical_sizes = ()
  config.mi.gaussian_indices = (0, 1)
  config.mi_weight = 0.0
  config.likelihood = 'bernoulli'
  config.batch_size = 64
  config.vae_optimizer.learning_rate = 1e-4
  config.q_optimizer.learning_rate = 1e-4
  config.num_train_steps = 30_000
  config.checkpoint_every_steps = 5_000
  # IWAE: 100 samples, not 1000. Each costs a 64x64 decode: 100 x 2,000 test images took
  # 55 s on 2 loaded CPU cores, so the default 1000 x 10,000 would take about 45 minutes.
  config.eval.update(traversal_range=2.0, traversal_steps=9, iwae_samples=100, iwae_chunk=100)
  return config
