"""What every evaluation needs: its keys, batching, eval-mode decoding.

Conventions of the whole package (evaluation/__init__.py lists the pieces):

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

import jax
import numpy as np

from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib

# All evaluation randomness: fold_in(PRNGKey(config.seed), _EVAL_STREAM), then one
# fold_in per purpose. (Training uses split(PRNGKey(seed)), so the streams differ.)
_EVAL_STREAM = 0x5EA1
_PURPOSES = ('elbo', 'iwae', 'q_train', 'binarize')

local_model = model_lib.local_model


def eval_keys(seed: int) -> dict[str, jax.Array]:
  """The evaluation's keys, one per purpose, all derived from ``seed`` by fold_in."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), _EVAL_STREAM)
  return {name: jax.random.fold_in(base, i) for i, name in enumerate(_PURPOSES)}


def map_batches(fn, images: np.ndarray, batch_size: int, key: jax.Array):
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


def output_logvar(model: model_lib.VMIModel, vae_vars: dict):
  return vae_vars['params']['output_logvar'] if model.vae.learn_output_logvar else None


def decode_raw(model: model_lib.VMIModel, vae_vars: dict, code: jax.Array) -> jax.Array:
  return model.vae.apply(vae_vars, code, train=False, method=networks.VAE.decode)


@functools.partial(jax.jit, static_argnames=('model',))
def decode_mean(model: model_lib.VMIModel, vae_vars: dict, code: jax.Array) -> jax.Array:
  """x' = the decoder mean image [B, 28, 28, 1] of latent codes [B, code_size]."""
  return model.decoder_mean(decode_raw(model, vae_vars, code))
