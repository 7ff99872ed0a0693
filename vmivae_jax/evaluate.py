"""Metrics of a trained VMI-VAE on the test split, and the arrays behind the figures.

``evaluate_workdir(workdir)`` restores a run's checkpoint and writes
``WORKDIR/eval/metrics.json`` (plus ``assignments.npz`` and the PNG figures). The
pieces are public and usable on any ``(model, vae_vars)`` pair:

* :func:`vae_statistics`: per-example posterior, reconstruction and KL (ELBO terms);
* :func:`iwae_log_likelihood`: the importance-weighted estimate of log p(x) (Burda et al.);
* :func:`train_fresh_q`, :func:`mi_bounds`, :func:`fresh_q_mi_bound`: the Barber-Agakov
  bound of thesis eq 4.8 with a Q trained from scratch on the frozen VAE;
* :func:`accuracy_hungarian`, :func:`accuracy_majority`,
  :func:`normalized_mutual_information`, :func:`adjusted_rand_index`: clustering scores
  of the categorical code (numpy; no sklearn);
* :func:`active_units`, :func:`latent_influence`: how many / how strongly latent dims are used.

Conventions:

* The VAE runs in eval mode (``train=False``: BatchNorm uses its running averages);
  a Q trained here runs in train mode while training and eval mode when scored.
  Models are used with ``batch_norm_axis=None`` (:func:`local_model`) so nothing
  needs a device mesh; the parameter trees are the same.
* Categorical codes are sampled as true categorical draws (Gumbel-max: the hard
  one-hot of ``gumbel_softmax_sample(..., hard=True)``), everywhere in evaluation:
  the ELBO, the IWAE and the MI bounds are then statements about the discrete
  latent model, and the bound on I(c; x') is a bound for the discrete code c. (The
  training objective uses the relaxed sample; ``elbo_relaxed`` reports that one.)
  The classification code of an example is the argmax of q(c|x) (deterministic).
* Every random draw comes from ``jax.random`` keys derived from ``config.seed`` by
  ``fold_in``: evaluating the same checkpoint twice gives the same numbers.
* Functions that take images accept uint8 [N, 28, 28, 1] (scaled to the model's pixel
  range inside the jitted code) or float images already in that range.
"""

import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
from absl import logging

from vmivae_jax import data
from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax import networks
from vmivae_jax import objectives
from vmivae_jax import trainer
from vmivae_jax import validation
from vmivae_jax import model as model_lib
from vmivae_jax import workdir as workdir_lib

EVAL_DIR = 'eval'
METRICS_JSON = 'metrics.json'
ASSIGNMENTS_NPZ = 'assignments.npz'
ACTIVE_UNIT_THRESHOLD = 0.01
INFLUENCE_DELTA = 1.0

# All evaluation randomness: fold_in(PRNGKey(config.seed), _EVAL_STREAM), then one
# fold_in per purpose. (Training uses split(PRNGKey(seed)), so the streams differ.)
_EVAL_STREAM = 0x5EA1
_PURPOSES = ('elbo', 'iwae', 'q_train', 'binarize')

MI_BOUND_NOTE = (
    'Barber-Agakov bound E[log Q(z_sel|x\')] + H(z_sel) (thesis eq 4.8) on the test split, '
    'one sample per example, VAE in eval mode. Categorical codes are sampled as exact '
    'categorical draws (Gumbel-max, hard one-hot), so the bound is on I(c; x\') of the '
    'discrete code; H(c) is the plug-in entropy of mean_x q(c|x) over the test set. '
    'mi_bound uses a fresh Q trained on the frozen VAE (eval.q_train_steps of Adam on '
    'training images); mi_bound_training_q uses the run\'s own Q on the same samples.')


def eval_keys(seed: int) -> dict[str, jax.Array]:
  """The evaluation's keys, one per purpose, all derived from ``seed`` by fold_in."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), _EVAL_STREAM)
  return {name: jax.random.fold_in(base, i) for i, name in enumerate(_PURPOSES)}


# ----------------------------------------------------------------------------------
# Models and images.


local_model = model_lib.local_model


def _flat_draw(sampler, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``sampler(key, shape)`` drawn as one flat vector and reshaped.

  XLA:CPU compiles the (partitionable, the default) threefry generator for a
  multi-dimensional shape several times slower than for a 1-D one (seconds per call
  site), so every draw here is made flat. Partitionable threefry numbers the output
  elements in row-major order, so the values equal those of ``sampler(key, shape)``.
  """
  return sampler(key, (math.prod(shape),)).reshape(shape)


def draw_noise(key: jax.Array, spec: latents.LatentSpec, batch_shape: tuple[int, ...]
               ) -> latents.LatentNoise:
  """Like ``latents.draw_noise`` for any leading ``batch_shape``, with flat draws."""
  keys = jax.random.split(key, 1 + len(spec.categorical_sizes))
  return latents.LatentNoise(
      gaussian=_flat_draw(jax.random.normal, keys[0], batch_shape + (spec.gaussian_dims,)),
      gumbel=tuple(_flat_draw(jax.random.gumbel, k, batch_shape + (size,))
                   for k, size in zip(keys[1:], spec.categorical_sizes)))


def _to_float(images: jax.Array, pixel_range: tuple[float, float]) -> jax.Array:
  """uint8 -> float32 in ``pixel_range``; float images pass through (as float32)."""
  if images.dtype == jnp.uint8:
    low, high = pixel_range
    return low + (high - low) * images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def binarize_images(images_uint8: np.ndarray, key: jax.Array) -> np.ndarray:
  """A fixed stochastic binarisation (pixel ~ Bernoulli(intensity)) of uint8 images."""
  u = np.asarray(_flat_draw(jax.random.uniform, key, images_uint8.shape))
  return (u < images_uint8.astype(np.float32) / 255.0).astype(np.float32)


