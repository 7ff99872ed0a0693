"""Procedural dSprites: same factors and ranges, our own rasteriser.

dSprites (Matthey et al. 2017, github.com/deepmind/dsprites-dataset) is the
set of all 64x64 binary images of one white sprite on black, over the full
product of five ground-truth factors, in row-major factor order:

    shape        3 values  square, ellipse, heart          (values 1, 2, 3)
    scale        6 values  linspace(0.5, 1, 6)
    orientation 40 values  linspace(0, 2*pi, 40)  (endpoint included, so 0
                           and 2*pi both appear and render identically)
    pos_x       32 values  linspace(0, 1, 32)
    pos_y       32 values  linspace(0, 1, 32)

3 * 6 * 40 * 32 * 32 = 737,280 images; image ``i`` has factor indices
``np.unravel_index(i, factor_sizes)`` as in the original file.

We do not ship or download the original; we draw it ourselves, so numbers
computed on it are comparable in kind, not bitwise, with published ones.

Rasteriser (all choices ours, deterministic, vectorised numpy):

* Pixel (row r, column c) has its centre at (x, y) = (c + 0.5, r + 0.5).
  A pixel is on iff its centre lies inside the shape (centre sampling, no
  supersampling: exact, cheap, and area errors average out over positions).
* The sprite centre is at x = 8 + 48 * pos_x, y = 8 + 48 * pos_y pixels
  (so from pixel 8 to 56 like the original; pos_y grows downward, one
  position step is 48 / 31 = 1.548 px).
* Each shape is a point-in-shape test in its own unit frame (u right,
  v up), and every shape lies inside the unit disc, so under any rotation
  the sprite stays within SPRITE_RADIUS_PX * scale = 8 * scale pixels of its
  centre and therefore inside the 64x64 frame:
    square:  |u| <= 1/sqrt(2) and |v| <= 1/sqrt(2)   (side 11.3 px at scale 1)
    ellipse: u^2 + (v / 0.5)^2 <= 1                   (16 x 8 px at scale 1)
    heart:   (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with x = 1.34 u,
             y = 1.34 v + 0.118 (the classic heart curve, centred on its
             bounding box and shrunk into the unit disc; lobes up at 0).
* A pixel centre at offset (dx, dy) from the sprite centre maps to the unit
  frame by undoing the rotation (counter-clockwise on screen by the
  orientation) and the scale: (u, v) = R(-theta) (dx, -dy) / (8 * scale).
  The angle is reduced modulo 2*pi first, so 0 and 2*pi give the same bits.

Cache: ``load_or_build(data_dir)`` renders all images once, in chunks, into
``<data_dir>/dsprites_procedural/images_v1.npy`` (bits packed with
np.packbits along each image's 4096 pixels: (737280, 512) uint8, 377 MB),
written to a temporary file in the same folder and moved into place with
os.replace, so a half-written cache never exists; ``images(packed, idx)``
unpacks only the requested rows.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

factor_names = ("shape", "scale", "orientation", "pos_x", "pos_y")
factor_sizes = (3, 6, 40, 32, 32)
num_images = int(np.prod(factor_sizes))  # 737,280
image_size = 64
shape_names = ("square", "ellipse", "heart")

SPRITE_RADIUS_PX = 8.0  # the unit disc at scale 1, in pixels
POSITION_MARGIN_PX = 8.0  # centre ranges over [8, 56]
POSITION_RANGE_PX = image_size - 2 * POSITION_MARGIN_PX  # 48
ELLIPSE_MINOR = 0.5
HEART_ZOOM = 1.34  # > max radius 1.3366 of the heart about its bbox centre
HEART_Y_CENTRE = 0.118  # centre of the heart's bounding box, y in [-1, 1.236]
CACHE_VERSION = 1
_WINDOW = int(2 * SPRITE_RADIUS_PX) + 2  # 18 px: every pixel a sprite can touch

_FACTOR_GRIDS = (
    np.arange(1.0, 4.0),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2.0 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)


def _check_factor_indices(factor_indices) -> np.ndarray:
    """(N, 5) integer array with every entry in range, else ValueError."""
    array = np.asarray(factor_indices)
    if array.ndim != 2 or array.shape[1] != len(factor_sizes):
        raise ValueError(
            f"factor indices must have shape (N, {len(factor_sizes)}), "
            f"got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"factor indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    for column, (name, size) in enumerate(zip(factor_names, factor_sizes)):
        bad = array[:, column][(array[:, column] < 0) |
                               (array[:, column] >= size)]
        if bad.size:
            raise ValueError(
                f"factor {column} ({name}) index {int(bad[0])} is out of "
                f"range [0, {size})")
    return array


def factor_values(factor_indices) -> np.ndarray:
    """Factor values of the original dSprites for integer factor indices.

    Args:
      factor_indices: (N, 5) int, columns in ``factor_names`` order.

    Returns:
      (N, 5) float64: shape label 1..3, scale in [0.5, 1], orientation in
      radians [0, 2*pi], pos_x and pos_y in [0, 1].
    """
    indices = _check_factor_indices(factor_indices)
    return np.stack([grid[indices[:, k]] for k, grid in
                     enumerate(_FACTOR_GRIDS)], axis=1)


def index_of(factor_indices) -> np.ndarray:
    """Flat image index (row-major over ``factor_sizes``), shape (N,) int64."""
    indices = _check_factor_indices(factor_indices)
    return np.ravel_multi_index(tuple(indices.T), factor_sizes).astype(
        np.int64)


def factors_of(index) -> np.ndarray:
    """Inverse of ``index_of``: (N,) flat indices -> (N, 5) int64 factors."""
    flat = np.asarray(index)
    if flat.ndim != 1:
        raise ValueError(f"index must be 1-D, got shape {flat.shape}")
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"index must be integers, got dtype {flat.dtype}")
    bad = flat[(flat < 0) | (flat >= num_images)]
    if bad.size:
        raise ValueError(
            f"image index {int(bad[0])} is out of range [0, {num_images})")
    return np.stack(np.unravel_index(flat, factor_sizes), axis=1).astype(
        np.int64)


def sample_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n factor-index rows, each factor uniform and independent: (n, 5) int64."""
    return np.stack([rng.integers(0, size, size=n) for size in factor_sizes],
                    axis=1).astype(np.int64)


