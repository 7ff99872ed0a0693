"""The thesis figures as PNG files: plotting only.

``evaluation/`` computes every array; the functions here lay them out, label them
and write the file. They use matplotlib's object-oriented API on the Agg canvas
(no pyplot, no global state, no display needed) and write each PNG atomically
(temporary file + rename), so a killed evaluation never leaves a truncated image.

Images are given in [0, 1] (the caller maps the data's pixel range), as
``[..., H, W]`` or ``[..., H, W, 1]``.
"""

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vmivae_jax.util import fileio

DPI = 90
_GAP = 1  # pixels of background between tiles


def _write_png(fig: Figure, path: Path | str) -> Path:
  """Renders ``fig`` and writes it to ``path`` atomically."""
  FigureCanvasAgg(fig)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=DPI, bbox_inches='tight')
  return fileio.atomic_write(path, buffer.getvalue())


def _squeeze_channel(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images, np.float32)
  if images.ndim >= 3 and images.shape[-1] == 1:
    images = images[..., 0]
  return np.clip(images, 0.0, 1.0)


def tile(images: np.ndarray, gap: int = _GAP, background: float = 1.0) -> np.ndarray:
  """[R, C, H, W] -> one [R*(H+gap)-gap, C*(W+gap)-gap] mosaic."""
  images = _squeeze_channel(images)
  rows, cols, h, w = images.shape
  out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), background, np.float32)
  for r in range(rows):
    for c in range(cols):
      out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c]
  return out


def _tile_centres(count: int, size: int, gap: int = _GAP) -> np.ndarray:
  return np.arange(count) * (size + gap) + (size - 1) / 2.0


def _scaled_gap(side: int) -> int:
  """The gap between tiles of ``side`` pixels. Cells are 0.45 inch, about 45 screen
  pixels: 64x64 tiles are shrunk, and a 1-pixel gap would vanish from some rows and
  columns (nearest-neighbour resampling); side / 16 keeps it over 2 screen pixels."""
  return _GAP if side <= 32 else math.ceil(side / 16)


def _figure(width_in: float, height_in: float) -> Figure:
  return Figure(figsize=(max(width_in, 2.5), max(height_in, 2.0)))


def _fmt(value: float) -> str:
  return f'{value:.3g}'


