"""The jitted, data-parallel VMI-VAE train step and its on-device multi-step loop.

One step (thesis Algorithm 1, lines 3-5):

1. take the next minibatch of the epoch's permutation (``preprocess.batch_indices``):
   gathered from the on-device dataset (``feed='device'``) or fed by the host
   (``feed='host'``, ``config.data_feed``: each process places only its devices' rows);
2. run the VAE forward once: x -> q(z|x) -> z -> x' (noise from fold_in(key, step));
3. update Q on -E log Q(z_sel | x') with the VAE fixed (optimizer 1);
4. update the VAE on -ELBO - lambda * MI with the *updated* Q fixed (optimizer 2).

With FactorVAE (``objective.disentangle``) the discriminator is updated between 3 and 4
(its own optimizer), on the samples z of the forward pass of step 2 against their
dimension-wise permutation; the VAE's TC term then reads the updated discriminator,
as its MI term reads the updated Q: both critics are fitted to the current encoder
before the encoder moves against them, and the one forward pass still serves all three.

Both updates evaluate the VAE at the same parameters and noise, so step 4 reuses
the forward pass of step 2 through its VJP instead of running the VAE twice.
With ``config.invariance`` terms on (invariance.py), step 2 also runs the encoder
on the augmented batch T(x), VAT's x + r_adv and the neighbours n(x) inside the same
VJP'd function, and step 4 adds their terms: one pullback still gives every VAE gradient.

Per-device code in the pmap style runs under ``jax.shard_map`` over the 'data' axis:
losses are ``pmean``-ed across devices before differentiation, so gradients are
global-batch means; parameters stay replicated. Random draws are made for the global
batch and sliced per device, so results do not depend on the device count. On a
one-device mesh the same code is jitted without shard_map (no collectives).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from vmivae_jax import consistency
from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax.config import config_lib
from vmivae_jax.data import preprocess
from vmivae_jax.model import disentangle
from vmivae_jax.model import invariance
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.util import parallel

TrainState = train_state_lib.TrainState


class TrainingSet(NamedTuple):
  """The device feed's training set: uint8 images and, with the neighbour term on, each
  example's nearest neighbours (None otherwise)."""
  images: jax.Array                       # [N, H, W, 1] uint8 (or bit-packed rows)
  neighbours: jax.Array | None = None     # [N, k] int32


def device_training_set(images, settings: invariance.InvarianceSettings) -> TrainingSet:
  """The training set for the device feed; with ``settings.neighbour_weight`` on, the
  table of each example's ``neighbour_count`` nearest examples (cosine similarity of the
  pixels), computed here once per run."""
  images = jnp.asarray(images)
  if not settings.uses_neighbours:
    return TrainingSet(images)
  if images.ndim != 4:
    raise ValueError(f'the neighbour term needs [N, H, W, C] images, got {images.shape} '
                     '(bit-packed rows?)')
  k, n = settings.neighbour_count, images.shape[0]
  if not 1 <= k < n:
    raise ValueError(f'invariance.neighbour_count={k} must be in [1, {n - 1}] for '
                     f'{n} training examples')
  table = jax.jit(functools.partial(consistency.nearest_neighbours, k=k))(
      images.astype(jnp.float32))
  return TrainingSet(images, table)


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
  discriminator_tx: optax.GradientTransformation | None = None   # FactorVAE's (else None)


def _pmean_varying(tree, axis_name: str | None):
  """pmean over the data axis of the leaves that differ per device (others already agree)."""
  if axis_name is None:
    return tree
  def reduce(x):
    return jax.lax.pmean(x, axis_name) if parallel.is_varying(x) else x
  return jax.tree.map(reduce, tree)


