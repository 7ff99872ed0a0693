"""The Barber-Agakov bound of thesis eq 4.8 for a frozen VAE: a Q trained from scratch
(:func:`train_fresh_q`), the entropy H(z_sel) over the whole evaluated set, and the bound
of one or more Q networks on the same samples (:func:`mi_bounds`).

The entropies here are whole-set versions of ``losses``' batch estimators, as [N]
per-example terms (so that each bound has a standard error): the categorical plug-in
entropy of mean_x q(c|x), the Monte Carlo aggregate Gaussian entropy and, for two or
more target groups, their joint aggregate entropy, computed in row chunks against the
whole set (the ``losses`` versions need the whole N x N matrix at once). The headline
bound never assumes the prior's entropy. Conventions: evaluation/common.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vmivae_jax import distributions
from vmivae_jax import entropies
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax.data import preprocess
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import likelihood
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib

MI_BOUND_NOTE = (
    'Barber-Agakov bound E[log Q(z_sel|x\')] + H(z_sel) (thesis eq 4.8) on the test split, '
    'one sample per example, VAE in eval mode. Categorical codes are sampled as exact '
    'categorical draws (Gumbel-max, hard one-hot), so the bound is on I(c; x\') of the '
    'discrete code; H(z_sel) is the entropy of the test set\'s aggregate posterior '
    '(codes: plug-in entropy of mean_x q(c|x); Gaussian dims: Monte Carlo, one sample per '
    'example against all test examples, biased down by O(1/N); several groups: their joint '
    'entropy), never the prior\'s. *_se: standard error over the per-example terms '
    '(Monte Carlo draw and finite test set; Q held fixed). mi_bound uses a fresh Q trained on the frozen VAE (eval.q_train_steps of Adam on '
    'training images); mi_bound_training_q uses the run\'s own Q on the same samples. '
    'mi_objective_prior_entropy (Gaussian targets): E log Q + the prior\'s entropy, the '
    'thesis\'s objective; NOT a bound.')



@functools.partial(jax.jit, static_argnames=('model',))
def _init_q(model, key):
  return model.q.init(key, jnp.zeros((2,) + model.image_shape, jnp.float32), train=False)


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
    rows = preprocess.unpack_images(train_images[index], model.image_shape)  # dsprites: bits
    x = preprocess.scale_images(rows, model.pixel_range)
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


@jax.jit
def _joint_terms(z_rows, row_logits, mean, logvar, logits):
  return entropies.joint_aggregate_entropy_terms(samples=z_rows, sample_logits=list(row_logits),
                                              mean=mean, logvar=logvar, logits=list(logits))


def _row_chunks(n: int, per_row: int, max_pairs: int):
  rows = max(1, min(n, max_pairs // max(per_row, 1)))
  return [(i, min(n, i + rows)) for i in range(0, n, rows)]


def gaussian_aggregate_entropy_terms(samples: np.ndarray, mean: np.ndarray, logvar: np.ndarray,
                                     *, max_pairs: int = 4_000_000) -> np.ndarray:
  """[N] terms -log q_N(z_i) of ``entropies.gaussian_aggregate_entropy_mc`` over a whole set.

  q_N(z) = (1/N) sum_j N(z; mean_j, exp(logvar_j)) (j = i included); the N x N pairwise
  densities are computed ``max_pairs // N`` rows at a time, so memory stays bounded.
  Their mean is the entropy; over N examples it is biased down by about the toy's
  3.8 / N nats (entropies.gaussian_aggregate_entropy_mc), ~0.0004 nats at N = 10,000.
  """
  samples, mean, logvar = (np.asarray(a, np.float32) for a in (samples, mean, logvar))
  n = len(samples)
  if n == 0:
    raise ValueError('no examples')
  # Fixed-size chunks (the last padded) so that one compilation serves all.
  chunks = _row_chunks(n, n, max_pairs)
  rows = chunks[0][1] - chunks[0][0]
  padded = np.concatenate([samples, np.zeros((len(chunks) * rows - n,) + samples.shape[1:],
                                             np.float32)])
  out = [np.asarray(_log_aggregate_density(padded[i:i + rows], mean, logvar))
         for i, _ in chunks]
  return -np.concatenate(out)[:n].astype(np.float64)


def gaussian_aggregate_entropy(samples: np.ndarray, mean: np.ndarray, logvar: np.ndarray, *,
                               max_pairs: int = 4_000_000) -> float:
  """Mean of :func:`gaussian_aggregate_entropy_terms`: the set's aggregate entropy."""
  return float(np.mean(gaussian_aggregate_entropy_terms(samples, mean, logvar,
                                                        max_pairs=max_pairs)))


