"""Image preparation shared by the train step and the evaluation: scaling, binarisation,
the epoch's example order and the training batches drawn from it.

Images are stored as uint8 [N, H, W, 1] (or bit-packed rows: ``unpack_images``); models
see float32 in their pixel range (``config.pixel_range``: [0, 1] for the Bernoulli
likelihood, [-1, 1] for the authors' MSE). The functions accept numpy or JAX arrays and
return the same kind.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

PIXEL_RANGES = {'zero_one': (0.0, 1.0), 'minus_one_one': (-1.0, 1.0)}


def scale_images(images, pixel_range: tuple[float, float]):
  """uint8 [0, 255] -> float32 in ``pixel_range``; float images pass through as float32."""
  if images.dtype == np.uint8:
    low, high = pixel_range
    return low + (high - low) * images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def unpack_images(rows, image_shape: tuple[int, int, int]):
  """Bit-packed images (``np.packbits`` rows [N, H*W*C/8], as dSprites' train split is
  held: 8x smaller on the device) -> uint8 [N, H, W, C] in {0, 255}, so that
  ``scale_images`` maps them to {0, 1} exactly; images already [N, H, W, C] pass through
  untouched. numpy in, numpy out; JAX in (a train step's batch), JAX out."""
  image_shape = tuple(image_shape)
  if tuple(rows.shape[1:]) == image_shape:
    return rows
  width = math.prod(image_shape) // 8
  if rows.ndim != 2 or rows.shape[1] != width or rows.dtype != np.uint8:
    raise ValueError(f'images of shape {tuple(rows.shape)} ({rows.dtype}) are neither '
                     f'[N, {", ".join(map(str, image_shape))}] nor bit-packed [N, {width}] '
                     'uint8 rows of such images')
  n, (h, w, c) = rows.shape[0], image_shape
  if isinstance(rows, np.ndarray):
    return (np.unpackbits(rows, axis=1) * np.uint8(255)).reshape((n,) + image_shape)
  # Pixel p is bit 7 - p % 8 (most significant first, as np.packbits) of byte p // 8: a
  # gather straight to [n, H, W, C]. No reshape: a host-fed batch is sharded on its
  # batch axis, and JAX refuses reshapes of such arrays that merge or split axes.
  pixel = np.arange(h * w * c).reshape(image_shape)
  bytes_ = jnp.take(rows, jnp.asarray(pixel // 8), axis=1)
  bits = (bytes_ >> jnp.asarray(7 - pixel % 8, jnp.uint8)) & 1
  return bits * np.uint8(255)


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


def batch_indices(data_key: jax.Array, first_step, num_steps: int, *, batch_size: int,
                  num_examples: int) -> jax.Array:
  """[num_steps, batch_size] example indices of the global batches of steps
  ``first_step, ..., first_step + num_steps - 1``: the one definition of the data order.

  Step s takes positions [p * b, (p + 1) * b) of epoch e's permutation, with
  (e, p) = divmod(s, num_examples // b) (an epoch's last num_examples mod b examples are
  left out). The permutation is drawn once per epoch (a cond at each epoch's first step),
  not per step. Integer-only (threefry and a sort), so the indices are the same whichever
  device computes them: the device-fed chunk computes them inside its program, the
  host-fed trainer on a host CPU device (``train_step.host_batch_indices``), and both
  train on the same batches. ``first_step`` may be traced (a jitted chunk's state.step).
  """
  steps_per_epoch = num_examples // batch_size

  def permutation_of(step):
    return epoch_permutation(data_key, step // steps_per_epoch, num_examples)

  def body(perm, step):
    position = step % steps_per_epoch
    perm = jax.lax.cond(position == 0, lambda: permutation_of(step), lambda: perm)
    return perm, jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)

  first_step = jnp.asarray(first_step, jnp.int32)
  steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
  _, indices = jax.lax.scan(body, permutation_of(first_step), steps)
  return indices