def _train_step(cfg: StepStatics, local_batch: int, axis_name: str | None, state: TrainState,
                images: jax.Array, step_key: jax.Array, hparams=None,
                neighbour_images: jax.Array | None = None):
  """One step on one device, on ``images``: this device's uint8 rows of the step's global
  batch ([local_batch, H, W, 1], or bit-packed [local_batch, H*W/8]), and
  ``neighbour_images`` one neighbour of each (the neighbour term only); returns the new
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
  def binarize_uniforms(key):   # drawn for the global batch, then this device's rows
    return parallel.local_slice(jax.random.uniform(key, (b,) + model.image_shape),
                                local_batch, axis_name)

  if cfg.binarize:
    u = binarize_uniforms(binarize_key)
    x = preprocess.binarize(x, u)
    if inputs is not None and inputs.augmented is not None:   # T(x) binarised as x was
      inputs = inputs._replace(augmented=preprocess.binarize(inputs.augmented, u))
  if inv.uses_neighbours:
    if neighbour_images is None:
      raise ValueError('invariance.neighbour_weight > 0 needs the device feed with the '
                       'neighbour table (train_step.device_training_set)')
    x_n = preprocess.scale_images(preprocess.unpack_images(neighbour_images, model.image_shape),
                                  model.pixel_range)
    if cfg.binarize:   # n(x) is another example: its own uniforms
      x_n = preprocess.binarize(x_n, binarize_uniforms(jax.random.fold_in(binarize_key, 1)))
    inputs = inputs._replace(neighbours=x_n)
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

  disc = cfg.objective.disentangle
  disc_params = disc_opt_state = None
  if disc.has_discriminator:
    disc_params, disc_opt_state, disc_metrics = _discriminator_update(
        cfg, state, forward.sample.gaussian, disentangle.permutation_key(step_key, step),
        axis_name)
    metrics.update(disc_metrics)

  def vae_loss(outputs):
    fwd, fwd_views = outputs
    loss, vae_metrics = objectives.vae_loss_from_forward(
        fwd, x, model=model, q_vars={'params': q_params, **q_state}, step=step,
        settings=cfg.objective, axis_name=axis_name, views=fwd_views,
        discriminator_params=disc_params)
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

  new_state = state.replace(step=step + 1, vae_params=vae_params, vae_state=vae_state,
                            vae_opt_state=vae_opt_state, q_params=q_params, q_state=q_state,
                            q_opt_state=q_opt_state)
  if disc.has_discriminator:
    new_state = new_state.replace(discriminator_params=disc_params,
                                  discriminator_opt_state=disc_opt_state)
  return new_state, _pmean_varying(metrics, axis_name)


def _discriminator_update(cfg: StepStatics, state, z: jax.Array, key: jax.Array,
                          axis_name: str | None):
  """FactorVAE's discriminator step on z (a constant) against permute_dims(z) of the
  global batch: (params, opt_state, metrics)."""
  z = jax.lax.stop_gradient(z)
  z_permuted = disentangle.permuted_sample(key, z, axis_name=axis_name)

  def loss_fn(params):
    loss, aux = disentangle.discriminator_objective(
        params, settings=cfg.objective.disentangle, z=z, z_permuted=z_permuted)
    return parallel.pmean(loss, axis_name), aux

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.discriminator_params)
  updates, opt_state = cfg.discriminator_tx.update(grads, state.discriminator_opt_state,
                                                   state.discriminator_params)
  return optax.apply_updates(state.discriminator_params, updates), opt_state, metrics


def run_steps(cfg: StepStatics, local_batch: int, axis_name: str | None, num_steps: int,
              state: TrainState, step_key: jax.Array, data: tuple, *, feed: str,
              hparams=None) -> tuple[TrainState, dict]:
  """``num_steps`` steps on one device (one lax.scan): the body of every chunk.

  ``data`` is ``(training_set, data_key)`` for ``feed='device'`` (the replicated
  :class:`TrainingSet`, or its images alone: each step gathers this device's rows of
  ``preprocess.batch_indices``, and one neighbour of each with the neighbour term on)
  and ``(batches,)``
  for ``feed='host'`` (this device's rows of each step's batch, [num_steps, local_batch,
  28, 28, 1], indexed on the host by the same function). Either way a step sees the same
  rows, so the two feeds train the same parameters.
  """
  if feed == 'device':
    training_set, data_key = data
    if not isinstance(training_set, TrainingSet):
      training_set = TrainingSet(training_set)
    images, table = training_set
    xs = preprocess.batch_indices(data_key, state.step, num_steps, batch_size=cfg.batch_size,
                                  num_examples=cfg.num_examples)

    def rows(index, step):
      local = parallel.local_slice(index, local_batch, axis_name)
      if table is None:
        return images[local], None
      # One of the k neighbours per example, drawn for the global batch, then sliced.
      pick = jax.random.randint(invariance.neighbour_key(step_key, step), index.shape, 0,
                                table.shape[1])
      return images[local], images[table[local, parallel.local_slice(pick, local_batch,
                                                                     axis_name)]]
  else:
    (xs,) = data
    rows = lambda batch, step: (batch, None)

  def body(st, x):
    batch, neighbour_images = rows(x, st.step)
    return _train_step(cfg, local_batch, axis_name, st, batch, step_key, hparams=hparams,
                       neighbour_images=neighbour_images)

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

  ``feed='device'``: ``(state, training_set, step_key, data_key) -> (state, metrics)``,
  with ``training_set`` the replicated :func:`device_training_set` (or, without the
  neighbour term, the [N, 28, 28, 1] uint8 images alone).
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