def joint_aggregate_entropy_terms(samples: np.ndarray, mean: np.ndarray, logvar: np.ndarray,
                                  logits, *, max_pairs: int = 4_000_000) -> np.ndarray:
  """[N] terms of ``entropies.joint_aggregate_entropy_mc`` over a whole set, in row chunks.

  Each example's Gaussian sample (``samples``, [N, S], S may be 0) and code
  probabilities are scored against the aggregate posterior of all N examples; rows are
  taken ``max_pairs // (N * prod K)`` at a time. Their mean is the joint entropy.
  """
  samples, mean, logvar = (np.asarray(a, np.float32) for a in (samples, mean, logvar))
  logits = [np.asarray(l, np.float32) for l in logits]
  n = len(samples)
  joint_codes = int(np.prod([l.shape[-1] for l in logits])) if logits else 1
  chunks = _row_chunks(n, n * joint_codes, max_pairs)
  rows = chunks[0][1] - chunks[0][0]
  pad = len(chunks) * rows - n
  pad_rows = lambda a: np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
  samples_p, logits_p = pad_rows(samples), [pad_rows(l) for l in logits]
  out = [np.asarray(_joint_terms(samples_p[i:i + rows], tuple(l[i:i + rows] for l in logits_p),
                                 mean, logvar, tuple(logits)))
         for i, _ in chunks]
  return np.concatenate(out)[:n].astype(np.float64)


def softmax(logits) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return probs / probs.sum(axis=-1, keepdims=True)


def categorical_entropy_of_mean(probs: np.ndarray) -> float:
  """H(mean_x q(c|x)) from [N, K] probabilities (float64 plug-in entropy)."""
  return float(np.mean(categorical_entropy_terms(probs)))


def categorical_entropy_terms(probs: np.ndarray) -> np.ndarray:
  """[N] terms -sum_k q(k|x_n) log qbar_k (qbar = mean_x q(c|x)); their mean is H(qbar)."""
  probs = np.asarray(probs, np.float64)
  p = np.mean(probs, axis=0)
  log_p = np.log(np.where(p > 0, p, 1.0))
  return -np.sum(probs * log_p, axis=-1)


def standard_error(values) -> float:
  """std(ddof=1) / sqrt(n) of per-example values (``losses.standard_error``, float64)."""
  values = np.asarray(values, np.float64)
  return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float('nan')


def entropy_terms(model: model_lib.VMIModel, stats: dict) -> tuple[np.ndarray, str]:
  """[N] per-example terms of H(z_sel) over the evaluated set, and their kind.

  One code: the plug-in categorical terms; the Gaussian dims alone: the aggregate
  Monte Carlo terms (whole set, j = i included); two or more groups: the joint
  aggregate terms. Every kind estimates the entropy of the evaluated set's aggregate
  posterior (no prior assumed), so E log Q + mean(terms) is a lower bound on
  I(z_sel; x') up to the estimate's error (see the functions above).
  """
  idx = list(model.mi_gaussian_indices)
  codes = [stats['logits'][i] for i in model.mi_categorical_indices]
  kind = model_lib.entropy_kind_label(model, 'gaussian_aggregate_mc')
  if model.num_mi_groups >= 2:
    samples = stats['mi_z'] if idx else np.zeros((len(codes[0]), 0), np.float32)
    mean = stats['mean'][:, idx] if idx else samples
    logvar = stats['logvar'][:, idx] if idx else samples
    return joint_aggregate_entropy_terms(samples, mean, logvar, codes), kind
  if idx:
    return gaussian_aggregate_entropy_terms(stats['mi_z'], stats['mean'][:, idx],
                                            stats['logvar'][:, idx]), kind
  return categorical_entropy_terms(softmax(codes[0])), kind