def _map_batches(fn, images: np.ndarray, batch_size: int, key: jax.Array):
  """Applies ``fn(batch, key_i)`` to fixed-size batches (the last one padded, so one
  compilation serves all) and concatenates the per-example outputs, trimmed to N."""
  n = len(images)
  if n == 0:
    raise ValueError('no images to evaluate')
  batch_size = max(1, min(int(batch_size), n))
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  images = np.asarray(images)
  if pad:
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  outputs = [fn(images[i * batch_size:(i + 1) * batch_size], jax.random.fold_in(key, i))
             for i in range(num_batches)]
  outputs = jax.device_get(outputs)
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outputs)


def _output_logvar(model: model_lib.VMIModel, vae_vars: dict):
  return vae_vars['params']['output_logvar'] if model.vae.learn_output_logvar else None


def _decode_raw(model: model_lib.VMIModel, vae_vars: dict, code: jax.Array) -> jax.Array:
  return model.vae.apply(vae_vars, code, train=False, method=networks.VAE.decode)


@functools.partial(jax.jit, static_argnames=('model',))
def decode_mean(model: model_lib.VMIModel, vae_vars: dict, code: jax.Array) -> jax.Array:
  """x' = the decoder mean image [B, 28, 28, 1] of latent codes [B, code_size]."""
  return model.decoder_mean(_decode_raw(model, vae_vars, code))


# ----------------------------------------------------------------------------------
# ELBO terms.


