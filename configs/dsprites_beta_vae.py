"""dSprites, beta-VAE baseline: disentanglement_lib's conv networks and training setup.

  python train.py --config=configs/dsprites_beta_vae.py --workdir=runs/dsprites_beta_vae
  python eval.py --workdir=runs/dsprites_beta_vae
  python train.py --config=configs/dsprites_beta_vae.py:smoke --workdir=/tmp/smoke   # tiny

Model and optimiser as in Locatello et al. 2019 (disentanglement_lib): 64x64 conv
encoder/decoder (model.family='dlib_conv'), 10 Gaussian dims, Bernoulli likelihood, Adam
1e-4, batch 64. beta = 1 (the plain VAE); the disentanglement suite varies it
(--config.beta=4 ...). lambda = 0, with Q trained on dims 0 and 1 for monitoring, so
that configs/dsprites_vmi.py differs only in mi_weight. The budget is 30,000 steps
(2.6 epochs of the 737,280 images) instead of disentanglement_lib's 300,000, for CPU.
Measured on 2 CPU cores with other jobs running (2026-12-03): 0.084 s per step
(benchmarks/dlib_conv_step.py); a 600-step run took 61 s with start-up, ending at 12.0
steps/s, so the 30,000 steps should take about 45 minutes (not measured). eval.py adds
MIG, SAP, modularity, DCI, BetaVAE and FactorVAE scores of the encoder mean and a
traversal figure (docs/disentanglement.md). At disentanglement_lib's sample sizes the
scores took 738 s for a 600-step model (load about 2), and eval.py of that run 980 s
in all, with 2,000 test images and a 1,000-step fresh Q; the config's own eval (10,000
test images, 3,000 Q steps) has not been timed.

The first run renders the images into ~/.cache/vmivae_jax (45 s, 377 MB); pass
--config.data_cache_dir=DIR to use another folder.
"""

from vmivae_jax.config import config_lib
from vmivae_jax.config import dsprites_config


def get_config(variant: str = ''):
  config = dsprites_config.dsprites_config()
  config.beta = 1.0
  return config_lib.variant(config, variant)
