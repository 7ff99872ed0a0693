"""The training state: one pytree with the step, both networks and both optimizers.

Flax's ``TrainState`` holds one optimizer; VMI-VAE alternates two (Q, then the VAE),
so, as ``flax/training/train_state.py`` recommends for that case, we fork it.
FactorVAE's discriminator (a third network and optimizer) lives in a subclass,
:class:`DiscriminatorTrainState`, created only when that baseline is on, so that every
other run's state, checkpoints and compiled step are what they were.
"""

import flax
import jax
import jax.numpy as jnp
import optax

from vmivae_jax.model import disentangle as disentangle_lib
from vmivae_jax.model import vmi as model_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: completed training steps
  vae_params: dict
  vae_state: dict            # non-trainable VAE variables (BatchNorm statistics), maybe {}
  vae_opt_state: optax.OptState
  q_params: dict
  q_state: dict
  q_opt_state: optax.OptState


@flax.struct.dataclass
class DiscriminatorTrainState(TrainState):
  """TrainState plus FactorVAE's discriminator and its optimizer state."""
  discriminator_params: dict
  discriminator_opt_state: optax.OptState


def split_variables(variables: dict) -> tuple[dict, dict]:
  """{'params': p, 'batch_stats': s} -> (p, {'batch_stats': s})."""
  rest = {k: v for k, v in variables.items() if k != 'params'}
  return variables['params'], rest


def create(model: model_lib.VMIModel, key: jax.Array, *, vae_tx: optax.GradientTransformation,
           q_tx: optax.GradientTransformation,
           disentangle: disentangle_lib.DisentangleSettings | None = None,
           discriminator_tx: optax.GradientTransformation | None = None) -> TrainState:
  """Initial state. ``key`` alone fixes the networks: runs that differ only in the
  objective (e.g. lambda) start from identical parameters. With FactorVAE
  (``disentangle.has_discriminator``) a :class:`DiscriminatorTrainState`, whose
  discriminator is drawn from ``fold_in(key, 1)`` (the VAE and Q keep their draws)."""
  vae_vars, q_vars = model.init(key)
  vae_params, vae_state = split_variables(vae_vars)
  q_params, q_state = split_variables(q_vars)
  fields = dict(step=jnp.zeros((), jnp.int32), vae_params=vae_params, vae_state=vae_state,
                vae_opt_state=vae_tx.init(vae_params), q_params=q_params, q_state=q_state,
                q_opt_state=q_tx.init(q_params))
  if disentangle is None or not disentangle.has_discriminator:
    return TrainState(**fields)
  if discriminator_tx is None:
    raise ValueError('FactorVAE needs the discriminator\'s optimizer (discriminator_tx)')
  params = disentangle_lib.init_discriminator(disentangle, jax.random.fold_in(key, 1),
                                              model.latent.gaussian_dims)
  return DiscriminatorTrainState(**fields, discriminator_params=params,
                                 discriminator_opt_state=discriminator_tx.init(params))


def run_keys(seed: int) -> dict[str, jax.Array]:
  """The run's keys, from one root key split once: init, per-step noise, data order."""
  init_key, step_key, data_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {'init': init_key, 'step': step_key, 'data': data_key}
