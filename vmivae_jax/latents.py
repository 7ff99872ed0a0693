"""The joint latent: Gaussian dimensions plus zero or more categorical codes.

A :class:`LatentSpec` names the layout; :class:`PosteriorParams` holds what an encoder
predicts for a batch; the functions below sample the joint latent and score it per
group (thesis eqs 4.16-4.19: the KL of the factorised posterior is the sum of the
per-group KLs). The Gaussian group's prior is N(0, I), or, with ``mixture_code`` set, a
learned Gaussian mixture p(z | c) = N(mu_c, sigma_c^2) conditioned on that code
(GMVAE / VaDE). Pure functions over arrays; only jax is imported.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmivae_jax import consistency
from vmivae_jax import distributions

__all__ = [
    'LatentSpec',
    'MixturePrior',
    'PosteriorParams',
    'LatentNoise',
    'LatentSample',
    'draw_noise',
    'sample',
    'mode',
    'kl_per_group',
    'prior_components',
    'gaussian_prior_log_density',
]


@dataclasses.dataclass(frozen=True)
class LatentSpec:
  """Layout of the latent vector: ``gaussian_dims`` reals, then one one-hot per code.

  ``mixture_code``: the code c whose value selects the Gaussian group's prior
  component p(z | c) = N(mu_c, sigma_c^2) (a mixture prior); None: p(z) = N(0, I).
  """
  gaussian_dims: int
  categorical_sizes: tuple[int, ...] = ()
  mixture_code: int | None = None

  @property
  def code_size(self) -> int:
    """Length of the concatenated latent vector the decoder reads."""
    return self.gaussian_dims + sum(self.categorical_sizes)

  def group_names(self) -> tuple[str, ...]:
    """Names of the latent groups in KL dictionaries: 'gaussian', 'categorical_0', ..."""
    names = ('gaussian',) if self.gaussian_dims else ()
    return names + tuple(f'categorical_{i}' for i in range(len(self.categorical_sizes)))


class MixturePrior(NamedTuple):
  """The Gaussian group's prior components p(z | c) = N(means[c], exp(logvars[c]))."""
  means: jax.Array            # [K, D]
  logvars: jax.Array          # [K, D]


class PosteriorParams(NamedTuple):
  """Encoder output for a batch of B examples (and the prior its KL is taken against)."""
  mean: jax.Array             # [B, D] Gaussian means (D may be 0)
  logvar: jax.Array           # [B, D] Gaussian log-variances
  logits: tuple[jax.Array, ...]  # one [B, K_i] array per categorical code
  prior: MixturePrior | None = None  # the mixture prior's parameters (spec.mixture_code set)


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

  The Gaussian group's prior is N(0, I), or with ``spec.mixture_code = m`` the mixture
  p(z | c_m) (``posterior.prior``): its term is then the expected conditional KL
  sum_c q(c_m = c | x) KL(q(z|x) || N(mu_c, sigma_c^2)) (VaDE, Jiang et al. 2017,
  eq 17), exact for the factorised posterior q(z|x) q(c|x). Each code's prior is
  Uniform(K). The sum of the groups' terms is the KL of the joint posterior to p(z, c).
  """
  kls = {}
  if spec.gaussian_dims and spec.mixture_code is not None:
    if posterior.prior is None:
      raise ValueError(f'spec.mixture_code={spec.mixture_code}: the posterior carries no '
                       'mixture prior (networks.VAE.encode attaches it)')
    kls['gaussian'] = consistency.conditional_gaussian_kl(
        mean=posterior.mean, logvar=posterior.logvar,
        code_probs=jax.nn.softmax(posterior.logits[spec.mixture_code], axis=-1),
        prior_means=posterior.prior.means, prior_logvars=posterior.prior.logvars)
  elif spec.gaussian_dims:
    kls['gaussian'] = distributions.gaussian_kl_to_standard_normal(
        mean=posterior.mean, logvar=posterior.logvar)
  for i, logits in enumerate(posterior.logits):
    kls[f'categorical_{i}'] = distributions.categorical_kl_to_uniform(logits=logits)
  return kls


def prior_components(spec: LatentSpec, prior: MixturePrior | None, codes: tuple[jax.Array, ...]
                     ) -> tuple[jax.Array, jax.Array]:
  """Mean and log-variance of p(z | c) for drawn codes: N(0, I) without a mixture prior.

  Args:
    spec: the latent layout.
    prior: the mixture prior's parameters (None when ``spec.mixture_code`` is None).
    codes: one integer array [...] of drawn values per code (all codes, in order).

  Returns:
    (mean, logvar), each [..., D] with a mixture prior (the component of each drawn
    value of code ``spec.mixture_code``), else scalar zeros (broadcast against z).

  >>> import jax.numpy as jnp
  >>> spec = LatentSpec(gaussian_dims=1, categorical_sizes=(2,), mixture_code=0)
  >>> prior = MixturePrior(means=jnp.array([[-1.0], [2.0]]), logvars=jnp.zeros((2, 1)))
  >>> prior_components(spec, prior, (jnp.array([1, 0]),))[0].tolist()
  [[2.0], [-1.0]]
  """
  if spec.mixture_code is None:
    return jnp.zeros(()), jnp.zeros(())
  c = codes[spec.mixture_code]
  return prior.means[c], prior.logvars[c]


def gaussian_prior_log_density(z: jax.Array, spec: LatentSpec, prior: MixturePrior | None,
                               codes: tuple[jax.Array, ...]) -> jax.Array:
  """[...] log p(z | c) for Gaussian samples z [..., D] and drawn codes (integers [...]).

  log N(z; 0, I) without a mixture prior, else log N(z; mu_c, sigma_c^2) with c the
  drawn value of code ``spec.mixture_code``.
  """
  mean, logvar = prior_components(spec, prior, codes)
  return distributions.gaussian_log_density(z, mean=mean, logvar=logvar)
