"""Tests for vmivae_jax.figures: every figure function writes a non-empty PNG."""

import numpy as np
import pytest

from vmivae_jax import figures

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
  data = path.read_bytes()
  assert len(data) > 1000 and data.startswith(PNG_MAGIC)
  assert not list(path.parent.glob('.*.tmp'))  # the atomic write left no temporary


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_tile_layout():
  images = np.zeros((2, 3, 28, 28, 1))
  images[1, 2] = 0.5
  out = figures.tile(images, gap=1)
  assert out.shape == (2 * 29 - 1, 3 * 29 - 1)
  assert out[29 + 5, 2 * 29 + 5] == 0.5 and out[28, 0] == 1.0  # tile and gap


def test_traversal_grid(tmp_path, rng):
  path = figures.traversal_grid(rng.random((5, 5, 28, 28, 1)), row_values=np.linspace(-3, 3, 5),
                                col_values=np.linspace(-3, 3, 5), row_label='z_0',
                                col_label='z_1', path=tmp_path / 'grid.png')
  assert path == tmp_path / 'grid.png'
  assert_png(path)


def test_traversal_rows(tmp_path, rng):
  path = figures.traversal_rows(rng.random((3, 28, 28)), rng.random((2, 3, 7, 28, 28)),
                                values=np.linspace(-5, 5, 7), dim_labels=['z_0', 'z_1'],
                                path=tmp_path / 'rows.png')
  assert_png(path)


def test_category_grid(tmp_path, rng):
  path = figures.category_grid(rng.random((4, 28, 28, 1)), rng.random((4, 10, 28, 28, 1)),
                               path=tmp_path / 'sub' / 'categories.png', code_name='c_0')
  assert_png(path)


def test_categorical_histogram(tmp_path, rng):
  logits = rng.normal(size=(500, 10)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  assert_png(figures.categorical_histogram(probs, path=tmp_path / 'hist.png'))


def test_label_code_counts(tmp_path, rng):
  counts = rng.integers(0, 50, (10, 10))
  assert_png(figures.label_code_counts(counts, path=tmp_path / 'counts.png'))


def test_training_curves(tmp_path):
  records = [{'step': s, 'mi_bound': 0.1 * s, 'kl/categorical_0': 2.0 - 0.01 * s, 'loss': 1.0}
             for s in range(5, 105, 5)]
  records[3]['mi_bound'] = float('nan')  # a bad value is skipped, not plotted
  path = figures.training_curves(records, keys=['mi_bound', 'kl/categorical_0', 'absent'],
                                 path=tmp_path / 'curves.png')
  assert_png(path)


def test_overwrites_an_existing_file(tmp_path, rng):
  path = tmp_path / 'hist.png'
  path.write_bytes(b'old')
  figures.categorical_histogram(rng.random((10, 3)), path=path)
  assert_png(path)
