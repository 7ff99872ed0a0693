"""The disentanglement baselines on the Gaussian latent group, as terms of the VAE loss.

``DisentangleSettings.method`` picks one (config.disentangle; 'none' adds nothing):

* 'beta_tcvae' (Chen et al. 2018): the Gaussian group's beta * KL is replaced by
  alpha * MI + beta * TC + gamma * dim-wise KL (``decompositions.kl_decomposition``),
  the aggregate taken over the global batch.
* 'dip_vae_i' / 'dip_vae_ii' (Kumar et al. 2018): + lambda_od * sum_{i!=j} C_ij^2 +
  lambda_d * sum_i (C_ii - 1)^2 with C = Cov[mean(x)] (I) or Cov_q(z) (II).
* 'factor_vae' (Kim & Mnih 2018): + gamma * TC, with TC estimated by a discriminator
  between q(z) and prod_d q(z_d) (samples from ``decompositions.permute_dims``) as
  E[logit_real - logit_permuted]. The discriminator has its own parameters and
  optimizer in the train state; the step updates it after Q and before the VAE
  (train_step.py), on the same forward pass's samples.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmivae_jax import decompositions
from vmivae_jax import latents
from vmivae_jax.util import parallel

METHODS = ('none', 'beta_tcvae', 'factor_vae', 'dip_vae_i', 'dip_vae_ii')


@dataclasses.dataclass(frozen=True)
class DisentangleSettings:
  """One baseline's weights (hashable: part of the step's static arguments).

  Attributes:
    method: one of METHODS.
    index_code_mi_weight, tc_weight, dimwise_kl_weight: beta-TCVAE's alpha, beta and
      gamma; ``tc_weight`` is also FactorVAE's gamma.
    estimator: beta-TCVAE's aggregate-density estimator (decompositions.ESTIMATORS).
    dataset_size: training examples N (the 'mss' estimator's weights).
    lambda_od, lambda_d: DIP-VAE's off-diagonal and diagonal weights.
    discriminator_hidden: FactorVAE's discriminator widths.
  """
  method: str = 'none'
  index_code_mi_weight: float = 1.0
  tc_weight: float = 1.0
  dimwise_kl_weight: float = 1.0
  estimator: str = 'mws'
  dataset_size: int = 0
  lambda_od: float = 0.0
  lambda_d: float = 0.0
  discriminator_hidden: tuple[int, ...] = (1000,) * 6

  @property
  def enabled(self) -> bool:
    return self.method != 'none'

  @property
  def replaces_gaussian_kl(self) -> bool:
    return self.method == 'beta_tcvae'

  @property
  def has_discriminator(self) -> bool:
    return self.method == 'factor_vae'


class Discriminator(nn.Module):
  """FactorVAE's discriminator: an MLP with LeakyReLU(0.2) and 2 logits (real, permuted);
  disentanglement_lib's has 6 hidden layers of 1000 units."""
  hidden: tuple[int, ...] = (1000,) * 6

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for i, width in enumerate(self.hidden):
      h = nn.leaky_relu(nn.Dense(width, name=f'dense_{i}')(h), negative_slope=0.2)
    return nn.Dense(2, name='logits')(h)


def discriminator(settings: DisentangleSettings) -> Discriminator:
  return Discriminator(hidden=tuple(settings.discriminator_hidden))


def init_discriminator(settings: DisentangleSettings, key: jax.Array, num_dims: int) -> dict:
  """The discriminator's parameters for a [B, num_dims] latent."""
  return discriminator(settings).init(key, jnp.zeros((1, num_dims), jnp.float32))['params']


def permutation_key(step_key: jax.Array, step: jax.Array) -> jax.Array:
  """The step's permute_dims key (independent of the noise and invariance keys)."""
  return jax.random.fold_in(jax.random.fold_in(step_key, step), 2)


def permuted_sample(key: jax.Array, z: jax.Array, *, axis_name: str | None = None
                    ) -> jax.Array:
  """This device's rows of permute_dims of the global batch's z (the same permutation
  whatever the device count)."""
  if axis_name is None:
    return decompositions.permute_dims(key, z)
  every = jax.lax.all_gather(z, axis_name, tiled=True)
  return parallel.local_slice(decompositions.permute_dims(key, every), z.shape[0], axis_name)


def discriminator_tc(logits: jax.Array) -> jax.Array:
  """FactorVAE's TC estimate from the discriminator's [B, 2] logits on real samples:
  log D/(1 - D) = logit_real - logit_permuted, per example [B]."""
  return logits[:, 0] - logits[:, 1]


def discriminator_objective(params: dict, *, settings: DisentangleSettings, z: jax.Array,
                            z_permuted: jax.Array) -> tuple[jax.Array, dict]:
  """Cross-entropy of the discriminator: z (class 0, real) against z_permuted (class 1),
  each half weighted 1/2, as disentanglement_lib. z is a constant here.

  Returns:
    (loss, {'discriminator_loss', 'discriminator_accuracy'}).
  """
  z, z_permuted = jax.lax.stop_gradient((z, z_permuted))
  net = discriminator(settings)
  real, permuted = net.apply({'params': params}, z), net.apply({'params': params}, z_permuted)
  loss = -0.5 * (jnp.mean(jax.nn.log_softmax(real)[:, 0])
                 + jnp.mean(jax.nn.log_softmax(permuted)[:, 1]))
  accuracy = 0.5 * (jnp.mean(real[:, 0] > real[:, 1]) + jnp.mean(permuted[:, 1] > permuted[:, 0]))
  return loss, {'discriminator_loss': loss, 'discriminator_accuracy': accuracy}


def gaussian_term(settings: DisentangleSettings, posterior: latents.PosteriorParams,
                  z: jax.Array, *, discriminator_params: dict | None = None,
                  axis_name: str | None = None) -> tuple[jax.Array, dict]:
  """The method's term of the VAE loss (local-batch mean) and its metrics.

  Args:
    settings: the method and its weights (``settings.enabled``).
    posterior: the batch's posterior (its Gaussian mean and logvar, [B, D]).
    z: [B, D] the Gaussian sample of the same forward pass.
    discriminator_params: FactorVAE's discriminator (held fixed here).
    axis_name: data-parallel axis: the aggregate posterior, the covariance and the
      permutation are then those of the global batch.
  """
  method = settings.method
  if method == 'beta_tcvae':
    pool_mean, pool_logvar, own = posterior.mean, posterior.logvar, None
    if axis_name is not None:
      gather = lambda a: jax.lax.all_gather(a, axis_name, tiled=True)
      pool_mean, pool_logvar = gather(posterior.mean), gather(posterior.logvar)
      own = jax.lax.axis_index(axis_name) * z.shape[0] + jnp.arange(z.shape[0])
    terms = decompositions.kl_decomposition(
        z, mean=posterior.mean, logvar=posterior.logvar, pool_mean=pool_mean,
        pool_logvar=pool_logvar, estimator=settings.estimator, own_index=own,
        dataset_size=settings.dataset_size)
    mi, tc, dimwise = (jnp.mean(t) for t in terms)
    term = (settings.index_code_mi_weight * mi + settings.tc_weight * tc
            + settings.dimwise_kl_weight * dimwise)
    return term, {'index_code_mi': mi, 'tc': tc, 'dimwise_kl': dimwise}
  if method in ('dip_vae_i', 'dip_vae_ii'):
    cov = decompositions.dip_covariance(
        mean=posterior.mean, logvar=posterior.logvar if method == 'dip_vae_ii' else None,
        axis_name=axis_name)
    penalty = decompositions.dip_penalty(cov, lambda_od=settings.lambda_od,
                                         lambda_d=settings.lambda_d)
    return penalty, {'dip_penalty': penalty}
  if method == 'factor_vae':
    if discriminator_params is None:
      raise ValueError("method='factor_vae': pass the discriminator's parameters")
    logits = discriminator(settings).apply({'params': discriminator_params}, z)
    tc = jnp.mean(discriminator_tc(logits))
    return settings.tc_weight * tc, {'tc': tc}
  raise ValueError(f'method={method!r}: choose one of {METHODS}')
