"""Bilinear image warps: affine sampling matrices, sampling coordinates, resampling.

Deterministic functions of arrays that import nothing but jax; :mod:`vmivae_jax.data.augment`
draws random transforms and applies them with these (and re-exports them).

Images are [B, H, W] or [B, H, W, C] in any range (they are not clipped); sampling is
bilinear with zero fill outside the image.

Coordinate convention (used by every function here): a pixel is addressed by
(row, col) = (y, x), row 0 at the top; transforms act about the image centre
c = ((H - 1) / 2, (W - 1) / 2). A forward transform with linear part A and translation
t moves the input point p to A (p - c) + c + t. The warp is applied by inverse mapping:
output pixel p samples the input at A^-1 (p - c - t) + c. Matrices are therefore stored
as *sampling* matrices M [B, 2, 3] with input = M @ (row, col, 1) of the output pixel.
Rotations are in DEGREES; a positive angle turns the content the way ``jnp.rot90`` does
(counter-clockwise as displayed with row 0 at the top). Shear is an angle in degrees
(factor tan(angle), col' = col + tan(angle) * row, as torchvision's x-shear).
"""

import jax
import jax.numpy as jnp


def with_channels(images: jax.Array) -> tuple[jax.Array, bool]:
  """[B, H, W] -> [B, H, W, 1] (and a flag to undo it); [B, H, W, C] unchanged."""
  if images.ndim == 3:
    return images[..., None], True
  if images.ndim != 4:
    raise ValueError(f'images must be [B, H, W] or [B, H, W, C], got shape {images.shape}')
  return images, False


# ----------------------------------------------------------------------------------
# Affine sampling matrices.


def affine_from_params(*, rotation: jax.Array, scale: jax.Array, shear: jax.Array,
                       translation: jax.Array, height: int, width: int,
                       aspect: jax.Array | float = 1.0) -> jax.Array:
  """Sampling matrices [B, 2, 3] of forward transforms given by their parameters.

  Forward linear part A = R(rotation) @ Shear(shear) @ diag(scale * a, scale / a) with
  a = sqrt(aspect) (row axis, col axis), R(t) = [[cos t, -sin t], [sin t, cos t]] in
  (row, col) coordinates, Shear(s) = [[1, 0], [tan s, 1]]. The returned sampling matrix
  is M = [A^-1 | c - A^-1 (c + t)] (see the module docstring).

  Args:
    rotation: [B] angles in degrees (positive = the ``jnp.rot90`` direction).
    scale: [B] isotropic zoom factors (> 1 enlarges the content).
    shear: [B] shear angles in degrees.
    translation: [B, 2] shifts (rows, cols) in pixels (+ moves content down / right).
    height, width: image size (static), fixing the centre ((H-1)/2, (W-1)/2).
    aspect: [B] or scalar ratio of row zoom to col zoom (1 = isotropic).

  Returns:
    [B, 2, 3] float32 sampling matrices.

  >>> import jax.numpy as jnp
  >>> m = affine_from_params(rotation=jnp.zeros(1), scale=jnp.ones(1), shear=jnp.zeros(1),
  ...                        translation=jnp.array([[1.0, -2.0]]), height=5, width=5)
  >>> (m[0] + 0.0).tolist()
  [[1.0, 0.0, -1.0], [0.0, 1.0, 2.0]]
  """
  rotation = jnp.asarray(rotation, jnp.float32)
  theta = jnp.deg2rad(rotation)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  shear_factor = jnp.tan(jnp.deg2rad(jnp.asarray(shear, jnp.float32)))
  scale = jnp.asarray(scale, jnp.float32)
  root_aspect = jnp.sqrt(jnp.asarray(aspect, jnp.float32))
  s_row = jnp.broadcast_to(scale * root_aspect, rotation.shape)
  s_col = jnp.broadcast_to(scale / root_aspect, rotation.shape)
  # A = R @ Sh @ S, written out: Sh @ S = [[s_row, 0], [k s_row, s_col]].
  a00 = cos * s_row - sin * shear_factor * s_row
  a01 = -sin * s_col
  a10 = sin * s_row + cos * shear_factor * s_row
  a11 = cos * s_col
  det = a00 * a11 - a01 * a10
  i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
  inverse = jnp.stack([jnp.stack([i00, i01], -1), jnp.stack([i10, i11], -1)], -2)
  centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0], jnp.float32)
  shifted = centre + jnp.asarray(translation, jnp.float32)          # [B, 2]
  offset = centre - jnp.einsum('bij,bj->bi', inverse, shifted)
  return jnp.concatenate([inverse, offset[..., None]], axis=-1)


