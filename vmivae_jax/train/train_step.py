"""The jitted, data-parallel VMI-VAE train step and its on-device multi-step loop.

One step (thesis Algorithm 1, lines 3-5):

1. take the next minibatch of the epoch's permutation (``preprocess.batch_indices``):
   gathered from the on-device dataset (``feed='device'``) or fed by the host
   (``feed='host'``, ``config.data_feed``: each process places only its devices' rows);
2. run the VAE forward once: x -> q(z|x) -> z -> x' (noise from fold_in(key, step));
3. update Q on -E log Q(z_sel | x') with the VAE fixed (optimizer 1);
4. update the VAE on -ELBO - lambda * MI with the *updated* Q fixed (optimizer 2).

Both updates evaluate the VAE at the same parameters and noise, so step 4 reuses
the forward pass of step 2 through its VJP instead of running the VAE twice.
With ``config.invariance`` terms on (invariance.py), step 2 also runs the encoder
on the augmented batch T(x) and VAT's x + r_adv inside the same VJP'd function, and
step 4 adds their terms: one pullback still gives every VAE gradient.

Per-device code in the pmap style runs under ``jax.shard_map`` over the 'data' axis:
losses are ``pmean``-ed across devices before differentiation, so gradients are
global-batch means; parameters stay replicated. Random draws are made for the global
batch and sliced per device, so results do not depend on the device count. On a
one-device mesh the same code is jitted without shard_map (no collectives).
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax.config import config_lib
from vmivae_jax.data import preprocess
from vmivae_jax.model import invariance
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.util import parallel

TrainState = train_state_lib.TrainState


@dataclasses.dataclass(frozen=True)
class TemperatureSchedule:
  initial: float = 1.0
  floor: float = 0.5
  anneal_rate: float = 0.0
  hard: bool = False

  def __call__(self, step: jax.Array) -> jax.Array:
    return distributions.annealed_temperature(step, initial=self.initial, floor=self.floor,
                                              anneal_rate=self.anneal_rate)


@dataclasses.dataclass(frozen=True)
class StepStatics:
  """Everything static the train step needs (hashable: part of the compiled function)."""
  model: model_lib.VMIModel
  objective: objectives.ObjectiveSettings
  vae_tx: optax.GradientTransformation
  q_tx: optax.GradientTransformation
  temperature: TemperatureSchedule
  batch_size: int                 # global
  num_examples: int               # size of the training set
  binarize: bool = False


def _pmean_varying(tree, axis_name: str | None):
  """pmean over the data axis of the leaves that differ per device (others already agree)."""
  if axis_name is None:
    return tree
  def reduce(x):
    return jax.lax.pmean(x, axis_name) if parallel.is_varying(x) else x
  return jax.tree.map(reduce, tree)


def _train_step(cfg: StepStatics, local_batch: int, axis_name: str | None, state: TrainState,
                images: jax.Array, step_key: jax.Array, hparams=None):
  """One step on one device, on ``images``: this device's uint8 rows of the step's global
  batch ([local_batch, H, W, 1], or bit-packed [local_batch, H*W/8]); returns the new
  state and metrics.

  ``hparams`` (a sweep member's numbers as arrays, ``sweep_step.HParams``) replaces the
  numbers of ``cfg`` that a sweep varies; None (single runs) uses ``cfg``'s own.
  """
  if hparams is not None:
    cfg = hparams.apply(cfg)
  model, b = cfg.model, cfg.batch_size
  step = state.step
  images = preprocess.unpack_images(images, model.image_shape)   # packed bits: dsprites
  x = preprocess.scale_images(images, model.pixel_range)

  inv = cfg.objective.invariance
  inputs = None
  if inv.enabled:   # static: with every weight 0 the step below is the plain one, bitwise
    inputs = invariance.draw_inputs(
        invariance.invariance_key(step_key, step), x, inv,
        num_codes=len(model.latent.categorical_sizes), global_batch=b, axis_name=axis_name,
        pixel_range=model.pixel_range)
  noise_key, binarize_key = jax.random.split(jax.random.fold_in(step_key, step))
  noise = jax.tree.map(lambda n: parallel.local_slice(n, local_batch, axis_name),
                       latents.draw_noise(noise_key, model.latent, b))
  if cfg.binarize:
    u = parallel.local_slice(jax.random.uniform(binarize_key, (b,) + model.image_shape),
                             local_batch, axis_name)
    x = preprocess.binarize(x, u)
    if inputs is not None and inputs.augmented is not None:   # T(x) binarised as x was
      inputs = inputs._replace(augmented=preprocess.binarize(inputs.augmented, u))
  temperature = cfg.temperature(step)

  def forward_fn(vae_params):
    variables = {'params': vae_params, **state.vae_state}
    forward, new_state = model.forward(
        variables, x, noise, temperature=temperature, hard=cfg.temperature.hard, train=True,
        code_gradient=cfg.objective.code.generative_gradient_at(step))
    views = None
    if inv.enabled:   # the encoder's extra passes, differentiated with the VAE pass
      views = invariance.encoder_views(model.vae, variables, images=x,
                                       clean_logits=forward.posterior.logits,
                                       inputs=inputs, settings=inv)
    return (forward, views), new_state

  (forward, views), pullback, vae_state = jax.vjp(forward_fn, state.vae_params, has_aux=True)

  q_params, q_state, q_opt_state = state.q_params, state.q_state, state.q_opt_state
  metrics = {}
  if model.has_mi_targets:
    def q_loss(params):
      loss, aux = objectives.q_objective(params, q_state=q_state, model=model,
                                         x_prime=forward.x_prime,
                                         targets=model.mi_targets(forward.sample))
      return parallel.pmean(loss, axis_name), aux

    (_, q_aux), q_grads = jax.value_and_grad(q_loss, has_aux=True)(q_params)
    q_updates, q_opt_state = cfg.q_tx.update(q_grads, q_opt_state, q_params)
    if hparams is not None:
      q_updates = hparams.scale_q_updates(q_updates)
    q_params = optax.apply_updates(q_params, q_updates)
    q_state = q_aux['q_state']
    metrics.update(q_aux['metrics'])

  def vae_loss(outputs):
    fwd, fwd_views = outputs
    loss, vae_metrics = objectives.vae_loss_from_forward(
        fwd, x, model=model, q_vars={'params': q_params, **q_state}, step=step,
        settings=cfg.objective, axis_name=axis_name, views=fwd_views)
    return parallel.pmean(loss, axis_name), vae_metrics

  (_, vae_metrics), forward_grads = jax.value_and_grad(vae_loss, has_aux=True)(
      (forward, views))
  (vae_grads,) = pullback(forward_grads)
  vae_updates, vae_opt_state = cfg.vae_tx.update(vae_grads, state.vae_opt_state, state.vae_params)
  if hparams is not None:
    vae_updates = hparams.scale_vae_updates(vae_updates)
  vae_params = optax.apply_updates(state.vae_params, vae_updates)
  vae_metrics[model_lib.elbo_metric_name(model, cfg.temperature.hard)] = vae_metrics.pop('elbo')
  metrics.update(vae_metrics, temperature=temperature)

  new_state = TrainState(step=step + 1, vae_params=vae_params, vae_state=vae_state,
                         vae_opt_state=vae_opt_state, q_params=q_params, q_state=q_state,
                         q_opt_state=q_opt_state)
  return new_state, _pmean_varying(metrics, axis_name)


def run_steps(cfg: StepStatics, local_batch: int, axis_name: str | None, num_steps: int,
              state: TrainState, step_key: jax.Array, data: tuple, *, feed: str,
              hparams=None) -> tuple[TrainState, dict]:
  """``num_steps`` steps on one device (one lax.scan): the body of every chunk.

  ``data`` is ``(images, data_key)`` for ``feed='device'`` (the replicated dataset: each
  step gathers this device's rows of ``preprocess.batch_indices``) and ``(batches,)``
  for ``feed='host'`` (this device's rows of each step's batch, [num_steps, local_batch,
  28, 28, 1], indexed on the host by the same function). Either way a step sees the same
  rows, so the two feeds train the same parameters.
  """
  if feed == 'device':
    images, data_key = data
    xs = preprocess.batch_indices(data_key, state.step, num_steps, batch_size=cfg.batch_size,
                                  num_examples=cfg.num_examples)
    rows = lambda index: images[parallel.local_slice(index, local_batch, axis_name)]
  else:
    (xs,) = data
    rows = lambda batch: batch

  def body(st, x):
    return _train_step(cfg, local_batch, axis_name, st, rows(x), step_key, hparams=hparams)

  return jax.lax.scan(body, state, xs, length=num_steps)


def check_feed(feed: str) -> str:
  """``feed`` if it is one of config_lib.DATA_FEEDS, else a ValueError naming it."""
  if feed not in config_lib.DATA_FEEDS:
    raise ValueError(f'feed={feed!r}: choose one of {config_lib.DATA_FEEDS} '
                     '(config.data_feed)')
  return feed


def make_train_chunk(cfg: StepStatics, mesh: jax.sharding.Mesh, num_steps: int,
                     feed: str = 'device') -> Callable[..., tuple[TrainState, dict]]:
  """A jitted function running ``num_steps`` train steps on device (one lax.scan).

  ``feed='device'``: ``(state, images_uint8, step_key, data_key) -> (state, metrics)``,
  with ``images_uint8`` the replicated [N, 28, 28, 1] training set.
  ``feed='host'``: ``(state, batches_uint8, step_key) -> (state, metrics)``, with
  ``batches_uint8`` the chunk's [num_steps, batch_size, 28, 28, 1] batches sharded over
  'data' on the batch axis (``parallel.feed_batches`` of ``host_batch_indices``).
  ``metrics`` is a dict of [num_steps] arrays; the state argument is donated. The
  training set must hold a batch (``validation.check_train_examples``, run by the trainer).
  """
  check_feed(feed)
  local_batch = parallel.local_batch_size(cfg.batch_size, mesh)
  axis_name = parallel.axis_name_for(mesh)
  if axis_name is None:
    cfg = dataclasses.replace(cfg, model=model_lib.local_model(cfg.model))
  steps = functools.partial(run_steps, cfg, local_batch, axis_name, num_steps, feed=feed)

  if feed == 'device':
    def chunk(state, images, step_key, data_key):
      return steps(state, step_key, (images, data_key))
    in_specs = (P(), P(), P(), P())
  else:
    def chunk(state, batches, step_key):
      if axis_name is None:
        # One device: drop the batch axis's sharding type (the mesh's explicit 'data'
        # axis), which the conv formulations' reshapes cannot carry; nothing moves.
        batches = jax.sharding.reshard(batches, jax.sharding.NamedSharding(mesh, P()))
      return steps(state, step_key, (batches,))
    in_specs = (P(), parallel.BATCHES_SPEC, P())

  if axis_name is None:
    return jax.jit(chunk, donate_argnums=(0,))
  sharded = jax.shard_map(chunk, mesh=mesh, in_specs=in_specs, out_specs=(P(), P()))
  return jax.jit(sharded, donate_argnums=(0,))


@functools.partial(jax.jit, static_argnames=('num_steps', 'batch_size', 'num_examples'))
def _batch_indices(data_key, first_step, *, num_steps, batch_size, num_examples):
  return preprocess.batch_indices(data_key, first_step, num_steps, batch_size=batch_size,
                                  num_examples=num_examples)


def host_batch_indices(cfg: StepStatics, data_key, first_step: int, num_steps: int
                       ) -> np.ndarray:
  """The chunk's [num_steps, batch_size] batch indices as numpy, for the host feed.

  ``preprocess.batch_indices`` (what the device-fed chunk computes in its program),
  jitted on this process's first CPU device: one small program per chunk length,
  one transfer per chunk, no per-step Python work.
  """
  device = parallel.host_device()
  indices = _batch_indices(jax.device_put(data_key, device),
                           jax.device_put(np.int32(first_step), device), num_steps=num_steps,
                           batch_size=cfg.batch_size, num_examples=cfg.num_examples)
  return np.asarray(indices)


@functools.lru_cache(maxsize=None)
def cached_train_chunk(cfg: StepStatics, mesh: jax.sharding.Mesh, num_steps: int,
                       feed: str = 'device'):
  """make_train_chunk, built once per (config, mesh, length, feed) in a process."""
  return make_train_chunk(cfg, mesh, num_steps, feed)
