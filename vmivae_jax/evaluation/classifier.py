"""The categorical code as an unsupervised classifier: code assignments of any split and
the thesis's own accuracy protocol.

The code of an example is argmax q(c|x) (deterministic; evaluation/common.py).
``accuracy_majority_train`` is the thesis's measurement (its 21% -> 82%): the
many-to-one map from code to label (each code -> its most frequent label) fitted
*and* scored on all the training images. The test-set scores (``accuracy_hungarian``,
``accuracy_majority``, ``nmi``) live in evaluation/run.py's ``_code_metrics``.
"""

import functools

import jax
import numpy as np

from vmivae_jax.data import preprocess
from vmivae_jax.evaluation import clustering
from vmivae_jax.evaluation import common
from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib


@functools.partial(jax.jit, static_argnames=('model', 'code_index'))
def _code_logits(model, vae_vars, images, *, code_index):
  x = preprocess.scale_images(images, model.pixel_range)
  posterior = model.vae.apply(vae_vars, x, train=False, method=networks.VAE.encode)
  return posterior.logits[code_index]


def code_logits(model: model_lib.VMIModel, vae_vars: dict, images: np.ndarray, *,
                code_index: int, batch_size: int) -> np.ndarray:
  """[N, K] logits of q(c_code_index | x) (the encoder in eval mode; no sampling)."""
  model = common.local_model(model)
  key = jax.random.PRNGKey(0)  # unused: the encoder is deterministic
  return common.map_batches(
      lambda b, k: _code_logits(model, vae_vars, b, code_index=int(code_index)),
      images, batch_size, key)


def code_assignments(model: model_lib.VMIModel, vae_vars: dict, images: np.ndarray, *,
                     code_index: int, batch_size: int) -> np.ndarray:
  """[N] int32: argmax q(c|x) of every image (uint8, or float in the model's range)."""
  logits = code_logits(model, vae_vars, images, code_index=code_index, batch_size=batch_size)
  return np.argmax(logits, axis=-1).astype(np.int32)


def accuracy_majority_train(train_labels: np.ndarray, train_codes: np.ndarray) -> float:
  """The thesis's protocol: each code -> its most frequent *training* label, scored on
  the same training examples (many-to-one, no held-out data)."""
  return clustering.accuracy_majority(np.asarray(train_labels), np.asarray(train_codes))


def train_inputs(config, train_images: np.ndarray, binarize_key: jax.Array) -> np.ndarray:
  """The training images as the encoder sees them in evaluation: uint8 (scaled inside
  the jitted encoder), or binarised with a fixed key when the run trains binarised."""
  if config.binarize:
    return preprocess.binarize_uint8(train_images, jax.random.fold_in(binarize_key, 1))
  return train_images