def compose_affine(first: jax.Array, second: jax.Array) -> jax.Array:
  """Sampling matrix of "warp by ``first``, then by ``second``" ([..., 2, 3] each).

  Warping by ``first`` then ``second`` samples the original at first(second(p)), so the
  result is first @ second in homogeneous coordinates. (Bilinear resampling twice blurs
  more than once, so the images agree only approximately.)
  """
  lin = first[..., :2] @ second[..., :2]
  off = (first[..., :2] @ second[..., 2:])[..., 0] + first[..., 2]
  return jnp.concatenate([lin, off[..., None]], axis=-1)


def invert_affine(matrices: jax.Array) -> jax.Array:
  """The inverse transform's sampling matrix ([..., 2, 3] -> [..., 2, 3])."""
  lin = jnp.linalg.inv(matrices[..., :2])
  off = -(lin @ matrices[..., 2:])[..., 0]
  return jnp.concatenate([lin, off[..., None]], axis=-1)


# ----------------------------------------------------------------------------------
# Sampling.


def pixel_grid(height: int, width: int) -> jax.Array:
  """[H, W, 2] float32 (row, col) coordinates of every pixel."""
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing='ij')
  return jnp.stack([rows, cols], axis=-1)


def affine_coordinates(matrices: jax.Array, height: int, width: int) -> jax.Array:
  """[B, H, W, 2] input (row, col) sampled by each output pixel: M @ (row, col, 1)."""
  grid = pixel_grid(height, width)
  return (jnp.einsum('bij,hwj->bhwi', matrices[..., :2], grid)
          + matrices[:, None, None, :, 2])


def sample_bilinear(images: jax.Array, coordinates: jax.Array) -> jax.Array:
  """Bilinear interpolation of each image at real-valued (row, col); 0 outside.

  out[b, i, j] = sum over the 4 neighbours n of coordinates[b, i, j] of
  w_n * images[b, n] (w_n the bilinear weights; out-of-image neighbours count as 0).
  Implemented as 4 gathers on the flattened image.

  Args:
    images: [B, H, W] or [B, H, W, C].
    coordinates: [B, H', W', 2] (row, col) in input pixel units.

  Returns:
    [B, H', W'] or [B, H', W', C], the dtype of ``images``.

  >>> import jax.numpy as jnp
  >>> img = jnp.arange(4.0).reshape(1, 2, 2)
  >>> sample_bilinear(img, jnp.array([[[[0.5, 0.5]]]])).tolist()
  [[[1.5]]]
  """
  x, squeeze = with_channels(images)
  batch, height, width, channels = x.shape
  flat = x.reshape(batch, height * width, channels)
  coordinates = coordinates.astype(jnp.float32)
  out_shape = coordinates.shape[1:3]
  r = coordinates[..., 0].reshape(batch, -1)
  c = coordinates[..., 1].reshape(batch, -1)
  r0, c0 = jnp.floor(r), jnp.floor(c)
  fr, fc = r - r0, c - c0
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
  out = 0.0
  for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                         (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
    rr, cc = r0 + dr, c0 + dc
    inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
    index = jnp.clip(rr, 0, height - 1) * width + jnp.clip(cc, 0, width - 1)
    values = jnp.take_along_axis(flat, index[..., None], axis=1)     # [B, N, C]
    out = out + jnp.where(inside, weight, 0.0)[..., None] * values
  out = out.reshape(batch, *out_shape, channels).astype(images.dtype)
  return out[..., 0] if squeeze else out


def apply_affine(images: jax.Array, matrices: jax.Array) -> jax.Array:
  """Warp each image by its sampling matrix (bilinear, zero fill); shape kept.

  out[b, p] = images[b](M_b @ (p, 1)) for every output pixel p = (row, col).

  >>> import jax.numpy as jnp
  >>> x = jnp.arange(9.0).reshape(1, 3, 3)
  >>> shift = jnp.array([[[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]])  # content moves right
  >>> apply_affine(x, shift)[0].tolist()
  [[0.0, 0.0, 1.0], [0.0, 3.0, 4.0], [0.0, 6.0, 7.0]]
  """
  height, width = images.shape[1], images.shape[2]
  return sample_bilinear(images, affine_coordinates(matrices, height, width))
