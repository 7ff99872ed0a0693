"""Image preparation shared by the train step and the evaluation: scaling, binarisation,
the epoch's example order.

Images are stored as uint8 [N, 28, 28, 1]; models see float32 in their pixel range
(``config.pixel_range``: [0, 1] for the Bernoulli likelihood, [-1, 1] for the authors'
MSE). The functions accept numpy or JAX arrays and return the same kind.
"""

import math

import jax
import numpy as np

PIXEL_RANGES = {'zero_one': (0.0, 1.0), 'minus_one_one': (-1.0, 1.0)}


def scale_images(images, pixel_range: tuple[float, float]):
  """uint8 [0, 255] -> float32 in ``pixel_range``; float images pass through as float32."""
  if images.dtype == np.uint8:
    low, high = pixel_range
    return low + (high - low) * images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def to_unit_range(images, pixel_range: tuple[float, float]) -> np.ndarray:
  """Float images in ``pixel_range`` -> numpy float32 in [0, 1] (clipped), for display."""
  low, high = pixel_range
  return np.clip((np.asarray(images, np.float32) - low) / (high - low), 0.0, 1.0)


def binarize(images_unit, uniform):
  """Stochastic binarisation: pixel = 1 with probability its intensity in [0, 1].

  ``uniform`` holds U(0, 1) draws of the images' shape.
  """
  return (uniform < images_unit).astype(np.float32)


def uniform_flat(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """U(0, 1) draws of ``shape`` made as one flat vector (the values of a draw of
  ``shape``; XLA:CPU compiles flat threefry draws much faster)."""
  return jax.random.uniform(key, (math.prod(shape),)).reshape(shape)


def binarize_uint8(images_uint8: np.ndarray, key: jax.Array) -> np.ndarray:
  """A fixed stochastic binarisation of uint8 images (numpy float32 in {0, 1})."""
  u = np.asarray(uniform_flat(key, images_uint8.shape))
  return binarize(images_uint8.astype(np.float32) / 255.0, u)


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
  """The example order of one epoch, a function of the run's data key only."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