def _inside_unit_shape(shape_index, u, v):
    """Point-in-shape test in the sprite's unit frame (all shapes in the disc).

    shape_index broadcasts against u, v; returns a bool array like u.
    """
    square = (np.abs(u) <= np.sqrt(0.5)) & (np.abs(v) <= np.sqrt(0.5))
    ellipse = u * u + (v / ELLIPSE_MINOR) ** 2 <= 1.0
    x = HEART_ZOOM * u
    y = HEART_ZOOM * v + HEART_Y_CENTRE
    heart = (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0
    return np.where(shape_index == 0, square,
                    np.where(shape_index == 1, ellipse, heart))


def render_values(values) -> np.ndarray:
    """Rasterise sprites from continuous factor values (any angle/position).

    Args:
      values: (N, 5) float, columns (shape label in {1, 2, 3}, scale in
        (0, 1], orientation in radians, pos_x in [0, 1], pos_y in [0, 1]).

    Returns:
      (N, 64, 64) uint8 in {0, 1}; see the module docstring for the geometry.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 5:
        raise ValueError(f"values must have shape (N, 5), got {values.shape}")
    shape_label, scale, angle, pos_x, pos_y = values.T
    if not np.all(np.isin(shape_label, (1.0, 2.0, 3.0))):
        raise ValueError(f"shape labels must be 1, 2 or 3, got "
                         f"{np.unique(shape_label)[:5]}")
    for name, column, low in (("scale", scale, 0.0), ("pos_x", pos_x, 0.0),
                              ("pos_y", pos_y, 0.0)):
        bad = column[~((column >= low) & (column <= 1.0))]
        if bad.size:
            raise ValueError(f"{name} value {bad[0]} is outside [0, 1]")
    n = values.shape[0]
    centre_x = POSITION_MARGIN_PX + POSITION_RANGE_PX * pos_x
    centre_y = POSITION_MARGIN_PX + POSITION_RANGE_PX * pos_y
    # Only an 18x18 window can be touched: evaluate there, then paste.
    left = np.clip(np.floor(centre_x - SPRITE_RADIUS_PX - 0.5), 0,
                   image_size - _WINDOW).astype(np.int64)
    top = np.clip(np.floor(centre_y - SPRITE_RADIUS_PX - 0.5), 0,
                  image_size - _WINDOW).astype(np.int64)
    offsets = np.arange(_WINDOW)
    dx = (left[:, None] + offsets[None, :] + 0.5) - centre_x[:, None]
    dy = (top[:, None] + offsets[None, :] + 0.5) - centre_y[:, None]
    theta = np.mod(angle, 2.0 * np.pi)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    radius = (SPRITE_RADIUS_PX * scale)[:, None, None]
    east = dx[:, None, :]  # (N, 1, W) screen right
    north = -dy[:, :, None]  # (N, W, 1) screen up (rows grow downward)
    # Rotate the pixel by -theta: the sprite is turned by +theta on screen.
    u = (cos * east + sin * north) / radius
    v = (-sin * east + cos * north) / radius
    window = _inside_unit_shape((shape_label - 1)[:, None, None], u, v)
    images = np.zeros((n, image_size, image_size), dtype=np.uint8)
    rows = top[:, None, None] + offsets[None, :, None]
    cols = left[:, None, None] + offsets[None, None, :]
    images[np.arange(n)[:, None, None], rows, cols] = window
    return images


def render(factor_indices) -> np.ndarray:
    """Render dSprites images for integer factor indices.

    Args:
      factor_indices: (N, 5) int in ``factor_names`` order.

    Returns:
      (N, 64, 64) uint8 in {0, 1}.
    """
    return render_values(factor_values(factor_indices))


def cache_path(data_dir: str) -> str:
    """Where ``load_or_build`` keeps the packed images (version in the name)."""
    return os.path.join(data_dir, "dsprites_procedural",
                        f"images_v{CACHE_VERSION}.npy")


def load_or_build(data_dir: str, *, chunk_size: int = 8192) -> np.ndarray:
    """All 737,280 images, bit-packed, rendered once and cached on disk.

    Args:
      data_dir: folder holding ``dsprites_procedural/images_v1.npy``.
      chunk_size: images rendered at once while building (memory bound:
        about 1 KB of temporaries per pixel-window per image, ~0.1 GB here).

    Returns:
      (737280, 512) uint8 read-only memory map; row i is image i (flat index
      as ``index_of``) packed with np.packbits; unpack rows with ``images``.
    """
    path = cache_path(data_dir)
    packed_width = image_size * image_size // 8
    if not os.path.exists(path):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        os.close(handle)
        try:
            out = np.lib.format.open_memmap(
                temp_path, mode="w+", dtype=np.uint8,
                shape=(num_images, packed_width))
            for start in range(0, num_images, chunk_size):
                stop = min(start + chunk_size, num_images)
                chunk = render(factors_of(np.arange(start, stop)))
                out[start:stop] = np.packbits(
                    chunk.reshape(stop - start, -1), axis=1)
            out.flush()
            del out
            os.chmod(temp_path, 0o644)  # mkstemp's 0600 would hide it from others
            os.replace(temp_path, path)
        finally:
            if os.path.exists(temp_path):
                os.remove(temp_path)
    packed = np.load(path, mmap_mode="r")
    if packed.shape != (num_images, packed_width) or packed.dtype != np.uint8:
        raise ValueError(f"{path} has shape {packed.shape} dtype "
                         f"{packed.dtype}, expected ({num_images}, "
                         f"{packed_width}) uint8; delete it to rebuild")
    return packed


def images(packed: np.ndarray, index) -> np.ndarray:
    """Unpack the rows ``index`` (N,) of a packed cache to (N, 64, 64) uint8."""
    flat = np.asarray(index)
    factors_of(flat)  # validates range and dtype with a clear message
    rows = np.asarray(packed[np.sort(flat)])  # sorted reads are mmap-friendly
    rows = rows[np.argsort(np.argsort(flat))]
    return np.unpackbits(rows, axis=1).reshape(-1, image_size, image_size)
