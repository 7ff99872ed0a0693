"""Tests for vmivae_jax.data.sources. Never downloads; real data is optional."""

import gzip
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from vmivae_jax.data import sources as data

REAL_DATA_DIR = Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets'
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

TEST_IMAGES = 't10k-images-idx3-ubyte'
TEST_LABELS = 't10k-labels-idx1-ubyte'


@pytest.fixture
def real_data_dir():
  if not (REAL_DATA_DIR / 'mnist').is_dir():
    pytest.skip(f'real datasets not found at {REAL_DATA_DIR}')
  return str(REAL_DATA_DIR)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
  # A developer's own VMIVAE_DATA_DIR must not change what these tests load.
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def idx_bytes(array, magic=None, dims=None) -> bytes:
  """Serialises a uint8 array as IDX; magic/dims override the header."""
  array = np.asarray(array, np.uint8)
  magic = (0x0800 | array.ndim) if magic is None else magic
  dims = array.shape if dims is None else dims
  header = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in dims)
  return header + array.tobytes()


def write_idx(path: Path, array=None, *, compress=True, raw=None, **header) -> Path:
  """Writes `array` (or `raw` bytes verbatim) as an IDX file, gzipped if asked."""
  payload = idx_bytes(array, **header) if raw is None else raw
  if compress:
    path = path.with_name(path.name + '.gz')
    payload = gzip.compress(payload)
  path.write_bytes(payload)
  return path


def tiny_images(n=3, size=28):
  return np.arange(n * size * size, dtype=np.uint32).reshape(n, size, size) % 256


def write_split(directory: Path, n=3, labels=None, compress=True, split_files=(TEST_IMAGES, TEST_LABELS)):
  """Writes a tiny valid image/label IDX pair into `directory`."""
  directory.mkdir(parents=True, exist_ok=True)
  labels = np.arange(n) % 10 if labels is None else labels
  images_name, labels_name = split_files
  write_idx(directory / images_name, tiny_images(n), compress=compress)
  write_idx(directory / labels_name, labels, compress=compress)
  return directory


# --- Real data ---------------------------------------------------------------


def test_real_mnist_test_split(real_data_dir):
  split = data.load_split('mnist', 'test', data_dir=real_data_dir)
  assert split.images.shape == (10000, 28, 28, 1)
  assert split.images.dtype == np.uint8
  assert split.labels.shape == (10000,)
  assert split.labels.dtype == np.int32
  assert split.labels.min() == 0 and split.labels.max() == 9
  np.testing.assert_array_equal(np.bincount(split.labels), MNIST_TEST_CLASS_COUNTS)
  np.testing.assert_array_equal(split.labels[:5], [7, 2, 1, 0, 4])  # IDX order.
  assert split.images.max() == 255
  assert split.source == 'idx:' + str(Path(real_data_dir) / 'mnist')


def test_real_fashion_mnist_test_split(real_data_dir):
  split = data.load_split('fashion_mnist', 'test', data_dir=real_data_dir)
  assert split.images.shape == (10000, 28, 28, 1)
  assert split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32
  # The shared copy's custom split has 1,000 test examples per class.
  np.testing.assert_array_equal(np.bincount(split.labels), [1000] * 10)
  assert not np.array_equal(
      split.images[:100], data.load_split('mnist', 'test', data_dir=real_data_dir).images[:100])


def test_real_mnist_train_count_and_cache(real_data_dir):
  first = data.load_split('mnist', 'train', data_dir=real_data_dir)
  assert first.images.shape == (60000, 28, 28, 1)
  assert first.labels.shape == (60000,)
  again = data.load_split('mnist', 'train', data_dir=real_data_dir)
  assert np.shares_memory(again.images, first.images)  # Served from the cache.


def test_real_direct_dir_and_limit(real_data_dir):
  split = data.load_split('mnist', 'test', data_dir=str(Path(real_data_dir) / 'mnist'), limit=7)
  assert split.images.shape == (7, 28, 28, 1)
  np.testing.assert_array_equal(split.labels, [7, 2, 1, 0, 4, 1, 4])


# --- Layouts, resolution and arguments ----------------------------------------


def test_parent_dir_layout(tmp_path):
  write_split(tmp_path / 'mnist', n=4)
  split = data.load_split('mnist', 'test', data_dir=str(tmp_path))
  assert split.images.shape == (4, 28, 28, 1)
  np.testing.assert_array_equal(split.images[..., 0], tiny_images(4))
  np.testing.assert_array_equal(split.labels, [0, 1, 2, 3])
  assert split.source == f'idx:{tmp_path / "mnist"}'


def test_direct_dir_layout_uncompressed(tmp_path):
  write_split(tmp_path, n=2, compress=False)
  split = data.load_split('fashion_mnist', 'test', data_dir=str(tmp_path))
  assert split.images.shape == (2, 28, 28, 1)
  assert split.labels.dtype == np.int32
  assert split.source == f'idx:{tmp_path}'


