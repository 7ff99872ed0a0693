"""Procedural dSprites: geometry, factor bookkeeping, cache (on a tiny stand-in)."""
import os

import numpy as np
import pytest

from vmivae_jax.data import dsprites


def _factors(shape=0, scale=5, orientation=0, pos_x=0, pos_y=0):
    return np.array([[shape, scale, orientation, pos_x, pos_y]])


def _centroid(image):
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


def test_factor_grid_matches_the_original():
    assert dsprites.factor_sizes == (3, 6, 40, 32, 32)
    assert dsprites.num_images == 737_280
    all_first = dsprites.factor_values(np.zeros((1, 5), int))[0]
    all_last = dsprites.factor_values(
        np.array([[2, 5, 39, 31, 31]]))[0]
    np.testing.assert_array_equal(all_first, [1.0, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(all_last, [3.0, 1.0, 2 * np.pi, 1.0, 1.0])
    assert dsprites.factor_values(_factors(scale=1))[0, 1] == pytest.approx(0.6)


def test_index_factor_round_trip_is_row_major():
    rng = np.random.default_rng(0)
    index = rng.integers(0, dsprites.num_images, size=500)
    np.testing.assert_array_equal(
        dsprites.index_of(dsprites.factors_of(index)), index)
    # Last factor (pos_y) varies fastest; shape slowest, as in the original.
    np.testing.assert_array_equal(dsprites.factors_of(np.array([1, 32])),
                                  [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0]])
    assert dsprites.index_of(np.array([[1, 0, 0, 0, 0]]))[0] == 6 * 40 * 32 * 32


def test_pos_x_step_moves_centroid_by_48_over_31_pixels():
    for shape in range(3):
        steps = dsprites.render(np.array(
            [[shape, 5, 7, i, 4] for i in range(32)]))
        cols = np.array([_centroid(image)[1] for image in steps])
        # Ends sit at whole pixels 8 and 56: the same raster moved 48 px.
        np.testing.assert_array_equal(steps[-1][:, 48:], steps[0][:, :16])
        assert cols[-1] - cols[0] == pytest.approx(48.0, abs=1e-9)
        # Single steps: 1.548 px, up to boundary-pixel jitter.
        np.testing.assert_allclose(np.diff(cols), 48 / 31, atol=0.5)
        assert np.mean(np.diff(cols)) == pytest.approx(48 / 31, abs=1e-9)
        rows = np.array([_centroid(image)[0] for image in steps])
        np.testing.assert_allclose(rows, rows.mean(), atol=0.5)


def test_pos_y_moves_down_the_rows():
    top, bottom = dsprites.render(np.array([[1, 5, 0, 3, 0], [1, 5, 0, 3, 31]]))
    assert _centroid(bottom)[0] - _centroid(top)[0] == pytest.approx(48.0)


def test_area_scales_with_scale_squared():
    # Averaging over 40 orientations and 32 sub-pixel (x, y) offsets cancels
    # the boundary noise of centre sampling (single images: up to ~12% off).
    for shape, unit_area in ((0, 2.0), (1, np.pi * 0.5)):
        areas = []
        for scale in range(6):
            batch = np.array([[shape, scale, (5 * i) % 40, i, (13 * i) % 32]
                              for i in range(32)])
            areas.append(dsprites.render(batch).sum(axis=(1, 2)).mean())
        scales = np.linspace(0.5, 1, 6)
        expected = unit_area * (8 * scales) ** 2  # px^2
        np.testing.assert_allclose(areas, expected, rtol=0.03)
        np.testing.assert_allclose(areas[-1] / areas[0], 4.0, rtol=0.03)


def test_quarter_turn_leaves_square_and_changes_heart():
    angle = 0.3
    # Centre on a pixel corner (pos 0, 0): the pixel grid maps to itself
    # under a quarter turn, so the square is bit-identical.
    for pos in (0.0, 1.0):
        square = dsprites.render_values(
            [[1, 1.0, angle, pos, pos], [1, 1.0, angle + np.pi / 2, pos, pos]])
        np.testing.assert_array_equal(square[0], square[1])
    # Off-grid centres: only boundary pixels may flip (a few of ~128).
    square = dsprites.render_values(
        [[1, 1.0, angle, 0.37, 0.61],
         [1, 1.0, angle + np.pi / 2, 0.37, 0.61]])
    assert np.sum(square[0] != square[1]) <= 6
    heart = dsprites.render_values(
        [[3, 1.0, angle, 0.0, 0.0], [3, 1.0, angle + np.pi / 2, 0.0, 0.0]])
    assert np.sum(heart[0] != heart[1]) > 30


def test_orientation_zero_and_two_pi_identical():
    first = np.array([[s, 3, 0, 10, 20] for s in range(3)])
    last = first.copy()
    last[:, 2] = 39
    np.testing.assert_array_equal(dsprites.render(first),
                                  dsprites.render(last))
    assert not np.array_equal(dsprites.render(first[2:]),
                              dsprites.render(first[2:] + [0, 0, 5, 0, 0]))


def test_shapes_differ_and_fit_in_the_frame():
    images = dsprites.render(np.array([[s, 5, 4, 31, 0] for s in range(3)]))
    areas = images.sum(axis=(1, 2))
    assert len(set(areas.tolist())) == 3
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.sum(images[a] != images[b]) > 20
    # Sprites never touch more than the disc of radius 8 * scale.
    rows, cols = np.nonzero(images[2])
    assert np.all((cols + 0.5 - 56) ** 2 + (rows + 0.5 - 8) ** 2 <= 64)


def test_render_is_deterministic_and_binary():
    rng = np.random.default_rng(1)
    factors = dsprites.sample_factors(rng, 64)
    first, second = dsprites.render(factors), dsprites.render(factors)
    assert first.shape == (64, 64, 64) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first)) <= {0, 1}
    assert np.all(first.sum(axis=(1, 2)) > 10)


