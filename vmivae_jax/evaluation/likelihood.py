"""The likelihood side of evaluation: per-example ELBO terms (:func:`vae_statistics`)
and the importance-weighted estimate of log p(x) (:func:`iwae_log_likelihood`).
Conventions: evaluation/common.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax.data import preprocess
from vmivae_jax.evaluation import common
from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib


@functools.partial(jax.jit, static_argnames=('model', 'relaxed'))
def _eval_batch(model, vae_vars, q_vars_tuple, images, key, temperature, *, relaxed):
  x = preprocess.scale_images(images, model.pixel_range)
  noise = latents.draw_noise(key, model.latent, x.shape[:1])
  # hard=True: the forward value of each code is the Gumbel-max one-hot, an exact draw.
  fwd, _ = model.forward(vae_vars, x, noise, temperature=temperature, hard=True, train=False)
  targets = model.mi_targets(fwd.sample)
  out = dict(mean=fwd.posterior.mean, logvar=fwd.posterior.logvar, logits=fwd.posterior.logits,
             reconstruction=model.reconstruction(fwd, x), kl=model.kl_per_group(fwd.posterior),
             mi_z=targets.gaussian,
             log_q=tuple(model.log_q(q_vars, fwd.x_prime, targets, train=False)[0]
                         for q_vars in q_vars_tuple))
  if relaxed and model.latent.categorical_sizes:
    soft, _ = model.forward(vae_vars, x, noise, temperature=temperature, hard=False, train=False)
    out['reconstruction_relaxed'] = model.reconstruction(soft, x)
  return out


def vae_statistics(model: model_lib.VMIModel, vae_vars: dict, images, *, key: jax.Array,
                   temperature: float, batch_size: int, q_vars: dict[str, dict] | None = None,
                   relaxed: bool = True) -> dict:
  """Per-example posterior parameters, ELBO terms and log Q, one latent sample each.

  Args:
    model, vae_vars: the VAE (run in eval mode).
    images: [N, 28, 28, 1] uint8 or float images.
    key: the draws (example i of batch j uses fold_in(key, j)).
    temperature: Gumbel-softmax temperature of the relaxed sample.
    batch_size: examples per jitted call.
    q_vars: optional {name: Q variables}, each scored on the same samples.
    relaxed: also decode the relaxed (training-style) sample of the codes.

  Returns:
    numpy arrays: 'mean', 'logvar' [N, D], 'logits' (tuple of [N, K_i]),
    'reconstruction' [N] (log p(x|z, c) with exact categorical draws), 'kl'
    {group: [N]} (closed form; with a mixture prior the Gaussian group's term is the
    exact expectation over q(c|x) of KL(q(z|x) || p(z|c))), 'elbo' [N], 'mi_z' [N, S] (the sampled MI-targeted
    Gaussian dims), 'log_q' {name: [N]} (log Q(z_sel|x') of each Q) and, for models
    with codes when ``relaxed``, 'reconstruction_relaxed' / 'elbo_relaxed' (the
    Gumbel-softmax sample at ``temperature``, as in training; same noise).
  """
  model = common.local_model(model)
  names = tuple(q_vars or {})
  q_tuple = tuple(q_vars[n] for n in names)
  out = common.map_batches(
      lambda b, k: _eval_batch(model, vae_vars, q_tuple, b, k, temperature,
                               relaxed=bool(relaxed)),
      images, batch_size, key)
  out['log_q'] = dict(zip(names, out['log_q']))
  kl_total = sum(out['kl'].values())
  out['elbo'] = out['reconstruction'] - kl_total
  if 'reconstruction_relaxed' in out:
    out['elbo_relaxed'] = out['reconstruction_relaxed'] - kl_total
  return out


def _log_likelihood_samples(model, raw, x, output_logvar):
  """[S, B] log p(x_b | latent sample s) from raw decoder outputs [S, B, 28, 28, 1]."""
  if model.likelihood == 'bernoulli':  # all samples in one fused pass
    s, b = raw.shape[:2]
    targets = jnp.broadcast_to(x.reshape(1, b, -1), (s, b, x[0].size))
    return losses.bernoulli_log_likelihood(logits=raw.reshape(s * b, -1),
                                           targets=targets.reshape(s * b, -1)).reshape(s, b)

  def one(raw_s):
    fwd = model_lib.Forward(posterior=None, sample=None, raw_output=raw_s, output_logvar=output_logvar,
                      x_prime=model.decoder_mean(raw_s))
    return model.reconstruction(fwd, x)
  return jax.vmap(one)(raw)


@functools.partial(jax.jit, static_argnames=('model', 'num_samples', 'chunk'))
def _iwae_batch(model, vae_vars, images, key, *, num_samples, chunk):
  x = preprocess.scale_images(images, model.pixel_range)
  b = x.shape[0]
  posterior = model.vae.apply(vae_vars, x, train=False, method=networks.VAE.encode)
  output_logvar = common.output_logvar(model, vae_vars)
  log_probs = tuple(jax.nn.log_softmax(l, axis=-1) for l in posterior.logits)

  def body(carry, i):
    noise = latents.draw_noise(jax.random.fold_in(key, i), model.latent, (chunk, b))
    z = posterior.mean + jnp.exp(0.5 * posterior.logvar) * noise.gaussian  # [S, B, D]
    # Gumbel-max: exact draws of the codes, [S, B] each.
    codes = tuple(jnp.argmax(lp + g, axis=-1) for lp, g in zip(log_probs, noise.gumbel))
    # log p(z | c) - log q(z | x): p(z | c) = N(0, I), or the mixture prior's component
    # of the drawn c.
    log_w = (latents.gaussian_prior_log_density(z, model.latent, posterior.prior, codes)
             - distributions.gaussian_log_density(z, mean=posterior.mean,
                                                  logvar=posterior.logvar))
    parts = [z]
    for lp, c in zip(log_probs, codes):
      k = lp.shape[-1]
      log_q_c = jnp.take_along_axis(jnp.broadcast_to(lp, (chunk,) + lp.shape), c[..., None],
                                    axis=-1)[..., 0]
      log_w += -math.log(k) - log_q_c
      parts.append(jax.nn.one_hot(c, k, dtype=z.dtype))
    code = jnp.concatenate(parts, axis=-1).reshape(chunk * b, -1)
    raw = common.decode_raw(model, vae_vars, code).reshape((chunk, b) + model.image_shape)
    log_w += _log_likelihood_samples(model, raw, x, output_logvar)
    return carry, jax.nn.logsumexp(log_w, axis=0)                      # [B]

  _, chunk_lse = jax.lax.scan(body, None, jnp.arange(num_samples // chunk))
  return jax.nn.logsumexp(chunk_lse, axis=0) - math.log(num_samples)


# Decoded rows (chunk x images) per scan step of the IWAE: about 10k keeps the decoder's
# activations near the caches; 125k rows ran 20% slower (benchmarks/README.md).
IWAE_ROWS_PER_DECODE = 10_000


def iwae_batch_size(chunk: int, max_batch_size: int) -> int:
  """Images per IWAE batch so that each decoder call sees ~IWAE_ROWS_PER_DECODE rows."""
  return max(1, min(max_batch_size, IWAE_ROWS_PER_DECODE // chunk))


def iwae_log_likelihood(model: model_lib.VMIModel, vae_vars: dict, images, *, num_samples: int,
                        chunk: int, key: jax.Array, batch_size: int) -> np.ndarray:
  """[N] importance-weighted estimates of log p(x) in nats (Burda et al., 2016).

  log p(x) ~= logmeanexp_k [log p(x|z_k, c_k) + log p(z_k|c_k) + log p(c_k)
                            - log q(z_k|x) - log q(c_k|x)],
  with z_k ~ q(z|x) and each code c_k drawn exactly from Cat(q(c|x)) (Gumbel-max),
  p(c) = 1/K, and p(z|c) = N(0, I), or with a mixture prior N(mu_c, sigma_c^2) for the
  drawn value of the conditioning code. A lower bound on log p(x) in expectation, tightening as k grows; k = 1
  is an unbiased estimate of the ELBO.

  The encoder runs once per batch of ``batch_size`` examples; ``lax.scan`` then runs
  ``num_samples // chunk`` steps, each decoding ``chunk * batch_size`` codes in one
  call, so memory is bounded by that product and the function compiles once.

  Raises:
    ValueError: the model's likelihood is 'mse' (not a normalised density), or
      ``chunk`` does not divide ``num_samples``.
  """
  if model.likelihood == 'mse':
    raise ValueError("likelihood 'mse' is not a normalised density: no log-likelihood")
  if num_samples < 1 or chunk < 1 or num_samples % chunk:
    raise ValueError(f'chunk={chunk} must divide num_samples={num_samples}')
  model = common.local_model(model)
  return common.map_batches(
      lambda b, k: _iwae_batch(model, vae_vars, b, k, num_samples=int(num_samples),
                               chunk=int(chunk)),
      images, batch_size, key)