@functools.partial(jax.jit, static_argnames=('model', 'relaxed'))
def _eval_batch(model, vae_vars, q_vars_tuple, images, key, temperature, *, relaxed):
  x = _to_float(images, model.pixel_range)
  noise = draw_noise(key, model.latent, x.shape[:1])
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
    {group: [N]} (closed form), 'elbo' [N], 'mi_z' [N, S] (the sampled MI-targeted
    Gaussian dims), 'log_q' {name: [N]} (log Q(z_sel|x') of each Q) and, for models
    with codes when ``relaxed``, 'reconstruction_relaxed' / 'elbo_relaxed' (the
    Gumbel-softmax sample at ``temperature``, as in training; same noise).
  """
  model = local_model(model)
  names = tuple(q_vars or {})
  q_tuple = tuple(q_vars[n] for n in names)
  out = _map_batches(
      lambda b, k: _eval_batch(model, vae_vars, q_tuple, b, k, temperature,
                               relaxed=bool(relaxed)),
      images, batch_size, key)
  out['log_q'] = dict(zip(names, out['log_q']))
  kl_total = sum(out['kl'].values())
  out['elbo'] = out['reconstruction'] - kl_total
  if 'reconstruction_relaxed' in out:
    out['elbo_relaxed'] = out['reconstruction_relaxed'] - kl_total
  return out


# ----------------------------------------------------------------------------------
# Importance-weighted log-likelihood.


def _log_likelihood_samples(model, raw, x, output_logvar):
  """[S, B] log p(x_b | latent sample s) from raw decoder outputs [S, B, 28, 28, 1]."""
  if model.likelihood == 'bernoulli':
    # x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l), with softplus(l) =
    # max(l, 0) + log1p(exp(-|l|)) written out: one fused pass, ~3x faster on CPU than
    # jax.nn.softplus (logaddexp) and ~7x faster than two log_sigmoid calls.
    s, b = raw.shape[:2]
    raw = raw.reshape(s, b, -1)
    softplus = jnp.maximum(raw, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(raw)))
    return jnp.sum(raw * x.reshape(1, b, -1) - softplus, axis=-1)

  def one(raw_s):
    fwd = model_lib.Forward(posterior=None, sample=None, raw_output=raw_s, output_logvar=output_logvar,
                      x_prime=model.decoder_mean(raw_s))
    return model.reconstruction(fwd, x)
  return jax.vmap(one)(raw)


@functools.partial(jax.jit, static_argnames=('model', 'num_samples', 'chunk'))
def _iwae_batch(model, vae_vars, images, key, *, num_samples, chunk):
  x = _to_float(images, model.pixel_range)
  b = x.shape[0]
  posterior = model.vae.apply(vae_vars, x, train=False, method=networks.VAE.encode)
  output_logvar = _output_logvar(model, vae_vars)
  log_probs = tuple(jax.nn.log_softmax(l, axis=-1) for l in posterior.logits)

  def body(carry, i):
    noise = draw_noise(jax.random.fold_in(key, i), model.latent, (chunk, b))
    z = posterior.mean + jnp.exp(0.5 * posterior.logvar) * noise.gaussian  # [S, B, D]
    log_w = (distributions.gaussian_log_density(z, mean=jnp.zeros(()), logvar=jnp.zeros(()))
             - distributions.gaussian_log_density(z, mean=posterior.mean,
                                                  logvar=posterior.logvar))
    parts = [z]
    for lp, gumbel in zip(log_probs, noise.gumbel):
      k = lp.shape[-1]
      c = jnp.argmax(lp + gumbel, axis=-1)                   # Gumbel-max: an exact draw
      log_q_c = jnp.take_along_axis(jnp.broadcast_to(lp, (chunk,) + lp.shape), c[..., None],
                                    axis=-1)[..., 0]
      log_w += -math.log(k) - log_q_c
      parts.append(jax.nn.one_hot(c, k, dtype=z.dtype))
    code = jnp.concatenate(parts, axis=-1).reshape(chunk * b, -1)
    raw = _decode_raw(model, vae_vars, code).reshape((chunk, b) + networks.IMAGE_SHAPE)
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

  log p(x) ~= logmeanexp_k [log p(x|z_k, c_k) + log p(z_k) + log p(c_k)
                            - log q(z_k|x) - log q(c_k|x)],
  with z_k ~ q(z|x) and each code c_k drawn exactly from Cat(q(c|x)) (Gumbel-max),
  p(c) = 1/K. A lower bound on log p(x) in expectation, tightening as k grows; k = 1
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
  model = local_model(model)
  return _map_batches(
      lambda b, k: _iwae_batch(model, vae_vars, b, k, num_samples=int(num_samples),
                               chunk=int(chunk)),
      images, batch_size, key)


# ----------------------------------------------------------------------------------
# The MI lower bound with a fresh Q (thesis eq 4.8).


@functools.partial(jax.jit, static_argnames=('model',))
def _init_q(model, key):
  return model.q.init(key, jnp.zeros((2,) + networks.IMAGE_SHAPE, jnp.float32), train=False)


def init_q(model: model_lib.VMIModel, key: jax.Array) -> dict:
  """Fresh Q variables from ``key`` (jitted: one compilation instead of one per op)."""
  return dict(_init_q(local_model(model), key))


@functools.partial(jax.jit,
                   static_argnames=('model', 'steps', 'batch_size', 'learning_rate', 'binarize'))
def _train_q(model, vae_vars, q_vars, train_images, key, temperature, *, steps, batch_size,
             learning_rate, binarize):
  tx = optax.adam(learning_rate)
  params = q_vars['params']
  state = {k: v for k, v in q_vars.items() if k != 'params'}
  n = train_images.shape[0]

  def step(carry, i):
    params, state, opt_state = carry
    k_index, k_noise, k_binarize = jax.random.split(jax.random.fold_in(key, i), 3)
    index = jax.random.randint(k_index, (batch_size,), 0, n)
    x = _to_float(train_images[index], model.pixel_range)
    if binarize:
      x = (_flat_draw(jax.random.uniform, k_binarize, x.shape) < x).astype(jnp.float32)
    noise = draw_noise(k_noise, model.latent, (batch_size,))
    fwd, _ = model.forward(vae_vars, x, noise, temperature=temperature, hard=True, train=False)
    (loss, aux), grads = jax.value_and_grad(objectives.q_objective, has_aux=True)(
        params, q_state=state, model=model, x_prime=fwd.x_prime,
        targets=model.mi_targets(fwd.sample))
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), aux['q_state'], opt_state), loss

  (params, state, _), q_losses = jax.lax.scan(step, (params, state, tx.init(params)),
                                              jnp.arange(steps))
  return {'params': params, **state}, q_losses


def train_fresh_q(model: model_lib.VMIModel, vae_vars: dict, train_images, *, steps: int,
                  batch_size: int, learning_rate: float, key: jax.Array, temperature: float,
                  binarize: bool = False) -> tuple[dict, np.ndarray]:
  """Trains a Q from scratch on the frozen VAE: ``steps`` Adam steps on -E log Q(z_sel|x').

  Q is initialised from ``fold_in(key, 0)``; minibatches (drawn with replacement from
  ``train_images``) and latent samples come from ``fold_in(key, 1)``. Codes are exact
  categorical draws. Returns Q's variables and the [steps] training losses.
  """
  model = local_model(model)
  if not model.has_mi_targets:
    raise ValueError('the model has no MI targets (mi.gaussian_indices and '
                     'mi.categorical_indices are empty): there is nothing for Q to predict')
  q_vars = init_q(model, jax.random.fold_in(key, 0))
  q_vars, q_losses = _train_q(model, vae_vars, q_vars, jnp.asarray(train_images),
                              jax.random.fold_in(key, 1), jnp.float32(temperature),
                              steps=int(steps), batch_size=int(batch_size),
                              learning_rate=float(learning_rate), binarize=bool(binarize))
  return q_vars, np.asarray(q_losses)


@jax.jit
def _log_aggregate_density(z_rows, mean, logvar):
  pairwise = distributions.gaussian_log_density(z_rows[:, None, :], mean=mean[None],
                                                logvar=logvar[None])      # [R, N]
  return jax.nn.logsumexp(pairwise, axis=1) - jnp.log(mean.shape[0])


def gaussian_aggregate_entropy(samples: np.ndarray, mean: np.ndarray, logvar: np.ndarray, *,
                               max_pairs: int = 4_000_000) -> float:
  """``losses.gaussian_aggregate_entropy_mc`` over a whole set, in row chunks.

  -(1/N) sum_i log((1/N) sum_j N(z_i; mean_j, exp(logvar_j))): the N x N pairwise
  densities are computed ``max_pairs // N`` rows at a time, so memory stays bounded.
  """
  samples, mean, logvar = (np.asarray(a, np.float32) for a in (samples, mean, logvar))
  n = len(samples)
  rows = max(1, min(n, max_pairs // max(n, 1)))
  out = _map_batches(lambda zr, _: _log_aggregate_density(zr, mean, logvar), samples, rows,
                     jax.random.PRNGKey(0))
  return float(-np.mean(out.astype(np.float64)))


def _softmax(logits) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return probs / probs.sum(axis=-1, keepdims=True)


def categorical_entropy_of_mean(probs: np.ndarray) -> float:
  """H(mean_x q(c|x)) from [N, K] probabilities (float64 plug-in entropy)."""
  p = np.mean(np.asarray(probs, np.float64), axis=0)
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


def mi_bounds_from_statistics(model: model_lib.VMIModel, stats: dict, *,
                              gaussian_entropy: str = 'gaussian_prior') -> dict:
  """Barber-Agakov bounds E log Q + H(z_sel) from :func:`vae_statistics` output.

  The categorical entropy is the plug-in H(mean_x q(c|x)) over the evaluated set; for
  Gaussian targets both the prior entropy and the Monte Carlo aggregate entropy
  (:func:`gaussian_aggregate_entropy`, whole set) are computed, ``gaussian_entropy``
  picking the one in the main bound.

  Returns:
    {'entropy', 'entropy_kind', 'entropy_aggregate_mc' (Gaussian targets only), and for
    each Q name: name: bound, f'{name}/log_q': E log Q, f'{name}/aggregate_mc': bound
    with the aggregate entropy (Gaussian targets only)}, in nats.
  """
  entropy = sum(categorical_entropy_of_mean(_softmax(stats['logits'][i]))
                for i in model.mi_categorical_indices)
  out = {}
  if model.mi_gaussian_indices:
    idx = list(model.mi_gaussian_indices)
    aggregate_h = entropy + gaussian_aggregate_entropy(stats['mi_z'], stats['mean'][:, idx],
                                                       stats['logvar'][:, idx])
    prior_h = entropy + losses.gaussian_prior_entropy(num_dims=len(idx))
    entropy = prior_h if gaussian_entropy == 'gaussian_prior' else aggregate_h
    out['entropy_aggregate_mc'] = aggregate_h
  out.update(entropy=float(entropy), entropy_kind=model_lib.entropy_kind_label(model, gaussian_entropy))
  for name, log_q in stats['log_q'].items():
    mean_log_q = float(np.mean(log_q.astype(np.float64)))
    out[name] = mean_log_q + float(entropy)
    out[f'{name}/log_q'] = mean_log_q
    if model.mi_gaussian_indices:
      out[f'{name}/aggregate_mc'] = mean_log_q + out['entropy_aggregate_mc']
  return out


def mi_bounds(model: model_lib.VMIModel, vae_vars: dict, q_vars: dict[str, dict], images, *,
              key: jax.Array, temperature: float, batch_size: int,
              gaussian_entropy: str = 'gaussian_prior') -> dict:
  """Barber-Agakov bounds of one or more Q networks, on the same latent samples.

  One sample per example of ``images``; codes are exact categorical draws. See
  :func:`mi_bounds_from_statistics` for the returned keys.
  """
  stats = vae_statistics(model, vae_vars, images, key=key, temperature=temperature,
                         batch_size=batch_size, q_vars=q_vars, relaxed=False)
  return mi_bounds_from_statistics(model, stats, gaussian_entropy=gaussian_entropy)


def fresh_q_mi_bound(model: model_lib.VMIModel, vae_vars: dict, train_images, test_images, *,
                     steps: int, batch_size: int, learning_rate: float, key: jax.Array,
                     temperature: float, eval_batch_size: int = 500, binarize: bool = False,
                     gaussian_entropy: str = 'gaussian_prior') -> dict:
  """The MI bound of thesis eq 4.8 for a frozen VAE, with a Q trained from scratch.

  Trains a fresh Q (:func:`train_fresh_q`, ``fold_in(key, 0)``) on ``train_images``, then
  scores it on ``test_images`` (:func:`mi_bounds`, ``fold_in(key, 1)``).

  Returns:
    {'mi_bound', 'log_q', 'entropy', 'entropy_kind', 'q_loss_first', 'q_loss_last',
    'steps'} and, for Gaussian targets, 'mi_bound_aggregate_mc' and
    'entropy_aggregate_mc'. Values in nats. For a single K-way code the bound is
    <= log K.
  """
  q_vars, q_losses = train_fresh_q(model, vae_vars, train_images, steps=steps,
                                   batch_size=batch_size, learning_rate=learning_rate,
                                   key=jax.random.fold_in(key, 0), temperature=temperature,
                                   binarize=binarize)
  bounds = mi_bounds(model, vae_vars, {'fresh': q_vars}, test_images,
                     key=jax.random.fold_in(key, 1), temperature=temperature,
                     batch_size=eval_batch_size, gaussian_entropy=gaussian_entropy)
  out = dict(mi_bound=bounds['fresh'], log_q=bounds['fresh/log_q'], entropy=bounds['entropy'],
             entropy_kind=bounds['entropy_kind'], q_loss_first=float(q_losses[0]),
             q_loss_last=float(q_losses[-1]), steps=int(steps))
  if 'fresh/aggregate_mc' in bounds:
    out.update(mi_bound_aggregate_mc=bounds['fresh/aggregate_mc'],
               entropy_aggregate_mc=bounds['entropy_aggregate_mc'])
  return out


# ----------------------------------------------------------------------------------
# Clustering scores of a categorical code (numpy).


def count_matrix(labels: np.ndarray, codes: np.ndarray, *, num_labels: int | None = None,
                 num_codes: int | None = None) -> np.ndarray:
  """[L, K] int64 matrix: number of examples with label l and code k."""
  labels = np.asarray(labels, np.int64)
  codes = np.asarray(codes, np.int64)
  num_labels = int(labels.max()) + 1 if num_labels is None else num_labels
  num_codes = int(codes.max()) + 1 if num_codes is None else num_codes
  counts = np.zeros((num_labels, num_codes), np.int64)
  np.add.at(counts, (labels, codes), 1)
  return counts


def _contingency(labels, codes) -> np.ndarray:
  """Count matrix over the values that occur (any integer labels)."""
  _, l = np.unique(np.asarray(labels), return_inverse=True)
  _, c = np.unique(np.asarray(codes), return_inverse=True)
  return count_matrix(l.ravel(), c.ravel())


def accuracy_hungarian(labels: np.ndarray, codes: np.ndarray) -> float:
  """Accuracy of the best one-to-one code -> label map (linear_sum_assignment).

  With more codes than labels (or the reverse) the extra ones match nothing and
  count as errors.
  """
  counts = _contingency(labels, codes)
  rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / counts.sum())


def accuracy_majority(labels: np.ndarray, codes: np.ndarray) -> float:
  """Accuracy of the many-to-one map: each code -> its most frequent label."""
  counts = _contingency(labels, codes)
  return float(counts.max(axis=0).sum() / counts.sum())


def _entropy_of_counts(counts: np.ndarray) -> float:
  p = counts[counts > 0].astype(np.float64) / counts.sum()
  return float(-np.sum(p * np.log(p)))


def normalized_mutual_information(labels: np.ndarray, codes: np.ndarray) -> float:
  """NMI = I(labels; codes) / mean(H(labels), H(codes)) (sklearn's default, 'arithmetic').

  1 for identical partitions (up to renaming), 0 for independent ones; 1 when both
  are a single cluster, 0 when only one of them is.
  """
  counts = _contingency(labels, codes)
  if counts.shape[0] == counts.shape[1] == 1:
    return 1.0
  n = counts.sum()
  pij = counts.astype(np.float64) / n
  pi = pij.sum(axis=1, keepdims=True)
  pj = pij.sum(axis=0, keepdims=True)
  nz = pij > 0
  mi = float(np.sum(pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])))
  normaliser = 0.5 * (_entropy_of_counts(counts.sum(axis=1)) +
                      _entropy_of_counts(counts.sum(axis=0)))
  return float(max(mi, 0.0) / max(normaliser, np.finfo(np.float64).eps))


def adjusted_rand_index(labels: np.ndarray, codes: np.ndarray) -> float:
  """Adjusted Rand index (Hubert & Arabie), as sklearn computes it (pair counts).

  1 for identical partitions, ~0 in expectation for independent ones, can be < 0.
  Exact integer arithmetic for the pair counts.
  """
  counts = _contingency(labels, codes)
  n = int(counts.sum())
  sum_squares = int(np.sum(counts.astype(object) ** 2))
  row = counts.sum(axis=1).astype(object)
  col = counts.sum(axis=0).astype(object)
  tp = sum_squares - n
  fp = int(np.sum(counts.astype(object) @ col)) - sum_squares
  fn = int(np.sum(counts.T.astype(object) @ row)) - sum_squares
  tn = n * n - fp - fn - sum_squares
  if fn == 0 and fp == 0:
    return 1.0
  return float(2 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


# ----------------------------------------------------------------------------------
# Use of the Gaussian latent dims.


def active_units(posterior_means: np.ndarray, *,
                 threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, np.ndarray]:
  """Burda et al.'s active units: dims u with Cov_x(E_q[z_u | x]) > threshold.

  Args:
    posterior_means: [N, D] E_q[z | x] for N examples.
    threshold: activity threshold (0.01 in Burda et al.).

  Returns:
    (number of active dims, [D] variances over the examples).
  """
  variances = np.var(np.asarray(posterior_means, np.float64), axis=0)
  return int(np.sum(variances > threshold)), variances


@functools.partial(jax.jit, static_argnames=('model',))
def _influence_batch(model, vae_vars, gaussian, categorical, delta):
  """[B, D] mean |x'(mu + delta e_d) - x'(mu - delta e_d)| / (2 delta) over pixels."""
  b, d = gaussian.shape
  shift = delta * jnp.eye(d, dtype=gaussian.dtype)                         # [D, D]
  moved = jnp.stack([gaussian[None] + shift[:, None], gaussian[None] - shift[:, None]])
  cat = jnp.broadcast_to(categorical, (2, d) + categorical.shape)
  code = jnp.concatenate([moved, cat], axis=-1).reshape(2 * d * b, -1)
  x_prime = decode_mean(model, vae_vars, code).reshape(2, d, b, -1)
  change = jnp.mean(jnp.abs(x_prime[0] - x_prime[1]), axis=-1) / (2.0 * delta)  # [D, B]
  return change.T


def latent_influence(model: model_lib.VMIModel, vae_vars: dict, posterior_means: np.ndarray,
                     posterior_logits: tuple = (), *, delta: float = INFLUENCE_DELTA,
                     max_decodes: int = 16384) -> np.ndarray:
  """[D] mean absolute per-pixel change of x' per unit change of each Gaussian dim.

  Central finite difference at the posterior mean of each example,
  |x'(mu + delta e_d) - x'(mu - delta e_d)| / (2 delta), averaged over pixels and
  examples; codes are fixed at the posterior mode (one-hot argmax of q(c|x)). In
  units of the pixel range (divided by high - low), so [0, 1] and [-1, 1] models
  compare. Each jitted call decodes about ``max_decodes`` codes (2 D per example).
  """
  model = local_model(model)
  means = np.asarray(posterior_means, np.float32)
  cat = np.concatenate(
      [np.zeros((len(means), 0), np.float32)] +
      [np.eye(l.shape[-1], dtype=np.float32)[np.argmax(l, -1)] for l in posterior_logits],
      axis=-1)
  joint = np.concatenate([means, cat], axis=-1)
  d = means.shape[1]
  per_example = _map_batches(
      lambda b, _: _influence_batch(model, vae_vars, b[:, :d], b[:, d:], jnp.float32(delta)),
      joint, max(1, max_decodes // max(2 * d, 1)), jax.random.PRNGKey(0))
  low, high = model.pixel_range
  return np.mean(per_example.astype(np.float64), axis=0) / (high - low)


# ----------------------------------------------------------------------------------
# Arrays behind the figures.


def _codes(gaussian: np.ndarray, categorical: list[np.ndarray]) -> np.ndarray:
  return np.concatenate([gaussian] + categorical, axis=-1).astype(np.float32)


def _to_unit(images, pixel_range) -> np.ndarray:
  low, high = pixel_range
  return np.clip((np.asarray(images, np.float32) - low) / (high - low), 0.0, 1.0)


def traversal_dims(model: model_lib.VMIModel) -> tuple[int, ...]:
  """The Gaussian dims the traversal figures vary: the MI-targeted ones (two for the
  grid, completed by the lowest other dims), else dims 0 and 1."""
  d = model.latent.gaussian_dims
  dims = list(model.mi_gaussian_indices[:2])
  for i in range(d):
    if len(dims) >= 2:
      break
    if i not in dims:
      dims.append(i)
  return tuple(dims)


def _decode_unit(model, vae_vars, codes, pixel_range):
  return _to_unit(np.asarray(decode_mean(model, vae_vars, jnp.asarray(codes))), pixel_range)


def figure_arrays(model: model_lib.VMIModel, vae_vars: dict, stats: dict, test_images_float,
                  *, code_index: int | None, num_examples: int, traversal_range: float,
                  traversal_steps: int) -> dict:
  """Decoded images for the traversal and category figures, in [0, 1].

  Latents not varied are at the posterior mean (Gaussian) or mode (codes).
  """
  model = local_model(model)
  pr = model.pixel_range
  n = min(max(num_examples, 1), len(test_images_float))
  means = np.asarray(stats['mean'][:n], np.float32)
  modes = [np.eye(l.shape[-1], dtype=np.float32)[np.argmax(l[:n], -1)] for l in stats['logits']]
  values = np.linspace(-traversal_range, traversal_range, traversal_steps).astype(np.float32)
  out = {'originals': _to_unit(test_images_float[:n], pr), 'values': values}
  dims = traversal_dims(model)
  mi_dims = tuple(model.mi_gaussian_indices) or dims
  pieces = []  # (key, codes, image-grid shape): decoded together in one call
  if len(dims) == 2:
    a, b = dims
    g = np.repeat(means[:1], traversal_steps ** 2, axis=0)
    g[:, a] = np.repeat(values, traversal_steps)
    g[:, b] = np.tile(values, traversal_steps)
    pieces.append(('grid', _codes(g, [np.repeat(m[:1], len(g), axis=0) for m in modes]),
                   (traversal_steps, traversal_steps)))
    out['grid_dims'] = (a, b)
  if mi_dims:
    for d in mi_dims:
      g = np.repeat(means, traversal_steps, axis=0)                   # [n * S, D]
      g[:, d] = np.tile(values, n)
      pieces.append((('rows', d), _codes(g, [np.repeat(m, traversal_steps, axis=0)
                                              for m in modes]), (n, traversal_steps)))
    out['rows_dims'] = tuple(mi_dims)
  if code_index is not None:
    k = model.latent.categorical_sizes[code_index]
    g = np.repeat(means, k, axis=0)
    cats = [np.repeat(m, k, axis=0) for m in modes]
    cats[code_index] = np.tile(np.eye(k, dtype=np.float32), (n, 1))
    pieces.append(('categories', _codes(g, cats), (n, k)))
  if pieces:
    decoded = _decode_unit(model, vae_vars, np.concatenate([c for _, c, _ in pieces]), pr)
    start = 0
    for key, codes, shape in pieces:
      out[key] = decoded[start:start + len(codes)].reshape(shape + networks.IMAGE_SHAPE)
      start += len(codes)
  if mi_dims:
    out['rows'] = np.stack([out.pop(('rows', d)) for d in mi_dims])
  return out


# ----------------------------------------------------------------------------------
# The workdir evaluation.


def _jsonable(value):
  """Python floats/ints/lists for JSON; non-finite floats become null."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating, jax.Array)):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def _load(workdir: Path, step: int | None):
  """The run's config, after the same checks as eval.py (``workdir.check_evaluable``:
  a train.py workdir with a checkpoint, or with ``step``) and full validation."""
  config = workdir_lib.check_evaluable(workdir, step)
  validation.validate(config)  # with paths: the data directory must exist here
  return config


def evaluate_workdir(workdir: str | Path, step: int | None = None, *,
                     make_figures: bool = True) -> dict:
  """Evaluates a run's checkpoint on the test split; writes and returns the metrics.

  Writes ``WORKDIR/eval/metrics.json``, ``assignments.npz`` (codes with labels, for
  models with a categorical code) and, with ``make_figures``, the PNG figures.

  Raises:
    workdir.WorkdirError: no such workdir, no config, no checkpoint (or not ``step``).
    validation.ConfigError: the stored config is invalid here (e.g. its data_dir).
    data.DataError: the data cannot be read.
  """
  start = time.time()
  workdir = Path(workdir)
  config = _load(workdir, step)
  test = data.load_split(config.dataset, 'test', data_dir=config.data_dir,
                         limit=config.test_limit or None)
  train_images = data.load_split(config.dataset, 'train', data_dir=config.data_dir,
                                 limit=config.train_limit or None).images
  run = trainer.build_run(config, num_train_examples=len(train_images))
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    state = workdir_lib.restore_checkpoint(manager, run.abstract_state(), step)
  finally:
    workdir_lib.close(manager)
  if state is None:
    raise workdir_lib.WorkdirError(f'{workdir}: no checkpoint to evaluate')
  restored_step = int(state.step)
  model = local_model(run.model)
  vae_vars = {'params': state.vae_params, **state.vae_state}
  training_q_vars = {'params': state.q_params, **state.q_state}
  temperature = float(run.step_statics.temperature(restored_step))
  keys = eval_keys(int(config.seed))
  e = config.eval
  batch_size = int(e.batch_size)
  pixel_range = model.pixel_range
  binarize = bool(config.binarize)
  low, high = pixel_range
  test_x = (binarize_images(test.images, keys['binarize']) if binarize
            else (low + (high - low) * test.images.astype(np.float32) / 255.0))
  logging.info('Evaluating %s step %d on %d test examples (%s).', workdir, restored_step,
               len(test_x), config.dataset)

  metrics = {'step': restored_step, 'dataset': config.dataset,
             'num_test_examples': len(test_x), 'temperature': temperature,
             'binarized_test_set': binarize}

  # A fresh Q for the MI bound (eq 4.8), trained on the frozen VAE first, so that one
  # pass over the test set serves the ELBO terms and both Q's bounds (same samples).
  q_vars, q_losses = {}, None
  if model.has_mi_targets:
    t0 = time.time()
    fresh_q, q_losses = train_fresh_q(
        model, vae_vars, train_images, steps=int(e.q_train_steps),
        batch_size=int(e.q_batch_size), learning_rate=float(e.q_learning_rate),
        key=keys['q_train'], temperature=temperature, binarize=binarize)
    q_vars = {'fresh': fresh_q, 'training': training_q_vars}
    logging.info('Fresh Q (%d steps): %.1fs', e.q_train_steps, time.time() - t0)

  # ELBO terms and log Q on the test set.
  t0 = time.time()
  stats = vae_statistics(model, vae_vars, test_x, key=keys['elbo'], temperature=temperature,
                         batch_size=batch_size, q_vars=q_vars)
  metrics.update(elbo=np.mean(stats['elbo']), reconstruction=np.mean(stats['reconstruction']),
                 kl={g: np.mean(v) for g, v in stats['kl'].items()},
                 kl_total=np.mean(sum(stats['kl'].values())))
  if 'elbo_relaxed' in stats:
    metrics.update(elbo_relaxed=np.mean(stats['elbo_relaxed']),
                   reconstruction_relaxed=np.mean(stats['reconstruction_relaxed']))
  if model.likelihood == 'mse':
    metrics['elbo_note'] = ("likelihood 'mse': reconstruction is -mean squared error per "
                            'pixel (the authors\' loss), so elbo is not a bound on log p(x)')

  # MI bounds: the fresh Q and the run's own Q.
  if model.has_mi_targets:
    bounds = mi_bounds_from_statistics(model, stats, gaussian_entropy=config.mi.gaussian_entropy)
    metrics.update(mi_bound=bounds['fresh'], mi_bound_entropy_kind=bounds['entropy_kind'],
                   mi_bound_entropy=bounds['entropy'], mi_bound_log_q=bounds['fresh/log_q'],
                   mi_bound_training_q=bounds['training'],
                   mi_bound_q_train_steps=int(e.q_train_steps),
                   mi_bound_q_loss_first=q_losses[0], mi_bound_q_loss_last=q_losses[-1],
                   mi_bound_note=MI_BOUND_NOTE)
    if model.mi_gaussian_indices:
      metrics.update(mi_bound_aggregate_mc=bounds['fresh/aggregate_mc'],
                     mi_bound_training_q_aggregate_mc=bounds['training/aggregate_mc'],
                     mi_bound_entropy_aggregate_mc=bounds['entropy_aggregate_mc'])
  else:
    metrics.update(mi_bound=None, mi_bound_entropy_kind='none', mi_bound_training_q=None,
                   mi_bound_note='no MI targets (mi.gaussian_indices and '
                                 'mi.categorical_indices are empty)')
  logging.info('ELBO terms and MI bounds: %.1fs', time.time() - t0)

  # IWAE.
  t0 = time.time()
  metrics['iwae_samples'] = int(e.iwae_samples)
  if model.likelihood == 'mse':
    metrics['iwae_log_likelihood'] = None
    metrics['iwae_note'] = ("likelihood 'mse' is not a normalised density: no "
                            'log-likelihood estimate')
  else:
    iwae = iwae_log_likelihood(model, vae_vars, test_x, num_samples=int(e.iwae_samples),
                               chunk=int(e.iwae_chunk), key=keys['iwae'],
                               batch_size=iwae_batch_size(int(e.iwae_chunk), batch_size))
    metrics['iwae_log_likelihood'] = np.mean(iwae)
    if model.likelihood == 'bernoulli' and not binarize:
      metrics['iwae_note'] = ('Bernoulli likelihood of grey-level pixels (test set not '
                              'binarised): comparable between runs of this code, not with '
                              'binarised-MNIST log-likelihoods in papers')
  logging.info('IWAE (k=%d): %.1fs', e.iwae_samples, time.time() - t0)

  # Gaussian dims: active units and influence on x'.
  if model.latent.gaussian_dims:
    count, variances = active_units(stats['mean'])
    metrics.update(active_units=count, active_units_threshold=ACTIVE_UNIT_THRESHOLD,
                   active_units_variances=variances)
    t0 = time.time()
    influence = latent_influence(model, vae_vars, stats['mean'], stats['logits'])
    mi_dims = list(model.mi_gaussian_indices)
    others = [d for d in range(len(influence)) if d not in mi_dims]
    metrics['latent_influence'] = {
        'delta': INFLUENCE_DELTA,
        'mi_dims': {str(d): influence[d] for d in mi_dims},
        'mi_dims_mean': np.mean(influence[mi_dims]) if mi_dims else None,
        'other_dims_mean': np.mean(influence[others]) if others else None,
        'per_dim': influence,
    }
    logging.info('Latent influence: %.1fs', time.time() - t0)
  else:
    metrics.update(active_units=0, active_units_threshold=ACTIVE_UNIT_THRESHOLD,
                   active_units_variances=[])

  # The categorical code as a classifier.
  code_index = counts = None
  eval_dir = workdir / EVAL_DIR
  if model.latent.categorical_sizes:
    code_index = (model.mi_categorical_indices[0] if model.mi_categorical_indices else 0)
    k = model.latent.categorical_sizes[code_index]
    logits = stats['logits'][code_index]
    codes = np.argmax(logits, axis=-1).astype(np.int32)
    labels = np.asarray(test.labels, np.int32)
    counts = count_matrix(labels, codes, num_labels=data.NUM_CLASSES, num_codes=k)
    metrics.update(
        categorical_code_index=code_index,
        mi_exact_categorical=float(jax.jit(losses.exact_categorical_mutual_information)(
            logits=jnp.asarray(logits))),
        kl_categorical=np.mean(stats['kl'][f'categorical_{code_index}']),
        accuracy_hungarian=accuracy_hungarian(labels, codes),
        accuracy_majority=accuracy_majority(labels, codes),
        nmi=normalized_mutual_information(labels, codes),
        ari=adjusted_rand_index(labels, codes),
        code_usage=np.bincount(codes, minlength=k),
        label_code_counts=counts)
    workdir_lib.atomic_save_npz(eval_dir / ASSIGNMENTS_NPZ, label=labels, code=codes)

  if make_figures:
    t0 = time.time()
    metrics['figures'] = _write_figures(workdir, model, vae_vars, stats, test_x, config,
                                        code_index, counts)
    logging.info('Figures: %.1fs', time.time() - t0)

  metrics['eval_seconds'] = time.time() - start
  metrics = _jsonable(metrics)
  workdir_lib.atomic_write_text(eval_dir / METRICS_JSON,
                                json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False))
  _log_summary(metrics)
  return metrics


def _write_figures(workdir: Path, model, vae_vars, stats, test_x, config, code_index,
                   counts) -> list[str]:
  # pylint: disable=g-import-not-at-top  (matplotlib only when figures are wanted)
  from vmivae_jax import figures
  e = config.eval
  out_dir = workdir / EVAL_DIR
  written = []
  arrays = figure_arrays(model, vae_vars, stats, test_x, code_index=code_index,
                         num_examples=int(e.num_figure_examples),
                         traversal_range=float(e.traversal_range),
                         traversal_steps=int(e.traversal_steps))
  values = arrays['values']
  if 'grid' in arrays:
    a, b = arrays['grid_dims']
    written.append(figures.traversal_grid(
        arrays['grid'], row_values=values, col_values=values, row_label=f'z_{a}',
        col_label=f'z_{b}', path=out_dir / 'traversal_grid.png',
        title=f'Traversal of z_{a} (rows) and z_{b} (columns), test example 0'))
  if 'rows' in arrays:
    written.append(figures.traversal_rows(
        arrays['originals'], arrays['rows'], values=values,
        dim_labels=[f'z_{d}' for d in arrays['rows_dims']],
        path=out_dir / 'traversal_rows.png'))
  if code_index is not None:
    name = f'c_{code_index}'
    written.append(figures.category_grid(
        arrays['originals'], arrays['categories'], path=out_dir / 'category_grid.png',
        code_name=name, title=f'Test examples decoded under each category of {name}'))
    probs = _softmax(stats['logits'][code_index])
    written.append(figures.categorical_histogram(
        probs, path=out_dir / 'categorical_histogram.png',
        title=f'q({name}|x) over the test set'))
    written.append(figures.label_code_counts(
        counts, path=out_dir / 'label_code_counts.png',
        title=f'Test labels vs argmax of q({name}|x)'))
  records = workdir_lib.read_metrics(workdir)
  if records:
    kl_key = f'kl/categorical_{code_index}' if code_index is not None else 'kl/gaussian'
    written.append(figures.training_curves(records, keys=['mi_bound', kl_key],
                                           path=out_dir / 'training_curves.png',
                                           title='Training (minibatch means)'))
  return [p.name for p in written]


def _log_summary(metrics: dict) -> None:
  def fmt(key):
    value = metrics.get(key)
    return 'n/a' if value is None else f'{value:.3f}'
  logging.info('step %d: elbo %s  iwae(k=%d) %s  kl %s  active units %s  mi_bound %s '
               '(training Q %s)', metrics['step'], fmt('elbo'), metrics['iwae_samples'],
               fmt('iwae_log_likelihood'), fmt('kl_total'), metrics.get('active_units'),
               fmt('mi_bound'), fmt('mi_bound_training_q'))
  if 'accuracy_hungarian' in metrics:
    logging.info('code %d: acc(hungarian) %s  acc(majority) %s  nmi %s  ari %s  exact I(x;c) %s',
                 metrics['categorical_code_index'], fmt('accuracy_hungarian'),
                 fmt('accuracy_majority'), fmt('nmi'), fmt('ari'), fmt('mi_exact_categorical'))
