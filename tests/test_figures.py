"""Tests for vmivae_jax.evaluation.figures: each figure writes a PNG and plots the given data.

The figures are inspected through matplotlib's objects: ``Figure.savefig`` is wrapped
to keep the figure each function renders, so a test can check the plotted points,
images and labels rather than only the PNG header.
"""

import numpy as np
import pytest
from matplotlib.figure import Figure

from vmivae_jax.evaluation import figures

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
  data = path.read_bytes()
  assert len(data) > 1000 and data.startswith(PNG_MAGIC)
  assert not list(path.parent.glob('.*.tmp'))  # the atomic write left no temporary


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture
def rendered(monkeypatch):
  """The list of Figure objects saved while the test runs."""
  saved = []
  original = Figure.savefig

  def savefig(self, *args, **kwargs):
    saved.append(self)
    return original(self, *args, **kwargs)
  monkeypatch.setattr(Figure, 'savefig', savefig)
  return saved


def test_tile_layout():
  images = np.zeros((2, 3, 28, 28, 1))
  images[1, 2] = 0.5
  out = figures.tile(images, gap=1)
  assert out.shape == (2 * 29 - 1, 3 * 29 - 1)
  assert out[29 + 5, 2 * 29 + 5] == 0.5 and out[28, 0] == 1.0  # tile and gap


@pytest.mark.parametrize('side', [28, 64])
def test_traversal_grid_separates_every_tile_in_the_png(tmp_path, side):
  """Black tiles on the white gaps: along a line through the first row of tiles, the
  written PNG shows every one of the cols - 1 gaps (64x64 tiles are drawn shrunk, where a
  1-pixel gap vanished from some columns)."""
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  cols = 9
  path = figures.traversal_grid(np.zeros((3, cols, side, side)), row_values=range(3),
                                col_values=range(cols), row_label='dim', col_label='value',
                                path=tmp_path / 'grid.png')
  grey = matplotlib.image.imread(path)[..., :3].mean(-1)
  dark_rows = np.flatnonzero((grey < 0.1).sum(1) > grey.shape[1] // 2)
  line = grey[dark_rows[len(dark_rows) // 6]]   # inside the first row of tiles
  dark = np.flatnonzero(line < 0.1)
  inside = line[dark[0]:dark[-1] + 1] > 0.5
  gaps = np.count_nonzero(np.diff(inside.astype(int)) == 1)
  assert gaps == cols - 1, (side, gaps)


def test_traversal_grid(tmp_path, rng, rendered):
  images = rng.random((5, 4, 28, 28, 1))
  path = figures.traversal_grid(images, row_values=np.linspace(-3, 3, 5),
                                col_values=np.linspace(-2, 2, 4), row_label='z_0',
                                col_label='z_1', path=tmp_path / 'grid.png')
  assert path == tmp_path / 'grid.png'
  assert_png(path)
  (fig,) = rendered
  (ax,) = fig.axes
  np.testing.assert_array_equal(ax.images[0].get_array(), figures.tile(images))
  assert [t.get_text() for t in ax.get_yticklabels()] == ['-3', '-1.5', '0', '1.5', '3']
  assert [t.get_text() for t in ax.get_xticklabels()] == ['-2', '-0.667', '0.667', '2']
  assert (ax.get_xlabel(), ax.get_ylabel()) == ('z_1', 'z_0')


def test_traversal_rows(tmp_path, rng, rendered):
  originals, traversals = rng.random((3, 28, 28)), rng.random((2, 3, 7, 28, 28))
  path = figures.traversal_rows(originals, traversals, values=np.linspace(-5, 5, 7),
                                dim_labels=['z_0', 'z_1'], path=tmp_path / 'rows.png')
  assert_png(path)
  (fig,) = rendered
  assert len(fig.axes) == 2
  for d, ax in enumerate(fig.axes):
    mosaic = ax.images[0].get_array()
    # Row 1, first tile: the original; third tile onwards: dim d's traversal values.
    np.testing.assert_allclose(mosaic[29:57, 0:28], originals[1], rtol=1e-6)
    np.testing.assert_allclose(mosaic[29:57, 58:86], traversals[d, 1, 0], rtol=1e-6)
    assert ax.get_title().endswith(f'z_{d}')


def test_category_grid(tmp_path, rng, rendered):
  decoded = rng.random((4, 10, 28, 28, 1))
  path = figures.category_grid(rng.random((4, 28, 28, 1)), decoded,
                               path=tmp_path / 'sub' / 'categories.png', code_name='c_0')
  assert_png(path)
  (ax,) = rendered[0].axes
  mosaic = ax.images[0].get_array()
  assert mosaic.shape == (4 * 29 - 1, 12 * 29 - 1)        # original, gap, 10 categories
  np.testing.assert_allclose(mosaic[3 * 29:3 * 29 + 28, 11 * 29:11 * 29 + 28],
                             decoded[3, 9, ..., 0], rtol=1e-6)
  assert ax.get_xlabel() == 'category of c_0'


def test_categorical_histogram(tmp_path, rng, rendered):
  logits = rng.normal(size=(500, 10)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  assert_png(figures.categorical_histogram(probs, path=tmp_path / 'hist.png', bins=20))
  (ax,) = rendered[0].axes
  heights = [patch.get_height() for patch in ax.patches]
  np.testing.assert_array_equal(heights, np.histogram(probs.ravel(), bins=20, range=(0, 1))[0])
  (uniform_line,) = ax.lines
  assert uniform_line.get_xdata()[0] == pytest.approx(0.1)


def test_label_code_counts(tmp_path, rng, rendered):
  counts = rng.integers(0, 50, (10, 10))
  assert_png(figures.label_code_counts(counts, path=tmp_path / 'counts.png'))
  ax = rendered[0].axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), counts)
  written = {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): int(t.get_text())
             for t in ax.texts}
  assert written == {(l, k): int(counts[l, k]) for l in range(10) for k in range(10)}


def test_training_curves_skip_nan_and_missing_values(tmp_path, rendered):
  records = [{'step': s, 'mi_bound': 0.1 * s, 'kl/categorical_0': 2.0 - 0.01 * s, 'loss': 1.0}
             for s in range(5, 105, 5)]
  records[3]['mi_bound'] = float('nan')     # step 20: a bad value is skipped, not plotted
  records[7]['mi_bound'] = None             # step 40: not computed
  del records[9]['kl/categorical_0']        # step 50: not recorded
  path = figures.training_curves(records, keys=['mi_bound', 'kl/categorical_0', 'absent'],
                                 path=tmp_path / 'curves.png')
  assert_png(path)
  (fig,) = rendered
  mi_ax, kl_ax, absent_ax = fig.axes
  (mi_line,) = mi_ax.lines
  expected_steps = [s for s in range(5, 105, 5) if s not in (20, 40)]
  np.testing.assert_array_equal(mi_line.get_xdata(), expected_steps)
  np.testing.assert_allclose(mi_line.get_ydata(), [0.1 * s for s in expected_steps])
  assert np.all(np.isfinite(mi_line.get_ydata()))
  (kl_line,) = kl_ax.lines
  np.testing.assert_array_equal(kl_line.get_xdata(), [s for s in range(5, 105, 5) if s != 50])
  assert not absent_ax.lines
  assert [t.get_text() for t in absent_ax.texts] == ['no absent recorded']


def test_overwrites_an_existing_file(tmp_path, rng):
  path = tmp_path / 'hist.png'
  path.write_bytes(b'old')
  figures.categorical_histogram(rng.random((10, 3)), path=path)
  assert_png(path)
