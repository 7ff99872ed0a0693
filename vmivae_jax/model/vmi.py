"""The VMI-VAE model: networks, latent layout, MI target selection and likelihood.

:class:`VMIModel` binds the Flax modules to the choices that give their outputs a
meaning (which latents the MI term targets, how pixels are scored) and exposes
the few operations the objectives and evaluations need. It holds no parameters.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmivae_jax import entropies
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax.model import networks
from vmivae_jax.util import parallel

LIKELIHOODS = ('bernoulli', 'gaussian', 'mse')
GAUSSIAN_ENTROPY_KINDS = ('gaussian_prior', 'gaussian_aggregate_mc')


class Forward(NamedTuple):
  """One stochastic pass of a batch through the VAE."""
  posterior: latents.PosteriorParams
  sample: latents.LatentSample
  raw_output: jax.Array           # [B, H, W, 1] decoder logits (Bernoulli) or pre-mean
  output_logvar: jax.Array | None  # learned pixel log-variance, if any
  x_prime: jax.Array              # [B, H, W, 1] decoder mean: what Q reads


class MITargets(NamedTuple):
  """The selected part z_sel of a latent sample: what Q must predict."""
  gaussian: jax.Array              # [B, S] selected Gaussian dims
  categorical: tuple[jax.Array, ...]  # selected codes, each [B, K]


@dataclasses.dataclass(frozen=True)
class VMIModel:
  """A VAE, its Q network and the meaning of their outputs.

  Attributes:
    vae: encoder + decoder module.
    q: the auxiliary network Q(z_sel | x').
    latent: layout of the joint latent.
    mi_gaussian_indices: Gaussian dims in z_sel.
    mi_categorical_indices: categorical codes in z_sel.
    likelihood: 'bernoulli' (logits, pixels in [0, 1]), 'gaussian' (shared fixed or
      learned variance) or 'mse' (the authors' mean squared error).
    pixel_range: (low, high) of the data; the Gaussian/MSE decoder mean is squashed
      into it (sigmoid for [0, 1], tanh for [-1, 1]).
    gaussian_logvar: fixed pixel log-variance of the 'gaussian' likelihood (ignored
      when the VAE learns it).
  """
  vae: networks.VAE
  q: networks.QNetwork
  latent: latents.LatentSpec
  mi_gaussian_indices: tuple[int, ...] = ()
  mi_categorical_indices: tuple[int, ...] = ()
  likelihood: str = 'bernoulli'
  pixel_range: tuple[float, float] = (0.0, 1.0)
  gaussian_logvar: float = 0.0

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the data: fixed by the decoder's family (``networks.IMAGE_SHAPES``)."""
    return networks.image_shape(self.vae.decoder.family)

  @property
  def has_mi_targets(self) -> bool:
    return bool(self.mi_gaussian_indices or self.mi_categorical_indices)

  def init(self, key: jax.Array, batch_size: int = 2) -> tuple[dict, dict]:
    """Initial VAE and Q variables ({'params': ..., maybe 'batch_stats': ...})."""
    vae_key, q_key, noise_key = jax.random.split(key, 3)
    images = jnp.zeros((batch_size,) + self.image_shape, jnp.float32)
    noise = latents.draw_noise(noise_key, self.latent, batch_size)
    vae_vars = self.vae.init(vae_key, images, noise, temperature=1.0, hard=False, train=False)
    q_vars = self.q.init(q_key, images, train=False)
    return dict(vae_vars), dict(q_vars)

  def forward(self, vae_vars: dict, images: jax.Array, noise: latents.LatentNoise, *,
              temperature: jax.Array | float, hard: bool = False, train: bool = True,
              code_gradient: jax.Array | float = 1.0) -> tuple[Forward, dict]:
    """Runs x -> q(z|x) -> z -> p(x|z); returns the pass and updated BatchNorm stats.
    ``code_gradient``: see ``networks.VAE``."""
    (posterior, sample, raw, logvar), new_state = self.vae.apply(
        vae_vars, images, noise, temperature=temperature, hard=hard, train=train,
        code_gradient=code_gradient, mutable=['batch_stats'] if train else [])
    return Forward(posterior, sample, raw, logvar, self.decoder_mean(raw)), dict(new_state)

  def decoder_mean(self, raw_output: jax.Array) -> jax.Array:
    """x': the decoder's mean image, in the data's pixel range."""
    if self.likelihood == 'bernoulli':
      return jax.nn.sigmoid(raw_output)
    low, high = self.pixel_range
    if (low, high) == (-1.0, 1.0):
      return jnp.tanh(raw_output)
    return low + (high - low) * jax.nn.sigmoid(raw_output)

  def reconstruction(self, forward: Forward, images: jax.Array) -> jax.Array:
    """[B] log p(x|z) (or the authors' -MSE) of the batch under its decoded sample."""
    if self.likelihood == 'bernoulli':
      return losses.bernoulli_log_likelihood(logits=forward.raw_output, targets=images)
    if self.likelihood == 'mse':
      return losses.negative_mean_squared_error(prediction=forward.x_prime, targets=images)
    logvar = forward.output_logvar if forward.output_logvar is not None else self.gaussian_logvar
    return losses.gaussian_log_likelihood(mean=forward.x_prime, logvar=logvar, targets=images)

  def mi_targets(self, sample: latents.LatentSample) -> MITargets:
    """z_sel: the selected Gaussian dims and codes of a sample."""
    return MITargets(
        gaussian=sample.gaussian[:, list(self.mi_gaussian_indices)],
        categorical=tuple(sample.categorical[i] for i in self.mi_categorical_indices))

  def log_q(self, q_vars: dict, x_prime: jax.Array, targets: MITargets, *,
            train: bool = True) -> tuple[jax.Array, dict]:
    """[B] log Q(z_sel | x'), summed over the selected groups, and new Q BatchNorm stats."""
    (mean, logvar, logits), new_state = self.q.apply(
        q_vars, x_prime, train=train, mutable=['batch_stats'] if train else [])
    total = jnp.zeros(x_prime.shape[0], x_prime.dtype)
    if self.mi_gaussian_indices:
      total += losses.gaussian_log_q(q_mean=mean, q_logvar=logvar, target=targets.gaussian)
    for q_logits, target in zip(logits, targets.categorical):
      total += losses.categorical_log_q(q_logits=q_logits, target=target)
    return total, dict(new_state)

  @property
  def num_mi_groups(self) -> int:
    """Target groups in z_sel: the selected Gaussian dims (one group) and each code."""
    return int(bool(self.mi_gaussian_indices)) + len(self.mi_categorical_indices)

  def mi_entropy(self, posterior: latents.PosteriorParams, sample: latents.LatentSample, *,
                 gaussian_kind: str = 'gaussian_prior',
                 axis_name: str | None = None) -> jax.Array:
    """H(z_sel) over the batch, as named by :func:`entropy_kind_label`.

    * One group: a code's plug-in aggregate entropy, or the Gaussian kind chosen.
    * Two or more groups: their JOINT aggregate entropy
      (``entropies.joint_aggregate_entropy_mc``; the sum of separate entropies exceeds it
      by the groups' total correlation, and the "bound" could then exceed the MI),
      except that with ``gaussian_kind='gaussian_prior'`` the Gaussian dims keep the
      prior's entropy, added to the codes' (joint) entropy: the thesis's objective,
      which is not a bound (the aggregate posterior is not the prior).

    With ``axis_name`` the components of the aggregate posterior are those of the whole
    data-parallel batch (codes: averaged probabilities; joint: gathered components), so
    the value does not depend on the device count. (The 'gaussian_aggregate_mc' kind
    of a lone Gaussian group uses the local batch.)
    """
    idx = list(self.mi_gaussian_indices)
    codes = [posterior.logits[i] for i in self.mi_categorical_indices]
    prior = bool(idx) and gaussian_kind == 'gaussian_prior'
    entropy = jnp.zeros((), jnp.float32)
    if prior:
      entropy += entropies.gaussian_prior_entropy(num_dims=len(idx))
    groups = len(codes) + int(bool(idx) and not prior)
    if groups >= 2:
      g_samples = sample.gaussian[:, idx] if not prior else sample.gaussian[:, :0]
      g_mean = posterior.mean[:, idx] if not prior else posterior.mean[:, :0]
      g_logvar = posterior.logvar[:, idx] if not prior else posterior.logvar[:, :0]
      comp_mean, comp_logvar, comp_logits = g_mean, g_logvar, codes
      if axis_name is not None:
        gather = lambda a: jax.lax.all_gather(a, axis_name, tiled=True)
        comp_mean, comp_logvar = gather(g_mean), gather(g_logvar)
        comp_logits = [gather(l) for l in codes]
      terms = entropies.joint_aggregate_entropy_terms(
          samples=g_samples, sample_logits=codes, mean=comp_mean, logvar=comp_logvar,
          logits=comp_logits)
      return entropy + parallel.pmean(jnp.mean(terms), axis_name)
    for logits in codes:
      probs = parallel.pmean(jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), axis_name)
      entropy += -jnp.sum(probs * jnp.log(jnp.clip(probs, 1e-30)))
    if idx and not prior:
      entropy += entropies.gaussian_aggregate_entropy_mc(
          samples=sample.gaussian[:, idx], mean=posterior.mean[:, idx],
          logvar=posterior.logvar[:, idx])
    return entropy

  def kl_per_group(self, posterior: latents.PosteriorParams) -> dict[str, jax.Array]:
    return latents.kl_per_group(posterior, self.latent)


def entropy_kind_label(model: VMIModel, gaussian_kind: str) -> str:
  """Names the H(z_sel) of :meth:`VMIModel.mi_entropy` for ``gaussian_kind``.

  'categorical_aggregate' or 'gaussian_aggregate_mc' (one group),
  'joint_aggregate_mc' (two or more groups, aggregate kind) and, with the prior's
  entropy for the Gaussian dims (not a bound), 'gaussian_prior' or
  'gaussian_prior+categorical_aggregate' / 'gaussian_prior+joint_aggregate_mc'.
  """
  codes = len(model.mi_categorical_indices)
  if model.mi_gaussian_indices and gaussian_kind == 'gaussian_prior':
    rest = {0: [], 1: ['categorical_aggregate']}.get(codes, ['joint_aggregate_mc'])
    return '+'.join(['gaussian_prior'] + rest)
  if model.num_mi_groups >= 2:
    return 'joint_aggregate_mc'
  if model.mi_gaussian_indices:
    return gaussian_kind
  return 'categorical_aggregate' if codes else 'none'


def mi_metric_name(model: VMIModel, gaussian_kind: str) -> str:
  """'mi_bound', or 'mi_objective_prior_entropy' when H(z_sel) uses the prior's entropy
  for Gaussian targets (the thesis's objective: not a bound on the MI)."""
  if model.mi_gaussian_indices and gaussian_kind == 'gaussian_prior':
    return 'mi_objective_prior_entropy'
  return 'mi_bound'


def elbo_metric_name(model: VMIModel, hard: bool) -> str:
  """'elbo_relaxed' for a training ELBO of Gumbel-softmax (relaxed) codes, else 'elbo'.

  'elbo' is always the discrete model's ELBO (no codes, or hard one-hot codes); the
  relaxed one scores soft codes that the discrete model never produces.
  """
  return 'elbo_relaxed' if model.latent.categorical_sizes and not hard else 'elbo'


def local_model(model: VMIModel) -> VMIModel:
  """The same model with every BatchNorm's ``batch_norm_axis`` removed.

  Train-mode BatchNorm with an axis name only runs inside shard_map; evaluation and
  one-device training run without it. Parameter and state trees are unchanged.
  """
  def strip(module):
    return module.clone(batch_norm_axis=None) if module.batch_norm_axis is not None else module

  encoder = model.vae.encoder
  encoder = encoder.clone(trunk=strip(encoder.trunk), code_trunk=(
      strip(encoder.code_trunk) if encoder.code_trunk is not None else None))
  vae = model.vae.clone(encoder=encoder, decoder=strip(model.vae.decoder))
  q = model.q.clone(trunk=strip(model.q.trunk))
  return dataclasses.replace(model, vae=vae, q=q)
