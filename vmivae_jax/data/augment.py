"""Random image augmentation on device: affine warps, elastic distortion, stroke thickness.

Pure functions of arrays that import nothing but jax. They take a PRNG key (the train
step passes ``jax.random.fold_in(key, step)``), draw one transform per example, work
under ``jit`` and ``vmap`` and do no Python work per step: every hyper-parameter is a
static Python number and 0 switches a part off.

Images are [B, H, W] or [B, H, W, C] in any range (they are not clipped). Warps use
bilinear interpolation with zero fill outside the image (:mod:`vmivae_jax.data.warp`, whose
coordinate convention every transform here follows and whose functions this module
re-exports).

>>> import jax, jax.numpy as jnp
>>> from vmivae_jax.data import augment
>>> x = jnp.zeros((2, 28, 28)).at[:, 10:18, 12:16].set(1.0)
>>> y = augment.augment(jax.random.key(0), x, max_rotation=15.0, max_translation=2.0)
>>> y.shape, y.dtype
((2, 28, 28), dtype('float32'))
>>> bool(jnp.all(augment.augment(jax.random.key(0), x) == x))  # everything off
True
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from vmivae_jax.data import warp
# Deterministic warps live in warp.py; re-exported because augment is where users look.
from vmivae_jax.data.warp import affine_coordinates
from vmivae_jax.data.warp import affine_from_params
from vmivae_jax.data.warp import apply_affine
from vmivae_jax.data.warp import compose_affine
from vmivae_jax.data.warp import invert_affine  # pylint: disable=unused-import
from vmivae_jax.data.warp import pixel_grid
from vmivae_jax.data.warp import sample_bilinear


def _is_off(value) -> bool:
  """True when a hyper-parameter is the static number 0 (the part is skipped)."""
  return isinstance(value, (int, float)) and value == 0


# ----------------------------------------------------------------------------------
# Random affine warps.


def affine_matrices(key: jax.Array, batch: int, *, height: int, width: int,
                    max_rotation: float = 0.0, max_scale: float = 0.0,
                    max_aspect: float = 0.0, max_shear: float = 0.0,
                    max_translation: float = 0.0) -> jax.Array:
  """[B, 2, 3] random sampling matrices, one independent transform per example.

  rotation ~ U[-max_rotation, max_rotation] degrees; scale ~ U[1 - max_scale,
  1 + max_scale]; aspect = exp(U[-log(1+max_aspect), log(1+max_aspect)]) (row/col zoom
  ratio); shear ~ U[-max_shear, max_shear] degrees; each translation axis ~
  U[-max_translation, max_translation] pixels. All zeros give the identity.

  >>> import jax
  >>> m = affine_matrices(jax.random.key(0), 3, height=28, width=28, max_rotation=10.0)
  >>> m.shape
  (3, 2, 3)
  """
  k_rot, k_scale, k_aspect, k_shear, k_shift = jax.random.split(key, 5)

  def sym(k, bound, shape=(batch,)):
    return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

  zeros = jnp.zeros((batch,), jnp.float32)
  rotation = zeros if _is_off(max_rotation) else sym(k_rot, max_rotation)
  scale = 1.0 + (zeros if _is_off(max_scale) else sym(k_scale, max_scale))
  aspect = (jnp.ones((batch,), jnp.float32) if _is_off(max_aspect)
            else jnp.exp(sym(k_aspect, math.log1p(max_aspect))))
  shear = zeros if _is_off(max_shear) else sym(k_shear, max_shear)
  translation = (jnp.zeros((batch, 2), jnp.float32) if _is_off(max_translation)
                 else sym(k_shift, max_translation, (batch, 2)))
  return affine_from_params(rotation=rotation, scale=scale, shear=shear,
                            translation=translation, aspect=aspect,
                            height=height, width=width)


def random_affine(key: jax.Array, images: jax.Array, *, max_rotation: float = 0.0,
                  max_scale: float = 0.0, max_aspect: float = 0.0, max_shear: float = 0.0,
                  max_translation: float = 0.0) -> jax.Array:
  """Random per-example affine warp: :func:`affine_matrices` then :func:`apply_affine`.

  Ranges as in :func:`affine_matrices` (rotation and shear in degrees, translation in
  pixels). Shape and dtype of ``images`` are kept.
  """
  matrices = affine_matrices(key, images.shape[0], height=images.shape[1],
                             width=images.shape[2], max_rotation=max_rotation,
                             max_scale=max_scale, max_aspect=max_aspect,
                             max_shear=max_shear, max_translation=max_translation)
  return apply_affine(images, matrices)


def crop_matrices(key: jax.Array, batch: int, *, height: int, width: int, min_area: float,
                  max_aspect: float = 0.0) -> jax.Array:
  """[B, 2, 3] sampling matrices of random resized crops (torchvision's RandomResizedCrop).

  Each crop covers a fraction a ~ U[min_area, 1] of the image's area with width/height
  ratio r = exp(U[-log(1+max_aspect), log(1+max_aspect)]) (both sides capped at the
  image's), at a uniform position inside the image, and is resized to the full image:
  output pixel p samples the input at o + diag(h/H, w/W) (p - c), with c the image
  centre, o the crop's centre, h = sqrt(a H W / r) and w = sqrt(a H W r) its sides.

  >>> import jax
  >>> m = crop_matrices(jax.random.key(0), 2, height=28, width=28, min_area=0.4)
  >>> m.shape
  (2, 2, 3)
  """
  k_area, k_aspect, k_centre = jax.random.split(key, 3)
  area = jax.random.uniform(k_area, (batch,), jnp.float32, min_area, 1.0)
  log_ratio = (jnp.zeros((batch,), jnp.float32) if _is_off(max_aspect) else
               jax.random.uniform(k_aspect, (batch,), jnp.float32, -math.log1p(max_aspect),
                                  math.log1p(max_aspect)))
  size = jnp.array([height, width], jnp.float32)
  sides = jnp.minimum(jnp.sqrt(area[:, None] * height * width * jnp.exp(
      jnp.stack([-log_ratio, log_ratio], axis=1))), size)           # [B, 2] (h, w)
  slack = (size - sides) / 2.0
  centre = (size - 1.0) / 2.0
  crop_centre = centre + jax.random.uniform(k_centre, (batch, 2), jnp.float32, -1.0, 1.0) * slack
  zoom = sides / size
  offset = crop_centre - zoom * centre
  zeros = jnp.zeros((batch,), jnp.float32)
  return jnp.stack([jnp.stack([zoom[:, 0], zeros, offset[:, 0]], axis=1),
                    jnp.stack([zeros, zoom[:, 1], offset[:, 1]], axis=1)], axis=1)


# ----------------------------------------------------------------------------------
# Elastic distortion (Simard, Steinkraus & Platt 2003).


def _gaussian_smoothing_matrix(size: int, sigma: float) -> jax.Array:
  """[size, size] zero-padded Gaussian blur as a matrix (row i = kernel centred at i)."""
  idx = jnp.arange(size, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
  radius = max(1, int(math.ceil(3 * sigma)))
  # Normalise by the full (untruncated by the border) kernel mass, as zero padding does.
  full = jnp.exp(-0.5 * (jnp.arange(-radius, radius + 1, dtype=jnp.float32) / sigma) ** 2)
  return kernel / jnp.sum(full)


def elastic_displacement(key: jax.Array, batch: int, *, height: int, width: int,
                         alpha: float, sigma: float) -> jax.Array:
  """[B, H, W, 2] smooth random displacement fields in pixels.

  Simard et al. (2003): d = alpha * G_sigma * U[-1, 1]^(H x W) per axis, with G_sigma a
  Gaussian blur (here separable: G_H @ u @ G_W^T with zero padding). MNIST values in
  the paper: alpha = 34, sigma = 4 (strong); alpha ~ 8-15 with sigma = 3-4 are milder.
  """
  noise = jax.random.uniform(key, (batch, 2, height, width), jnp.float32, -1.0, 1.0)
  g_h = _gaussian_smoothing_matrix(height, sigma)
  g_w = _gaussian_smoothing_matrix(width, sigma)
  smooth = jnp.einsum('ij,bcjk,lk->bcil', g_h, noise, g_w)
  return alpha * jnp.moveaxis(smooth, 1, -1)


def elastic_distort(key: jax.Array, images: jax.Array, *, alpha: float,
                    sigma: float = 4.0) -> jax.Array:
  """Warp by a random smooth displacement: out[p] = images(p + d(p)) (bilinear, 0 fill)."""
  batch, height, width = images.shape[:3]
  field = elastic_displacement(key, batch, height=height, width=width, alpha=alpha,
                               sigma=sigma)
  return sample_bilinear(images, pixel_grid(height, width) + field)


# ----------------------------------------------------------------------------------
# Stroke thickness: grey-scale morphology.


def _pool3x3(images: jax.Array, *, maximum: bool, footprint: str) -> jax.Array:
  if footprint not in ('square', 'cross'):
    raise ValueError(f"footprint must be 'square' or 'cross', got {footprint!r}")
  x, squeeze = warp.with_channels(images)
  init = -jnp.inf if maximum else jnp.inf
  op = lax.max if maximum else lax.min
  if footprint == 'square':
    out = lax.reduce_window(x, jnp.array(init, x.dtype), op, (1, 3, 3, 1), (1, 1, 1, 1),
                            'SAME')
  else:  # centre and its 4 neighbours
    height, width = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=init)
    out = x
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
      out = op(out, padded[:, dr:dr + height, dc:dc + width])
  return out[..., 0] if squeeze else out


def dilate(images: jax.Array, *, footprint: str = 'square') -> jax.Array:
  """Grey-scale dilation: 3x3 max filter (the border is not padded with zeros).

  Thickens bright strokes on a dark background by one pixel on each side. ``footprint``
  'square' (3x3) or 'cross' (centre + 4 neighbours: milder, keeps corners).

  >>> import jax.numpy as jnp
  >>> x = jnp.zeros((1, 5, 5)).at[0, 2, 2].set(1.0)
  >>> int(dilate(x).sum()), int(dilate(x, footprint='cross').sum())
  (9, 5)
  """
  return _pool3x3(images, maximum=True, footprint=footprint)


def erode(images: jax.Array, *, footprint: str = 'square') -> jax.Array:
  """Grey-scale erosion: 3x3 min filter (thins bright strokes by one pixel).

  On MNIST (strokes 2-3 px wide) the square erosion erases thin digits; prefer a small
  ``erode_prob`` or the 'cross' footprint.
  """
  return _pool3x3(images, maximum=False, footprint=footprint)


def random_thickness(key: jax.Array, images: jax.Array, *, dilate_prob: float = 0.0,
                     erode_prob: float = 0.0, footprint: str = 'square') -> jax.Array:
  """Per example: dilate with prob ``dilate_prob``, else erode with prob ``erode_prob``.

  One uniform u per example: u < dilate_prob -> dilate; dilate_prob <= u <
  dilate_prob + erode_prob -> erode; otherwise unchanged. Requires dilate_prob +
  erode_prob <= 1.
  """
  if dilate_prob + erode_prob > 1.0:
    raise ValueError(f'dilate_prob + erode_prob must be <= 1, got {dilate_prob + erode_prob}')
  if _is_off(dilate_prob) and _is_off(erode_prob):
    return images
  u = jax.random.uniform(key, (images.shape[0],) + (1,) * (images.ndim - 1))
  out = images
  if not _is_off(erode_prob):
    eroded = erode(images, footprint=footprint)
    out = jnp.where((u >= dilate_prob) & (u < dilate_prob + erode_prob), eroded, out)
  if not _is_off(dilate_prob):
    out = jnp.where(u < dilate_prob, dilate(images, footprint=footprint), out)
  return out


# ----------------------------------------------------------------------------------
# Everything together.


def augment(key: jax.Array, images: jax.Array, *, max_rotation: float = 0.0,
            max_scale: float = 0.0, max_aspect: float = 0.0, max_shear: float = 0.0,
            max_translation: float = 0.0, elastic_alpha: float = 0.0,
            elastic_sigma: float = 4.0, dilate_prob: float = 0.0,
            erode_prob: float = 0.0, thickness_footprint: str = 'square',
            flip_prob: float = 0.0, crop_min_area: float = 1.0,
            crop_max_aspect: float = 0.0) -> jax.Array:
  """Random left-right mirror and stroke thickness, then ONE bilinear resampling for
  crop + affine + elastic warps.

  x' = thickness(mirror(x));  out[p] = x'(M p + d(p)), with M the crop's sampling matrix
  (:func:`crop_matrices`) composed with :func:`affine_matrices`' (the crop, resized,
  is then warped) and d from :func:`elastic_displacement` (in output pixel units). Every
  part is off at 0 (the crop at crop_min_area 1); with all off the input is returned
  unchanged. Hyper-parameters are static Python numbers.

  Args:
    key: PRNG key (split internally into one key per part).
    images: [B, H, W] or [B, H, W, C].
    max_rotation: degrees. max_scale: relative zoom range. max_aspect: relative row/col
      zoom ratio range. max_shear: degrees. max_translation: pixels per axis.
    elastic_alpha, elastic_sigma: elastic field strength (pixels) and smoothness.
    dilate_prob, erode_prob: per-example probabilities of a 3x3 dilation / erosion.
    thickness_footprint: 'square' or 'cross' (see :func:`dilate`).
    flip_prob: per-example probability of a left-right mirror (exact; for data whose
      class is mirror-invariant, e.g. clothing, not digits).
    crop_min_area, crop_max_aspect: random resized crops (:func:`crop_matrices`); its
      own key, so the other parts' draws stay as without it.

  Returns:
    Augmented images, same shape and dtype.
  """
  k_thick, k_affine, k_elastic = jax.random.split(key, 3)
  if not _is_off(flip_prob):  # its own key: the other parts' draws stay as without it
    flip = jax.random.uniform(jax.random.fold_in(key, 3), (images.shape[0],)) < flip_prob
    images = jnp.where(flip.reshape((-1,) + (1,) * (images.ndim - 1)), images[:, :, ::-1],
                       images)
  x = random_thickness(k_thick, images, dilate_prob=dilate_prob, erode_prob=erode_prob,
                       footprint=thickness_footprint)
  affine_off = all(_is_off(v) for v in (max_rotation, max_scale, max_aspect, max_shear,
                                        max_translation))
  crop_off = isinstance(crop_min_area, (int, float)) and crop_min_area == 1
  elastic_off = _is_off(elastic_alpha)
  if affine_off and crop_off and elastic_off:
    return x
  batch, height, width = images.shape[:3]
  matrices = None
  if not affine_off:
    matrices = affine_matrices(k_affine, batch, height=height, width=width,
                               max_rotation=max_rotation, max_scale=max_scale,
                               max_aspect=max_aspect, max_shear=max_shear,
                               max_translation=max_translation)
  if not crop_off:
    crop = crop_matrices(jax.random.fold_in(key, 4), batch, height=height, width=width,
                         min_area=crop_min_area, max_aspect=crop_max_aspect)
    matrices = crop if matrices is None else compose_affine(crop, matrices)
  if matrices is None:
    coordinates = jnp.broadcast_to(pixel_grid(height, width), (batch, height, width, 2))
  else:
    coordinates = affine_coordinates(matrices, height, width)
  if not elastic_off:
    coordinates = coordinates + elastic_displacement(
        k_elastic, batch, height=height, width=width, alpha=elastic_alpha,
        sigma=elastic_sigma)
  return sample_bilinear(x, coordinates)