def mi_bounds_from_statistics(model: model_lib.VMIModel, stats: dict) -> dict:
  """Barber-Agakov bounds E log Q + H(z_sel) from :func:`vae_statistics` output.

  H(z_sel) is the aggregate-posterior entropy of the evaluated set
  (:func:`entropy_terms`: joint over the groups when there are several), so each bound
  is a valid lower-bound estimate; standard errors are over the per-example terms
  log Q + h_n (Monte Carlo draw and finite test set, Q held fixed). For Gaussian
  targets the thesis's objective with the prior's entropy is also returned, as
  'objective_prior_entropy': it is NOT a bound (the aggregate posterior is not the
  prior once training shrinks or shifts the targeted dims).

  Returns:
    {'entropy', 'entropy_se', 'entropy_kind', and for each Q name: name: bound,
    f'{name}/se', f'{name}/log_q': E log Q} and, for Gaussian targets,
    'entropy_prior_objective', f'{name}/objective_prior_entropy'. Nats.
  """
  terms, kind = entropy_terms(model, stats)
  out = {'entropy': float(np.mean(terms)), 'entropy_se': standard_error(terms),
         'entropy_kind': kind}
  if model.mi_gaussian_indices:
    prior_h = entropies.gaussian_prior_entropy(num_dims=len(model.mi_gaussian_indices))
    if model.mi_categorical_indices:
      codes = [stats['logits'][i] for i in model.mi_categorical_indices]
      prior_h += float(np.mean(
          categorical_entropy_terms(softmax(codes[0])) if len(codes) == 1 else
          joint_aggregate_entropy_terms(np.zeros((len(codes[0]), 0), np.float32),
                                        np.zeros((len(codes[0]), 0), np.float32),
                                        np.zeros((len(codes[0]), 0), np.float32), codes)))
    out['entropy_prior_objective'] = float(prior_h)
  for name, log_q in stats['log_q'].items():
    log_q = np.asarray(log_q, np.float64)
    bound_terms = log_q + terms           # losses.mi_lower_bound(log_q=, entropy=terms)
    out[name] = float(np.mean(bound_terms))
    out[f'{name}/se'] = standard_error(bound_terms)
    out[f'{name}/log_q'] = float(np.mean(log_q))
    if model.mi_gaussian_indices:
      out[f'{name}/objective_prior_entropy'] = float(np.mean(log_q)) + out['entropy_prior_objective']
  return out


def mi_bounds(model: model_lib.VMIModel, vae_vars: dict, q_vars: dict[str, dict], images, *,
              key: jax.Array, temperature: float, batch_size: int) -> dict:
  """Barber-Agakov bounds of one or more Q networks, on the same latent samples.

  One sample per example of ``images``; codes are exact categorical draws. See
  :func:`mi_bounds_from_statistics` for the returned keys.
  """
  stats = likelihood.vae_statistics(model, vae_vars, images, key=key, temperature=temperature,
                                    batch_size=batch_size, q_vars=q_vars, relaxed=False)
  return mi_bounds_from_statistics(model, stats)


def fresh_q_mi_bound(model: model_lib.VMIModel, vae_vars: dict, train_images, test_images, *,
                     steps: int, batch_size: int, learning_rate: float, key: jax.Array,
                     temperature: float, eval_batch_size: int = 500,
                     binarize: bool = False) -> dict:
  """The MI bound of thesis eq 4.8 for a frozen VAE, with a Q trained from scratch.

  Trains a fresh Q (:func:`train_fresh_q`, ``fold_in(key, 0)``) on ``train_images``, then
  scores it on ``test_images`` (:func:`mi_bounds`, ``fold_in(key, 1)``).

  Returns:
    {'mi_bound', 'mi_bound_se', 'log_q', 'entropy', 'entropy_se', 'entropy_kind',
    'q_loss_first', 'q_loss_last', 'steps'} and, for Gaussian targets,
    'mi_objective_prior_entropy' (the thesis's objective: not a bound). Values in nats.
  """
  q_vars, q_losses = train_fresh_q(model, vae_vars, train_images, steps=steps,
                                   batch_size=batch_size, learning_rate=learning_rate,
                                   key=jax.random.fold_in(key, 0), temperature=temperature,
                                   binarize=binarize)
  bounds = mi_bounds(model, vae_vars, {'fresh': q_vars}, test_images,
                     key=jax.random.fold_in(key, 1), temperature=temperature,
                     batch_size=eval_batch_size)
  out = dict(mi_bound=bounds['fresh'], mi_bound_se=bounds['fresh/se'],
             log_q=bounds['fresh/log_q'], entropy=bounds['entropy'],
             entropy_se=bounds['entropy_se'], entropy_kind=bounds['entropy_kind'],
             q_loss_first=float(q_losses[0]), q_loss_last=float(q_losses[-1]), steps=int(steps))
  if 'fresh/objective_prior_entropy' in bounds:
    out['mi_objective_prior_entropy'] = bounds['fresh/objective_prior_entropy']
  return out
