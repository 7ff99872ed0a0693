"""Loading MNIST and Fashion-MNIST as numpy arrays.

`load_split(name, split, data_dir=...)` returns a `Split` with uint8 images of
shape [N, 28, 28, 1] and int32 labels of shape [N]. Preprocessing (scaling,
binarisation, batching) belongs elsewhere; this module only gets the arrays.

Two sources:

* IDX files (the original gzip-compressed distribution format). `data_dir`
  is either a directory holding the four files directly, or a parent holding a
  subdirectory per dataset (`<data_dir>/mnist/`, `<data_dir>/fashion_mnist/`).
  The directory comes from the `data_dir` argument, else from the
  `VMIVAE_DATA_DIR` environment variable. Every file is validated (magic
  number, header dims vs payload length, 28x28 images, image/label counts,
  labels in 0..9) and problems raise `DataError` naming the file.
* tensorflow_datasets, used only when no data directory is configured. It
  needs a prepared tfds cache or internet access.

The two sources do not give the same example order: tfds shuffles examples
when it prepares a dataset, so the i-th tfds example is generally not the i-th
IDX example. For MNIST the set of examples in each split is the same. For
Fashion-MNIST the IDX copy in /work/shared/datasets has a custom train/test
split (6,000/1,000 per class; see its README), so its test set is not the
tfds/official test set and numbers are not exactly comparable to papers.

Parsed IDX arrays are cached in-process, keyed on (absolute path, mtime,
size), and returned read-only so that callers cannot corrupt the cache; copy
an array before modifying it.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import socket
import zlib

import numpy as np

DATASETS = ('mnist', 'fashion_mnist')
SPLITS = ('train', 'test')
DATA_DIR_ENV = 'VMIVAE_DATA_DIR'

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# File names as in the original distributions (without the optional '.gz').
_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_IDX_UBYTE = 0x08
_GZIP_MAGIC = b'\x1f\x8b'


class DataError(ValueError):
  """Raised for a missing/corrupt data file; message names the file path and the problem."""


# eq=False: the generated __eq__/__hash__ would compare/hash arrays and fail.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of a dataset.

  Attributes:
    images: uint8 array [N, 28, 28, 1]; read-only (shared with the cache). dSprites'
      train split (``datasets.py``) holds bit-packed rows [N, 512] instead.
    labels: int32 array [N] with values in 0..9.
    source: where the data came from, e.g. 'idx:/abs/dir' or 'tfds:mnist'.
    factors: int64 [N, K] ground-truth factor indices (factor datasets), else None.
  """
  images: np.ndarray
  labels: np.ndarray
  source: str
  factors: np.ndarray | None = None


def validate_dataset_name(name) -> None:
  """Raises ValueError unless `name` is one of DATASETS."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {DATASETS}')


def validate_split(split) -> None:
  """Raises ValueError unless `split` is one of SPLITS."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')


def resolve_data_dir(data_dir: str) -> str:
  """Returns the IDX directory to use: `data_dir`, else $VMIVAE_DATA_DIR.

  An empty result means "no directory configured: use tensorflow_datasets".
  """
  resolved = os.fspath(data_dir) if data_dir else os.environ.get(DATA_DIR_ENV, '')
  return os.path.expanduser(resolved) if resolved else ''


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
  """Parses one IDX file of unsigned bytes, gzip-compressed or plain.

  Args:
    path: the file. It is decompressed if its name ends in '.gz' or its
      content starts with the gzip magic bytes.
    expected_magic: if given (e.g. IMAGES_MAGIC), the file's magic number must
      equal it; otherwise any unsigned-byte IDX file is accepted.

  Returns:
    A read-only uint8 array shaped as the header's dims. It is shared with an
    in-process cache, keyed on the file's absolute path, mtime and size.

  Raises:
    DataError: naming the file, if it is missing, unreadable, not valid gzip,
      truncated, has a wrong magic number, or its payload length does not
      match the header's dims.
  """
  path = os.path.abspath(os.fspath(path))
  try:
    st = os.stat(path)
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except OSError as e:
    raise DataError(f'{path}: cannot stat file ({e})') from e
  return _read_idx_cached(path, st.st_mtime_ns, st.st_size, expected_magic)