def test_prefers_gz_over_plain(tmp_path):
  write_split(tmp_path, n=2, compress=True)
  write_split(tmp_path, n=5, compress=False)
  assert len(data.load_split('mnist', 'test', data_dir=str(tmp_path)).labels) == 2


def test_train_split_file_names(tmp_path):
  write_split(tmp_path, n=6, split_files=('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'))
  assert len(data.load_split('mnist', 'train', data_dir=str(tmp_path)).labels) == 6
  with pytest.raises(data.DataError, match=TEST_IMAGES):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


def test_other_dataset_dir_is_not_used_directly(tmp_path):
  write_split(tmp_path / 'mnist')
  with pytest.raises(data.DataError, match='no fashion_mnist IDX files'):
    data.load_split('fashion_mnist', 'test', data_dir=str(tmp_path / 'mnist'))


def test_env_var_resolution(tmp_path, monkeypatch):
  write_split(tmp_path / 'mnist', n=3)
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  assert data.resolve_data_dir('') == str(tmp_path)
  assert data.resolve_data_dir('/explicit') == '/explicit'
  split = data.load_split('mnist', 'test')
  assert split.source == f'idx:{tmp_path / "mnist"}'


def test_resolve_data_dir_default_is_tfds():
  assert data.resolve_data_dir('') == ''


def test_explicit_dir_beats_env_var(tmp_path, monkeypatch):
  write_split(tmp_path / 'a' / 'mnist', n=2)
  write_split(tmp_path / 'b' / 'mnist', n=5)
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / 'b'))
  assert len(data.load_split('mnist', 'test', data_dir=str(tmp_path / 'a')).labels) == 2


def test_limit(tmp_path):
  write_split(tmp_path, n=5)
  assert len(data.load_split('mnist', 'test', data_dir=str(tmp_path), limit=2).labels) == 2
  assert len(data.load_split('mnist', 'test', data_dir=str(tmp_path), limit=99).labels) == 5
  for bad in (0, -1):
    with pytest.raises(ValueError, match='limit'):
      data.load_split('mnist', 'test', data_dir=str(tmp_path), limit=bad)


def test_cache_reloads_changed_file(tmp_path):
  path = write_idx(tmp_path / 'labels', np.array([1, 2, 3]))
  assert data.read_idx(path).tolist() == [1, 2, 3]
  path.write_bytes(gzip.compress(idx_bytes(np.array([4, 5, 6, 7]))))
  assert data.read_idx(path).tolist() == [4, 5, 6, 7]


def test_read_idx_arrays_are_read_only(tmp_path):
  array = data.read_idx(write_idx(tmp_path / 'x', np.array([1, 2])))
  with pytest.raises(ValueError):
    array[0] = 9


@pytest.mark.parametrize('name', ['cifar10', 'MNIST', ''])
def test_unknown_dataset(name):
  with pytest.raises(ValueError, match=repr(name)) as info:
    data.load_split(name, 'test', data_dir='/nonexistent')
  assert 'fashion_mnist' in str(info.value)  # Lists the valid names.
  assert not isinstance(info.value, data.DataError)


@pytest.mark.parametrize('split', ['validation', 'TEST', 'train[:10]'])
def test_unknown_split(split):
  with pytest.raises(ValueError, match=repr(split).replace('[', r'\[')) as info:
    data.load_split('mnist', split, data_dir='/nonexistent')
  assert "'train'" in str(info.value)


# --- Error cases --------------------------------------------------------------


def test_missing_data_dir(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(data.DataError, match='does not exist') as info:
    data.load_split('mnist', 'test', data_dir=str(missing))
  assert str(missing) in str(info.value)


def test_empty_data_dir_names_expected_files(tmp_path):
  with pytest.raises(data.DataError) as info:
    data.load_split('mnist', 'test', data_dir=str(tmp_path))
  message = str(info.value)
  assert str(tmp_path / 'mnist' / TEST_IMAGES) in message
  assert str(tmp_path / TEST_LABELS) in message


def test_missing_labels_file(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(2))
  with pytest.raises(data.DataError, match=f'{TEST_LABELS}.gz: file not found'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(data.DataError, match='absent.gz: file not found'):
    data.read_idx(tmp_path / 'absent.gz')


def test_truncated_gzip(tmp_path):
  write_split(tmp_path)
  path = tmp_path / f'{TEST_IMAGES}.gz'
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(data.DataError, match=f'{TEST_IMAGES}.gz: truncated gzip'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


@pytest.mark.parametrize('corrupt', [
    lambda b: b[:30] + bytes(x ^ 0xFF for x in b[30:60]) + b[60:],  # Deflate data.
    lambda b: b[:-8] + bytes(x ^ 0xFF for x in b[-8:-4]) + b[-4:],  # CRC.
    lambda b: b'\x1f\x8b\x09' + b[3:],  # Unknown compression method.
], ids=['deflate', 'crc', 'method'])
def test_corrupt_gzip(tmp_path, corrupt):
  write_split(tmp_path)
  path = tmp_path / f'{TEST_LABELS}.gz'
  path.write_bytes(corrupt(path.read_bytes()))
  with pytest.raises(data.DataError, match=f'{TEST_LABELS}.gz: (corrupt|truncated) gzip'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


def test_gz_name_but_not_gzip(tmp_path):
  path = tmp_path / 'plain.gz'
  path.write_bytes(idx_bytes(np.array([1, 2])))
  with pytest.raises(data.DataError, match='plain.gz: corrupt gzip'):
    data.read_idx(path)


def test_gzip_content_without_gz_name(tmp_path):
  path = tmp_path / 'labels'
  path.write_bytes(gzip.compress(idx_bytes(np.array([3, 4]))))
  assert data.read_idx(path).tolist() == [3, 4]


def test_wrong_magic_images_swapped_with_labels(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, np.array([1, 2]))  # A labels file.
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2]))
  with pytest.raises(data.DataError, match=f'{TEST_IMAGES}.gz: wrong magic number') as info:
    data.load_split('mnist', 'test', data_dir=str(tmp_path))
  assert 'expected 0x00000803, found 0x00000801' in str(info.value)


def test_wrong_magic_labels(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(2))
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2]), magic=0x00000901)
  with pytest.raises(data.DataError, match=f'{TEST_LABELS}.gz: wrong magic number') as info:
    data.load_split('mnist', 'test', data_dir=str(tmp_path))
  assert 'expected 0x00000801, found 0x00000901' in str(info.value)


