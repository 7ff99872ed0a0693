"""Random augmentation (vmivae_jax.data.augment): warps checked against exact shifts/rotations."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax.data import augment
from vmivae_jax.data import warp

H = W = 9

# Jitted once per set of hyper-parameters (eager op-by-op dispatch is slow on a busy CPU).
_augment = jax.jit(augment.augment, static_argnames=(
    'max_rotation', 'max_scale', 'max_aspect', 'max_shear', 'max_translation',
    'elastic_alpha', 'elastic_sigma', 'dilate_prob', 'erode_prob', 'thickness_footprint',
    'flip_prob', 'crop_min_area', 'crop_max_aspect'))


def _images(batch=3, channels=None, seed=0):
  rng = np.random.default_rng(seed)
  shape = (batch, H, W) if channels is None else (batch, H, W, channels)
  return jnp.asarray(rng.random(shape).astype(np.float32))


def _params(batch=1, rotation=0.0, scale=1.0, shear=0.0, translation=(0.0, 0.0), aspect=1.0):
  return augment.affine_from_params(
      rotation=jnp.full((batch,), rotation), scale=jnp.full((batch,), scale),
      shear=jnp.full((batch,), shear), translation=jnp.tile(jnp.array([translation]), (batch, 1)),
      aspect=jnp.full((batch,), aspect), height=H, width=W)


def _shift_numpy(x, dr, dc):
  """Content moved down by dr and right by dc, zero fill (np.roll without wrap-around)."""
  out = np.zeros_like(x)
  src = x[:, max(0, -dr):H - max(0, dr), max(0, -dc):W - max(0, dc)]
  out[:, max(0, dr):H - max(0, -dr), max(0, dc):W - max(0, -dc)] = src
  return out


def test_docstring_examples():
  results = doctest.testmod(augment, verbose=False, report=False)
  assert results.attempted >= 8
  assert results.failed == 0
  results = doctest.testmod(warp, verbose=False, report=False)
  assert results.attempted >= 8
  assert results.failed == 0


def test_augment_still_offers_the_warps_that_moved_to_warp():
  for name in ('affine_from_params', 'compose_affine', 'invert_affine', 'pixel_grid',
               'affine_coordinates', 'sample_bilinear', 'apply_affine'):
    assert getattr(augment, name) is getattr(warp, name), name


@pytest.mark.parametrize('channels', [None, 2])
def test_identity_parameters_give_the_identity_exactly(channels):
  x = _images(channels=channels)
  np.testing.assert_array_equal(augment.apply_affine(x, _params(3)), x)
  # Ranges of zero (all parts off) too, through the random path.
  y = augment.random_affine(jax.random.key(0), x)
  np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize('dr,dc', [(1, 0), (0, -2), (2, 3), (-3, -1)])
def test_integer_translation_is_a_zero_filled_shift(dr, dc):
  x = _images()
  y = augment.apply_affine(x, _params(3, translation=(float(dr), float(dc))))
  np.testing.assert_allclose(y, _shift_numpy(np.asarray(x), dr, dc), atol=1e-6)


def test_rotation_by_90_degrees_is_rot90_about_the_centre():
  x = _images(channels=1)
  for k in (1, 2, 3, -1):
    y = augment.apply_affine(x, _params(3, rotation=90.0 * k))
    np.testing.assert_allclose(y, jnp.rot90(x, k, axes=(1, 2)), atol=1e-5)


def test_scale_about_the_centre_moves_a_pixel_away_from_the_centre():
  x = jnp.zeros((1, H, W)).at[0, 5, 4].set(1.0)       # one step below the centre (4, 4)
  y = augment.apply_affine(x, _params(1, scale=2.0))
  assert y[0, 6, 4] == pytest.approx(1.0, abs=1e-6)   # (5-4)*2+4 = 6
  assert y[0, 4, 4] == pytest.approx(0.0, abs=1e-6)


def test_shear_moves_columns_in_proportion_to_the_row():
  # col' = col + tan(45 deg) * (row - 4)
  x = jnp.zeros((1, H, W)).at[0, 6, 4].set(1.0)
  y = augment.apply_affine(x, _params(1, shear=45.0))
  assert y[0, 6, 6] == pytest.approx(1.0, abs=1e-5)


def test_composition_and_inverse():
  a = augment.affine_matrices(jax.random.key(1), 4, height=H, width=W, max_rotation=30.0,
                              max_scale=0.2, max_shear=10.0, max_translation=2.0)
  b = augment.affine_matrices(jax.random.key(2), 4, height=H, width=W, max_rotation=30.0,
                              max_translation=2.0)
  identity = _params(4)
  np.testing.assert_allclose(augment.compose_affine(a, augment.invert_affine(a)), identity,
                             atol=1e-5)
  # compose(a, b) maps output points like a(b(p)).
  p = jnp.array([1.0, 7.0, 1.0])
  ab = augment.compose_affine(a, b)
  bp = jnp.einsum('bij,j->bi', b, p)
  abp = jnp.einsum('bij,bj->bi', a, jnp.concatenate([bp, jnp.ones((4, 1))], -1))
  np.testing.assert_allclose(jnp.einsum('bij,j->bi', ab, p), abp, atol=1e-5)
  # Two 90-degree rotations then translation by (1, 0) equal rot180 composed with shift.
  r90 = _params(1, rotation=90.0)
  shift = _params(1, translation=(1.0, 0.0))
  x = _images(1)
  direct = augment.apply_affine(x, augment.compose_affine(augment.compose_affine(r90, r90),
                                                          shift))
  expect = _shift_numpy(np.asarray(jnp.rot90(x, 2, axes=(1, 2))), 1, 0)
  np.testing.assert_allclose(direct, expect, atol=1e-5)


def test_sampled_parameters_respect_their_bounds():
  n = 2000
  for kwargs, check in [
      (dict(max_translation=2.5), 'translation'),
      (dict(max_rotation=20.0), 'rotation'),
      (dict(max_scale=0.15), 'scale')]:
    m = augment.affine_matrices(jax.random.key(3), n, height=H, width=W, **kwargs)
    inv = augment.invert_affine(m)              # the forward transforms
    lin, off = np.asarray(inv[:, :, :2]), np.asarray(inv[:, :, 2])
    c = (H - 1) / 2
    t = off - (c - lin @ np.array([c, c]))      # forward: A (p - c) + c + t
    if check == 'translation':
      np.testing.assert_allclose(lin, np.broadcast_to(np.eye(2), lin.shape), atol=1e-5)
      assert np.abs(t).max() <= 2.5 + 1e-5 and np.abs(t).max() > 2.3
      assert abs(t.mean()) < 0.1
    elif check == 'rotation':
      angle = np.degrees(np.arctan2(lin[:, 1, 0], lin[:, 0, 0]))
      assert np.abs(angle).max() <= 20.0 + 1e-3 and np.abs(angle).max() > 19.0
      np.testing.assert_allclose(np.linalg.det(lin), 1.0, atol=1e-5)
      np.testing.assert_allclose(t, 0.0, atol=1e-4)
    else:
      s = np.sqrt(np.linalg.det(lin))
      assert s.min() >= 0.85 - 1e-5 and s.max() <= 1.15 + 1e-5
      assert s.min() < 0.86 and s.max() > 1.14
      np.testing.assert_allclose(lin[:, 0, 1], 0.0, atol=1e-6)


def test_shear_and_aspect_bounds():
  m = augment.affine_matrices(jax.random.key(4), 2000, height=H, width=W, max_shear=10.0,
                              max_aspect=0.2)
  lin = np.asarray(augment.invert_affine(m)[:, :, :2])   # [[sr, 0], [k sr, sc]]
  np.testing.assert_allclose(lin[:, 0, 1], 0.0, atol=1e-6)
  ratio = lin[:, 0, 0] / lin[:, 1, 1]
  assert ratio.max() <= 1.2 + 1e-4 and ratio.min() >= 1 / 1.2 - 1e-4
  shear = np.degrees(np.arctan(lin[:, 1, 0] / lin[:, 0, 0]))
  assert np.abs(shear).max() <= 10.0 + 1e-3 and np.abs(shear).max() > 9.5


def test_determinism_given_the_key_and_different_transforms_per_example():
  x = jnp.tile(_images(1), (4, 1, 1))                    # four copies of one image
  kwargs = dict(max_rotation=20.0, max_translation=2.0, elastic_alpha=3.0, dilate_prob=0.5)
  y1 = _augment(jax.random.key(5), x, **kwargs)
  y2 = _augment(jax.random.key(5), x, **kwargs)
  y3 = _augment(jax.random.key(6), x, **kwargs)
  np.testing.assert_array_equal(y1, y2)
  assert not np.allclose(y1, y3)
  for i in range(4):
    for j in range(i):
      assert not np.allclose(y1[i], y1[j])


def test_dilation_of_a_single_pixel_is_a_3x3_square_and_erosion_undoes_it():
  x = jnp.zeros((1, H, W)).at[0, 0, 4].set(0.7).at[0, 6, 6].set(1.0)
  d = augment.dilate(x)
  expect = np.zeros((H, W), np.float32)
  expect[0:2, 3:6] = 0.7                                 # clipped at the top border
  expect[5:8, 5:8] = 1.0
  np.testing.assert_array_equal(d[0], expect)
  np.testing.assert_array_equal(augment.erode(d), x)
  np.testing.assert_array_equal(augment.erode(x), 0.0)
  # Channels are filtered separately.
  x2 = jnp.stack([x, 2 * x], -1)
  np.testing.assert_array_equal(augment.dilate(x2)[..., 1], 2 * d)
  # The cross footprint: centre + 4 neighbours, also not padded with zeros.
  c = augment.dilate(x, footprint='cross')
  expect = np.zeros((H, W), np.float32)
  expect[0, 3:6] = expect[1, 4] = 0.7
  expect[5:8, 6] = expect[6, 5:8] = 1.0
  np.testing.assert_array_equal(c[0], expect)
  np.testing.assert_array_equal(augment.erode(c, footprint='cross'), x)
  block = jnp.ones((1, H, W))
  np.testing.assert_array_equal(augment.erode(block, footprint='cross'), block)
  with pytest.raises(ValueError):
    augment.dilate(x, footprint='disk')


def test_random_thickness_probabilities():
  x = jnp.zeros((4000, 5, 5)).at[:, 2, 2].set(1.0)
  y = augment.random_thickness(jax.random.key(7), x, dilate_prob=0.3, erode_prob=0.2)
  total = np.asarray(y.sum((1, 2)))
  assert set(np.unique(total).tolist()) == {0.0, 1.0, 9.0}
  assert abs((total == 9).mean() - 0.3) < 0.03
  assert abs((total == 0).mean() - 0.2) < 0.03
  with pytest.raises(ValueError):
    augment.random_thickness(jax.random.key(7), x, dilate_prob=0.7, erode_prob=0.5)


def test_elastic_distortion_is_smooth_bounded_and_off_at_zero():
  field = augment.elastic_displacement(jax.random.key(8), 16, height=28, width=28,
                                       alpha=10.0, sigma=4.0)
  assert field.shape == (16, 28, 28, 2)
  f = np.asarray(field)
  # Smooth: neighbouring displacements differ much less than the displacement itself.
  assert np.abs(np.diff(f, axis=1)).mean() < 0.3 * np.abs(f).mean()
  assert 0.05 < np.abs(f).mean() < 10.0
  x = _images()
  np.testing.assert_array_equal(_augment(jax.random.key(8), x, elastic_alpha=0.0), x)
  assert not np.allclose(augment.elastic_distort(jax.random.key(8), x, alpha=2.0), x)


@pytest.mark.parametrize('shape', [(5, H, W), (5, H, W, 3)])
def test_shape_dtype_jit_and_vmap(shape):
  x = jnp.asarray(np.random.default_rng(0).random(shape).astype(np.float32))
  kwargs = dict(max_rotation=10.0, max_scale=0.1, max_shear=5.0, max_translation=1.0,
                elastic_alpha=2.0, dilate_prob=0.2, erode_prob=0.2)
  y = _augment(jax.random.key(0), x, **kwargs)
  assert y.shape == x.shape and y.dtype == jnp.float32
  # vmap over an outer axis (e.g. several augmented views, one key each).
  keys = jax.random.split(jax.random.key(1), 2)
  views = jax.jit(jax.vmap(lambda k: augment.augment(k, x, **kwargs)))(keys)
  assert views.shape == (2,) + x.shape
  np.testing.assert_allclose(views[1], _augment(keys[1], x, **kwargs), atol=1e-6)
  # The train step derives the key by fold_in from a traced step.
  step_fn = jax.jit(lambda step: augment.augment(jax.random.fold_in(jax.random.key(2), step),
                                                 x, **kwargs))
  assert not np.allclose(step_fn(0), step_fn(1))


def test_warps_are_differentiable_in_the_image():
  x = _images()
  m = _params(3, rotation=17.0, translation=(0.3, -0.6))
  g = jax.grad(lambda x: jnp.sum(augment.apply_affine(x, m) ** 2))(x)
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


@pytest.mark.parametrize('channels', [None, 1])
def test_flip_mirrors_exactly_and_leaves_the_other_draws_unchanged(channels):
  x = _images(batch=64, channels=channels)
  key = jax.random.PRNGKey(3)
  mirrored = x[:, :, ::-1]
  np.testing.assert_array_equal(_augment(key, x, flip_prob=1.0), mirrored)
  np.testing.assert_array_equal(_augment(key, x, flip_prob=0.0), x)
  # Half the examples mirrored, the rest untouched, each exactly one of the two.
  half = np.asarray(_augment(key, x, flip_prob=0.5))
  is_mirror = np.all(half == np.asarray(mirrored), axis=tuple(range(1, x.ndim)))
  is_same = np.all(half == np.asarray(x), axis=tuple(range(1, x.ndim)))
  assert np.all(is_mirror | is_same) and 16 < is_mirror.sum() < 48
  # The rotation / thickness draws do not depend on whether flips are on.
  both = _augment(key, x, max_rotation=20.0, dilate_prob=0.5, flip_prob=1.0)
  np.testing.assert_array_equal(both, _augment(key, mirrored, max_rotation=20.0, dilate_prob=0.5))


def test_crops_cover_the_drawn_area_with_the_drawn_aspect_inside_the_image():
  """Sampling matrices of random resized crops: the crop (the preimage of the output
  image) has area fraction in [min_area, 1], width/height ratio within the bound, and
  lies inside the input image."""
  m = np.asarray(augment.crop_matrices(jax.random.key(0), 4000, height=28, width=20,
                                       min_area=0.4, max_aspect=1 / 3))
  zoom_rows, zoom_cols = m[:, 0, 0], m[:, 1, 1]
  np.testing.assert_array_equal(m[:, 0, 1], 0.0)
  np.testing.assert_array_equal(m[:, 1, 0], 0.0)
  area = zoom_rows * zoom_cols
  assert area.min() >= 0.4 - 1e-6 and area.max() <= 1 + 1e-6
  assert area.min() < 0.45 and np.median(area) < 0.75   # uniform area, not uniform sides
  ratio = (zoom_cols * 20) / (zoom_rows * 28)          # crop width / crop height
  free = (zoom_rows < 1 - 1e-6) & (zoom_cols < 1 - 1e-6)   # a side at the image's is capped
  assert free.mean() > 0.5
  ratio = ratio[free]
  assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
  assert ratio.min() < 0.8 and ratio.max() > 1.25
  for corner in ((-0.5, -0.5), (27.5, 19.5)):          # the output image's outer edges
    rows = m[:, 0, 0] * corner[0] + m[:, 0, 2]
    cols = m[:, 1, 1] * corner[1] + m[:, 1, 2]
    # The window of output pixel areas maps inside the input's [-0.5, H - 0.5] x [-0.5, W - 0.5].
    assert rows.min() >= -0.5 - 1e-4 and rows.max() <= 27.5 + 1e-4
    assert cols.min() >= -0.5 - 1e-4 and cols.max() <= 19.5 + 1e-4
  square = np.asarray(augment.crop_matrices(jax.random.key(1), 100, height=28, width=28,
                                            min_area=0.5))
  np.testing.assert_allclose(square[:, 0, 0], square[:, 1, 1])   # no aspect change


def test_crop_resizes_the_cropped_window_to_the_whole_image():
  """On a ramp image (value = row + 2 col) bilinear sampling is exact inside, so the
  cropped image is the ramp seen through the sampling matrix; off (min area 1) is the
  identity, bitwise."""
  rows, cols = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32),
                           indexing='ij')
  ramp = jnp.asarray(np.broadcast_to(rows + 2 * cols, (5, H, W)))
  key = jax.random.key(2)
  out = np.asarray(_augment(key, ramp, crop_min_area=0.3))
  m = np.asarray(augment.crop_matrices(jax.random.fold_in(key, 4), 5, height=H, width=W,
                                       min_area=0.3))
  expected = ((m[:, 0, 0, None, None] * rows + m[:, 0, 2, None, None])
              + 2 * (m[:, 1, 1, None, None] * cols + m[:, 1, 2, None, None]))
  np.testing.assert_allclose(out, expected, atol=1e-4)
  assert not np.allclose(out, np.asarray(ramp))
  np.testing.assert_array_equal(np.asarray(_augment(key, ramp, crop_min_area=1.0)),
                                np.asarray(ramp))