def test_sample_factors_covers_each_range():
    factors = dsprites.sample_factors(np.random.default_rng(2), 4000)
    assert factors.shape == (4000, 5)
    np.testing.assert_array_equal(factors.min(axis=0), 0)
    np.testing.assert_array_equal(factors.max(axis=0),
                                  np.array(dsprites.factor_sizes) - 1)


@pytest.mark.parametrize("bad, message", [
    (np.array([[0, 6, 0, 0, 0]]), r"factor 1 \(scale\) index 6"),
    (np.array([[0, 0, 0, -1, 0]]), r"factor 3 \(pos_x\) index -1"),
    (np.zeros((2, 4), int), r"shape \(N, 5\), got \(2, 4\)"),
    (np.zeros(5, int), r"shape \(N, 5\), got \(5,\)"),
    (np.zeros((1, 5)), "integers"),
])
def test_bad_factor_indices_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        dsprites.render(bad)


def test_bad_flat_index_raises():
    with pytest.raises(ValueError, match="737280"):
        dsprites.factors_of(np.array([737_280]))


def test_cache_written_atomically_and_read_lazily(tmp_path, monkeypatch):
    # A 2-shape x 2-position stand-in keeps the test to a few milliseconds.
    monkeypatch.setattr(dsprites, "factor_sizes", (2, 1, 1, 2, 1))
    monkeypatch.setattr(dsprites, "num_images", 4)
    packed = dsprites.load_or_build(str(tmp_path), chunk_size=3)
    path = dsprites.cache_path(str(tmp_path))
    assert path.endswith(os.path.join("dsprites_procedural", "images_v1.npy"))
    assert os.listdir(os.path.dirname(path)) == ["images_v1.npy"]
    assert packed.shape == (4, 512)
    expected = dsprites.render(dsprites.factors_of(np.array([3, 0, 2])))
    np.testing.assert_array_equal(
        dsprites.images(packed, np.array([3, 0, 2])), expected)
    # A second call reads the file instead of rebuilding it.
    mtime = os.path.getmtime(path)
    dsprites.load_or_build(str(tmp_path))
    assert os.path.getmtime(path) == mtime