def traversal_grid(images: np.ndarray, *, row_values: Sequence[float],
                   col_values: Sequence[float], row_label: str, col_label: str,
                   path: Path | str, title: str = 'Latent traversal') -> Path:
  """Decoded images over a grid of two latent values (thesis Fig 4.3).

  Args:
    images: [R, C, H, W(, 1)] decoded means; row r has ``row_values[r]``, column c
      ``col_values[c]``.
    row_values, col_values: the latent values of the rows and columns.
    row_label, col_label: names of the two latent dims, e.g. 'z_0'.
    path: output PNG.
    title: figure title.
  """
  images = _squeeze_channel(images)
  rows, cols, h, w = images.shape
  gap = _scaled_gap(h)
  fig = _figure(0.45 * cols + 1.2, 0.45 * rows + 1.0)
  ax = fig.add_subplot(1, 1, 1)
  ax.imshow(tile(images, gap), cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
  ax.set_xticks(_tile_centres(cols, w, gap), [_fmt(v) for v in col_values], fontsize=7,
                rotation=90)
  ax.set_yticks(_tile_centres(rows, h, gap), [_fmt(v) for v in row_values], fontsize=7)
  ax.set_xlabel(col_label)
  ax.set_ylabel(row_label)
  ax.set_title(title, fontsize=9)
  return _write_png(fig, path)


def traversal_rows(originals: np.ndarray, traversals: np.ndarray, *, values: Sequence[float],
                   dim_labels: Sequence[str], path: Path | str,
                   title: str = 'Single-dimension traversals') -> Path:
  """Each latent dim varied alone, one row per example, original first (Fig 4.4).

  Args:
    originals: [N, H, W(, 1)] the input examples.
    traversals: [D, N, S, H, W(, 1)] decoded means, for each of D dims, each of N
      examples and each of the S values.
    values: the S latent values.
    dim_labels: D names, e.g. ('z_0', 'z_1').
    path: output PNG.
    title: figure title.
  """
  originals = _squeeze_channel(originals)
  traversals = _squeeze_channel(traversals)
  dims, n, steps, h, w = traversals.shape
  fig = _figure(0.42 * (steps + 1) + 1.0, dims * (0.42 * n + 0.6) + 0.4)
  for d in range(dims):
    ax = fig.add_subplot(dims, 1, d + 1)
    panel = np.concatenate([originals[:, None], np.full((n, 1, h, w), 1.0), traversals[d]],
                           axis=1)
    ax.imshow(tile(panel), cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
    ax.set_xticks(_tile_centres(steps + 2, w),
                  ['orig.', ''] + [_fmt(v) for v in values], fontsize=7, rotation=90)
    ax.set_yticks(_tile_centres(n, h), [str(i) for i in range(n)], fontsize=7)
    ax.set_xlabel(f'value of {dim_labels[d]} (rest of the code at the posterior mean)',
                  fontsize=8)
    ax.set_ylabel('test example', fontsize=8)
    ax.set_title(f'{title}: {dim_labels[d]}', fontsize=9)
  fig.tight_layout()
  return _write_png(fig, path)


def category_grid(originals: np.ndarray, decoded: np.ndarray, *, path: Path | str,
                  code_name: str = 'c', title: str = 'Decoded under each category') -> Path:
  """Each example decoded under each category of a code, original first (Figs 4.5/4.6).

  Args:
    originals: [N, H, W(, 1)] input examples.
    decoded: [N, K, H, W(, 1)] decoded means with the code set to category k and the
      Gaussian part at the posterior mean.
    path: output PNG.
    code_name: name of the code, for the axis label.
    title: figure title.
  """
  originals = _squeeze_channel(originals)
  decoded = _squeeze_channel(decoded)
  n, k, h, w = decoded.shape
  panel = np.concatenate([originals[:, None], np.full((n, 1, h, w), 1.0), decoded], axis=1)
  fig = _figure(0.42 * (k + 2) + 1.0, 0.42 * n + 1.0)
  ax = fig.add_subplot(1, 1, 1)
  ax.imshow(tile(panel), cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
  ax.set_xticks(_tile_centres(k + 2, w), ['orig.', ''] + [str(i) for i in range(k)],
                fontsize=7)
  ax.set_yticks(_tile_centres(n, h), [str(i) for i in range(n)], fontsize=7)
  ax.set_xlabel(f'category of {code_name}')
  ax.set_ylabel('test example')
  ax.set_title(title, fontsize=9)
  return _write_png(fig, path)


def categorical_histogram(probs: np.ndarray, *, path: Path | str, bins: int = 50,
                          title: str = 'Histogram of q(c|x) over the test set') -> Path:
  """Histogram of all category probabilities q(c = k | x) over examples (Fig 4.7).

  Args:
    probs: [N, K] posterior probabilities.
    path: output PNG.
    bins: histogram bins over [0, 1].
    title: figure title.
  """
  probs = np.asarray(probs, np.float64)
  fig = _figure(4.5, 3.0)
  ax = fig.add_subplot(1, 1, 1)
  ax.hist(probs.ravel(), bins=bins, range=(0.0, 1.0), color='tab:blue')
  ax.axvline(1.0 / probs.shape[-1], color='tab:red', linestyle='--', linewidth=1,
             label=f'uniform 1/K = {1.0 / probs.shape[-1]:.3g}')
  ax.set_yscale('log')
  ax.set_xlabel('q(c = k | x)')
  ax.set_ylabel('count (all k, all test examples)')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  return _write_png(fig, path)


def label_code_counts(counts: np.ndarray, *, path: Path | str,
                      title: str = 'Test labels vs argmax code') -> Path:
  """Heatmap of the label x code count matrix, with the counts written in (Figs 4.10/4.11).

  Args:
    counts: [L, K] number of test examples with label l and code k.
    path: output PNG.
    title: figure title.
  """
  counts = np.asarray(counts)
  labels, codes = counts.shape
  fig = _figure(0.45 * codes + 1.8, 0.4 * labels + 1.2)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(counts, cmap='Blues', aspect='auto')
  fig.colorbar(image, ax=ax, label='examples')
  top = counts.max() if counts.size else 0
  if labels * codes <= 400:
    for l in range(labels):
      for k in range(codes):
        ax.text(k, l, str(int(counts[l, k])), ha='center', va='center', fontsize=6,
                color='white' if counts[l, k] > 0.5 * top else 'black')
  ax.set_xticks(range(codes), [str(k) for k in range(codes)], fontsize=7)
  ax.set_yticks(range(labels), [str(l) for l in range(labels)], fontsize=7)
  ax.set_xlabel('code (argmax q(c|x))')
  ax.set_ylabel('true label')
  ax.set_title(title, fontsize=9)
  return _write_png(fig, path)


def training_curves(records: Sequence[dict], *, keys: Sequence[str], path: Path | str,
                    title: str = 'Training curves') -> Path:
  """One panel per metric key against the training step (Figs 4.8/4.9).

  Args:
    records: metrics.jsonl lines, each with 'step' and some of ``keys``.
    keys: metric names to plot (a key absent from every record gets an empty panel
      saying so).
    path: output PNG.
    title: figure title.
  """
  keys = list(keys)
  fig = _figure(4.5, 2.2 * max(len(keys), 1) + 0.4)
  for i, key in enumerate(keys):
    ax = fig.add_subplot(len(keys), 1, i + 1)
    points = [(r['step'], r[key]) for r in records
              if key in r and r[key] is not None and math.isfinite(r[key])]
    if points:
      steps_, values = zip(*points)
      ax.plot(steps_, values, marker='.' if len(points) < 30 else None, linewidth=1)
    else:
      ax.text(0.5, 0.5, f'no {key} recorded', ha='center', va='center', transform=ax.transAxes)
    ax.set_xlabel('training step')
    ax.set_ylabel(f'{key} (nats)', fontsize=8)
    ax.set_title(f'{title}: {key}', fontsize=9)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _write_png(fig, path)