@functools.lru_cache(maxsize=16)  # 2 datasets x 4 files, with room to spare.
def _read_idx_cached(path: str, mtime_ns: int, size: int,
                     expected_magic: int | None) -> np.ndarray:
  del mtime_ns, size  # Only part of the cache key, so edited files reload.
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e})') from e

  if path.endswith('.gz') or raw.startswith(_GZIP_MAGIC):
    try:
      raw = gzip.decompress(raw)
    except EOFError as e:
      raise DataError(f'{path}: truncated gzip stream ({e})') from e
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
      raise DataError(f'{path}: corrupt gzip data ({e})') from e

  if len(raw) < 4:
    raise DataError(f'{path}: truncated IDX header: file has only {len(raw)} '
                    'bytes, need at least 4 for the magic number')
  magic = int.from_bytes(raw[:4], 'big')
  if expected_magic is not None and magic != expected_magic:
    raise DataError(f'{path}: wrong magic number: expected 0x{expected_magic:08x}, '
                    f'found 0x{magic:08x}')
  ndim = magic & 0xFF
  if magic >> 16 != 0 or (magic >> 8) & 0xFF != _IDX_UBYTE or ndim == 0:
    raise DataError(f'{path}: bad magic number 0x{magic:08x}: not an '
                    'unsigned-byte IDX file (expected 0x000008NN)')

  header_len = 4 + 4 * ndim
  if len(raw) < header_len:
    raise DataError(f'{path}: truncated IDX header: {ndim} dims need '
                    f'{header_len} bytes, file has {len(raw)}')
  dims = tuple(int(d) for d in np.frombuffer(raw, '>u4', count=ndim, offset=4))
  expected_len = int(np.prod(dims, dtype=np.int64))
  payload_len = len(raw) - header_len
  if payload_len < expected_len:
    raise DataError(f'{path}: truncated payload: header dims {dims} need '
                    f'{expected_len} bytes, found {payload_len}')
  if payload_len > expected_len:
    raise DataError(f'{path}: payload longer than header says: dims {dims} need '
                    f'{expected_len} bytes, found {payload_len} '
                    f'({payload_len - expected_len} extra)')
  # frombuffer on bytes gives a zero-copy, read-only view: fast and cache-safe.
  return np.frombuffer(raw, np.uint8, offset=header_len).reshape(dims)


def _pick_file(directory: str, base: str) -> str | None:
  """Returns directory/base(.gz), preferring the compressed file, or None."""
  for candidate in (base + '.gz', base):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def _locate_idx_files(data_dir: str, name: str, split: str) -> tuple[str, str, str]:
  """Returns (directory, images path, labels path) for one dataset split."""
  data_dir = os.path.abspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(f'data directory {data_dir} does not exist or is not a '
                    f'directory (from data_dir or ${DATA_DIR_ENV})')
  candidates = [os.path.join(data_dir, name)]
  # A directory named after another dataset holds that dataset's files; using
  # it directly would silently load e.g. MNIST when Fashion-MNIST was asked for.
  if os.path.basename(data_dir) not in DATASETS or os.path.basename(data_dir) == name:
    candidates.append(data_dir)
  for directory in candidates:
    found = [_pick_file(directory, base) for base in _FILES[split]]
    if any(found):
      # A missing partner file is reported by read_idx under its .gz name.
      images, labels = (f or os.path.join(directory, base + '.gz')
                        for f, base in zip(found, _FILES[split]))
      return directory, images, labels
  expected = ', '.join(os.path.join(d, base + '[.gz]')
                       for d in candidates for base in _FILES[split])
  raise DataError(f'no {name} IDX files for split {split!r} in {data_dir}; '
                  f'expected {expected}')


