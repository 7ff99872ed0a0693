"""The Barber-Agakov bound of thesis eq 4.8 for a frozen VAE: a Q trained from scratch
(:func:`train_fresh_q`), the entropy H(z_sel) over the whole evaluated set, and the bound
of one or more Q networks on the same samples (:func:`mi_bounds`).

The entropies here are whole-set versions of ``losses``' batch estimators, in float64:
the categorical plug-in entropy of mean_x q(c|x) and the Monte Carlo aggregate Gaussian
entropy computed in row chunks (``losses.gaussian_aggregate_entropy_mc`` needs the whole
N x N matrix at once). Conventions: evaluation/common.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax import model as model_lib
from vmivae_jax import networks
from vmivae_jax import objectives
from vmivae_jax import preprocess
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import likelihood

MI_BOUND_NOTE = (
    'Barber-Agakov bound E[log Q(z_sel|x\')] + H(z_sel) (thesis eq 4.8) on the test split, '
    'one sample per example, VAE in eval mode. Categorical codes are sampled as exact '
    'categorical draws (Gumbel-max, hard one-hot), so the bound is on I(c; x\') of the '
    'discrete code; H(c) is the plug-in entropy of mean_x q(c|x) over the test set. '
    'mi_bound uses a fresh Q trained on the frozen VAE (eval.q_train_steps of Adam on '
    'training images); mi_bound_training_q uses the run\'s own Q on the same samples.')



@functools.partial(jax.jit, static_argnames=('model',))
def _init_q(model, key):
  return model.q.init(key, jnp.zeros((2,) + networks.IMAGE_SHAPE, jnp.float32), train=False)


def init_q(model: model_lib.VMIModel, key: jax.Array) -> dict:
  """Fresh Q variables from ``key`` (jitted: one compilation instead of one per op)."""
  return dict(_init_q(common.local_model(model), key))


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
    x = preprocess.scale_images(train_images[index], model.pixel_range)
    if binarize:
      x = preprocess.binarize(x, preprocess.uniform_flat(k_binarize, x.shape))
    noise = latents.draw_noise(k_noise, model.latent, (batch_size,))
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
  model = common.local_model(model)
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
  out = common.map_batches(lambda zr, _: _log_aggregate_density(zr, mean, logvar), samples, rows,
                     jax.random.PRNGKey(0))
  return float(-np.mean(out.astype(np.float64)))


def softmax(logits) -> np.ndarray:
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
  entropy = sum(categorical_entropy_of_mean(softmax(stats['logits'][i]))
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
  stats = likelihood.vae_statistics(model, vae_vars, images, key=key, temperature=temperature,
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