def test_read_idx_rejects_non_ubyte_magic(tmp_path):
  path = write_idx(tmp_path / 'x', np.array([1, 2]), magic=0x00000D01)  # float32.
  with pytest.raises(data.DataError, match='x.gz: bad magic number 0x00000d01'):
    data.read_idx(path)


@pytest.mark.parametrize('raw', [b'', b'\x00\x00', b'\x00\x00\x08\x03\x00\x00\x00\x02'])
def test_truncated_header(tmp_path, raw):
  path = write_idx(tmp_path / 'x', raw=raw)
  with pytest.raises(data.DataError, match='x.gz: truncated IDX header'):
    data.read_idx(path)


def test_payload_shorter_than_header(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(2), dims=(3, 28, 28))
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2, 3]))
  with pytest.raises(data.DataError, match=f'{TEST_IMAGES}.gz: truncated payload'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


def test_payload_longer_than_header(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(2))
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2, 3]), dims=(2,), compress=False)
  with pytest.raises(data.DataError, match=f'{TEST_LABELS}: payload longer than header') as info:
    data.load_split('mnist', 'test', data_dir=str(tmp_path))
  assert '1 extra' in str(info.value)


def test_image_size_not_28x28(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(2, size=32))
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2]))
  with pytest.raises(data.DataError, match=f'{TEST_IMAGES}.gz: images are 32x32, expected 28x28'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


def test_count_mismatch(tmp_path):
  write_idx(tmp_path / TEST_IMAGES, tiny_images(3))
  write_idx(tmp_path / TEST_LABELS, np.array([1, 2]))
  with pytest.raises(data.DataError, match='count mismatch') as info:
    data.load_split('mnist', 'test', data_dir=str(tmp_path))
  assert f'{TEST_IMAGES}.gz has 3' in str(info.value)
  assert f'{TEST_LABELS}.gz has 2' in str(info.value)


def test_label_out_of_range(tmp_path):
  write_split(tmp_path, n=3, labels=np.array([1, 10, 200]))
  with pytest.raises(data.DataError, match=rf'{TEST_LABELS}.gz: label out of range 0..9: label\[1\] = 10'):
    data.load_split('mnist', 'test', data_dir=str(tmp_path))


# --- tfds ----------------------------------------------------------------------


def _fake_tfds(monkeypatch, load):
  module = types.ModuleType('tensorflow_datasets')
  module.load = load
  module.as_numpy = lambda x: x
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', module)
  data._load_tfds.cache_clear()


def test_tfds_failure_suggests_data_dir(monkeypatch):
  def load(*args, **kwargs):
    raise ConnectionError('no internet')
  _fake_tfds(monkeypatch, load)
  with pytest.raises(data.DataError, match='could not load/download') as info:
    data.load_split('mnist', 'test')
  message = str(info.value)
  assert '--config.data_dir=' in message
  assert data.DATA_DIR_ENV in message
  assert 'no internet' in message


def test_tfds_import_failure(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # Makes import fail.
  data._load_tfds.cache_clear()
  with pytest.raises(data.DataError, match='data_dir'):
    data.load_split('fashion_mnist', 'train')


def test_tfds_success_converts_arrays(monkeypatch):
  calls = []

  def load(name, **kwargs):
    calls.append((name, kwargs))
    return (np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 2, 9], np.int64))
  _fake_tfds(monkeypatch, load)
  try:
    split = data.load_split('mnist', 'test', limit=3)
  finally:
    data._load_tfds.cache_clear()  # Don't leave fake data cached for others.
  assert calls == [('mnist', dict(split='test', batch_size=-1, as_supervised=True))]
  assert split.images.shape == (3, 28, 28, 1) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32
  assert split.labels.tolist() == [0, 1, 2]
  assert split.source == 'tfds:mnist'
