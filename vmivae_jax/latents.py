"""The joint latent: Gaussian dimensions plus zero or more categorical codes.

A :class:`LatentSpec` names the layout; :class:`PosteriorParams` holds what an encoder
predicts for a batch; the functions below sample the joint latent and score it per
group (thesis eqs 4.16-4.19: the KL of the factorised posterior is the sum of the
per-group KLs). Pure functions over arrays; only jax is imported.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmivae_jax import distributions


@dataclasses.dataclass(frozen=True)
class LatentSpec:
  """Layout of the latent vector: ``gaussian_dims`` reals, then one one-hot per code."""
  gaussian_dims: int
  categorical_sizes: tuple[int, ...] = ()

  @property
  def code_size(self) -> int:
    """Length of the concatenated latent vector the decoder reads."""
    return self.gaussian_dims + sum(self.categorical_sizes)

  def group_names(self) -> tuple[str, ...]:
    """Names of the latent groups in KL dictionaries: 'gaussian', 'categorical_0', ..."""
    names = ('gaussian',) if self.gaussian_dims else ()
    return names + tuple(f'categorical_{i}' for i in range(len(self.categorical_sizes)))


class PosteriorParams(NamedTuple):
  """Encoder output for a batch of B examples."""
  mean: jax.Array             # [B, D] Gaussian means (D may be 0)
  logvar: jax.Array           # [B, D] Gaussian log-variances
  logits: tuple[jax.Array, ...]  # one [B, K_i] array per categorical code


class LatentNoise(NamedTuple):
  """Noise that makes a latent sample a deterministic function of the posterior."""
  gaussian: jax.Array          # [B, D] standard normal
  gumbel: tuple[jax.Array, ...]  # one [B, K_i] Gumbel(0, 1) array per code


class LatentSample(NamedTuple):
  gaussian: jax.Array            # [B, D] reparameterised Gaussian sample
  categorical: tuple[jax.Array, ...]  # one [B, K_i] relaxed (or straight-through) one-hot per code

  def code(self) -> jax.Array:
    """[B, D + sum K_i] concatenated latent vector fed to the decoder."""
    return jnp.concatenate((self.gaussian,) + tuple(self.categorical), axis=-1)


def draw_noise(key: jax.Array, spec: LatentSpec, batch_shape: int | tuple[int, ...]
               ) -> LatentNoise:
  """Draws the noise for latent samples of leading shape ``batch_shape`` from one key."""
  # Flat draws reshaped: the same values as multi-dimensional draws (partitionable
  # threefry numbers elements in row-major order), but those take seconds each to
  # compile on CPU.
  if isinstance(batch_shape, int):
    batch_shape = (batch_shape,)
  keys = jax.random.split(key, 1 + len(spec.categorical_sizes))

  def flat(sampler, k, size):
    return sampler(k, (math.prod(batch_shape) * size,)).reshape(batch_shape + (size,))
  return LatentNoise(
      gaussian=flat(jax.random.normal, keys[0], spec.gaussian_dims),
      gumbel=tuple(flat(distributions.gumbel_noise, k, size)
                   for k, size in zip(keys[1:], spec.categorical_sizes)))


def sample(posterior: PosteriorParams, noise: LatentNoise, *, temperature: jax.Array | float,
           hard: bool = False) -> LatentSample:
  """Reparameterised sample of the joint latent (Gumbel-softmax for the codes, eq 4.20)."""
  return LatentSample(
      gaussian=distributions.gaussian_sample(
          mean=posterior.mean, logvar=posterior.logvar, noise=noise.gaussian),
      categorical=tuple(
          distributions.gumbel_softmax_sample(logits=logits, gumbel=g, temperature=temperature,
                                              hard=hard)
          for logits, g in zip(posterior.logits, noise.gumbel)))


def mode(posterior: PosteriorParams) -> LatentSample:
  """Posterior mode: Gaussian means and the one-hot argmax of each code."""
  return LatentSample(
      gaussian=posterior.mean,
      categorical=tuple(jax.nn.one_hot(jnp.argmax(l, -1), l.shape[-1]) for l in posterior.logits))


def kl_per_group(posterior: PosteriorParams, spec: LatentSpec) -> dict[str, jax.Array]:
  """Per-example KL to the prior for each latent group (eq 4.18); values are [B].

  The Gaussian group's prior is N(0, I); each code's prior is Uniform(K).
  Their sum is the KL of the factorised joint posterior.
  """
  kls = {}
  if spec.gaussian_dims:
    kls['gaussian'] = distributions.gaussian_kl_to_standard_normal(
        mean=posterior.mean, logvar=posterior.logvar)
  for i, logits in enumerate(posterior.logits):
    kls[f'categorical_{i}'] = distributions.categorical_kl_to_uniform(logits=logits)
  return kls
