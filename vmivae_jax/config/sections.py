"""Sections of the base config that are built by a function: an optimizer, the
disentanglement baseline and the sweep's per-member keys (ml_collections only;
``config_lib`` re-exports them)."""

import ml_collections


def optimizer_section(learning_rate: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='adam', learning_rate=learning_rate, b1=0.9, b2=0.999, weight_decay=0.0,
      grad_clip_norm=0.0))


DISENTANGLE_METHODS = ('none', 'beta_tcvae', 'factor_vae', 'dip_vae_i', 'dip_vae_ii')


def disentangle_section() -> ml_collections.ConfigDict:
  """``config.disentangle``: a disentanglement baseline on the Gaussian group
  (vmivae_jax/model/disentangle.py); method 'none' leaves the objective bitwise as it is.

  Each key is read by the methods named in its comment (validation refuses a changed key
  that the chosen method would ignore).
  """
  discriminator_optimizer = optimizer_section(1e-4)   # Kim & Mnih: Adam(1e-4, 0.5, 0.9)
  discriminator_optimizer.update(b1=0.5, b2=0.9)
  return ml_collections.ConfigDict(dict(
      method='none',              # one of DISENTANGLE_METHODS
      index_code_mi_weight=1.0,   # beta_tcvae: alpha, weight of the index-code MI
      tc_weight=6.0,              # beta_tcvae: beta; factor_vae: gamma (weight of the TC)
      dimwise_kl_weight=1.0,      # beta_tcvae: gamma, weight of the dimension-wise KL
      estimator='mws',            # beta_tcvae: 'mws' or 'mss' (decompositions.ESTIMATORS)
      dip_lambda_od=10.0,         # dip_vae_*: weight of the off-diagonal covariances
      dip_lambda_d_factor_i=10.0,  # dip_vae_i: lambda_d = factor * lambda_od
      dip_lambda_d_factor_ii=1.0,  # dip_vae_ii: lambda_d = factor * lambda_od
      discriminator_hidden=(1000,) * 6,   # factor_vae: the discriminator's widths
      discriminator_optimizer=discriminator_optimizer))   # factor_vae


# Keys a sweep may vary across its members (``config.sweep.<key> = (v_0, v_1, ...)``, one
# value per member): numbers the train step reads as arrays. Everything else (shapes,
# widths, kinds, flags, schedules' lengths in the loop) is shared by every member.
SWEEP_KEYS = (
    'seed', 'mi_weight', 'beta', 'vae_optimizer.learning_rate', 'q_optimizer.learning_rate',
    'temperature.initial', 'temperature.floor', 'temperature.anneal_rate',
    'capacity.gaussian.gamma', 'capacity.gaussian.max_nats', 'capacity.gaussian.steps',
    'capacity.categorical.gamma', 'capacity.categorical.max_nats', 'capacity.categorical.steps',
    'invariance.consistency_weight', 'invariance.paired_mi_weight', 'invariance.vat_weight')


def sweep_section() -> ml_collections.ConfigDict:
  """``config.sweep``: SWEEP_KEYS in the config's nesting, each () = not swept.

  ``--config.sweep.seed=(0,1,2) --config.sweep.mi_weight=(0,10,10)`` trains three members
  in one program; every non-empty tuple has one value per member.
  """
  section = ml_collections.ConfigDict()
  for key in SWEEP_KEYS:
    *parents, leaf = key.split('.')
    node = section
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = ()
  return section