def _load_idx(data_dir: str, name: str, split: str) -> Split:
  directory, images_path, labels_path = _locate_idx_files(data_dir, name, split)
  images = read_idx(images_path, IMAGES_MAGIC)
  labels = read_idx(labels_path, LABELS_MAGIC)
  if images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f'{images_path}: images are {images.shape[1]}x{images.shape[2]}, '
                    'expected 28x28')
  if len(images) != len(labels):
    raise DataError(f'count mismatch: {images_path} has {len(images)} images but '
                    f'{labels_path} has {len(labels)} labels')
  if len(labels) and labels.max() >= NUM_CLASSES:  # uint8, so never negative.
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise DataError(f'{labels_path}: label out of range 0..{NUM_CLASSES - 1}: '
                    f'label[{bad}] = {labels[bad]}')
  return Split(images=images[..., None], labels=labels.astype(np.int32),
               source=f'idx:{directory}')


# tfds downloads MNIST-like datasets from here; offline, its retries take minutes.
_TFDS_DOWNLOAD_HOST = ('storage.googleapis.com', 443)


def _check_can_download(name: str) -> None:
  """Fails in seconds, not after minutes of tfds retries, when the host is unreachable."""
  try:
    socket.create_connection(_TFDS_DOWNLOAD_HOST, timeout=5).close()
  except OSError as e:
    raise DataError(
        f'tensorflow_datasets has no prepared copy of {name!r} and cannot download it '
        f'({_TFDS_DOWNLOAD_HOST[0]} unreachable: {e}). Offline, point to a directory of IDX '
        f'files: pass --config.data_dir=/path/to/idx/dir or set {DATA_DIR_ENV}.') from e


def _tfds_is_prepared(tfds, name: str) -> bool:
  try:
    return bool(tfds.builder(name).is_prepared())
  except Exception:  # pylint: disable=broad-except  (unknown: let tfds.load decide)
    return True


@functools.lru_cache(maxsize=4)
def _load_tfds(name: str, split: str) -> Split:
  try:
    import tensorflow_datasets as tfds  # Heavy (imports TF): only when needed.
    if not _tfds_is_prepared(tfds, name):
      _check_can_download(name)
    images, labels = tfds.as_numpy(
        tfds.load(name, split=split, batch_size=-1, as_supervised=True))
  except DataError:
    raise
  except Exception as e:  # tfds fails in many ways (import, download, prepare).
    raise DataError(
        f'tensorflow_datasets could not load/download {name!r} split {split!r} '
        f'({type(e).__name__}: {e}). If offline, point to a directory of IDX '
        f'files: pass --config.data_dir=/path/to/idx/dir or set {DATA_DIR_ENV}.'
    ) from e
  images = np.asarray(images, np.uint8)
  labels = np.asarray(labels).astype(np.int32)
  if images.shape[1:] != IMAGE_SHAPE + (1,) or labels.shape != images.shape[:1]:
    raise DataError(f'tfds:{name} {split}: unexpected shapes images '
                    f'{images.shape}, labels {labels.shape}')
  images.flags.writeable = False  # Shared with the cache, like the IDX path.
  labels.flags.writeable = False
  return Split(images=images, labels=labels, source=f'tfds:{name}')


def load_split(name: str, split: str, *, data_dir: str = '',
               limit: int | None = None) -> Split:
  """Loads one split of a dataset.

  Args:
    name: one of DATASETS.
    split: one of SPLITS.
    data_dir: directory of IDX files (directly, or in a `<name>/` subdirectory).
      Empty means $VMIVAE_DATA_DIR, and if that is unset too, tfds.
    limit: if given, keep only the first `limit` examples (all if fewer).

  Returns:
    A Split with uint8 images [N, 28, 28, 1] and int32 labels [N].

  Raises:
    ValueError: unknown name/split, or limit <= 0.
    DataError: the data could not be found, read or validated.
  """
  validate_dataset_name(name)
  validate_split(split)
  if limit is not None and limit <= 0:
    raise ValueError(f'limit must be positive or None, got {limit}')
  resolved = resolve_data_dir(data_dir)
  data = _load_idx(resolved, name, split) if resolved else _load_tfds(name, split)
  if limit is not None:
    data = dataclasses.replace(data, images=data.images[:limit],
                               labels=data.labels[:limit])
  return data
