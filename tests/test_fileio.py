"""Tests for vmivae_jax.util.fileio: atomic writes and JSON conversion."""

import json

import numpy as np
import pytest

from vmivae_jax.util import fileio


def test_jsonable_turns_non_finite_into_null():
  out = fileio.to_jsonable({'a': np.float32(1.5), 'b': float('nan'),
                            'c': [np.int64(2), np.array([1.0, np.inf])], 'd': (True,)})
  assert out == {'a': 1.5, 'b': None, 'c': [2, [1.0, None]], 'd': [True]}


def test_atomic_writes_leave_no_temporary_files(tmp_path):
  fileio.atomic_write(tmp_path / 'sub' / 'a.txt', 'text')
  fileio.atomic_write(tmp_path / 'sub' / 'b.bin', b'\x00\x01')
  fileio.atomic_save_npz(tmp_path / 'sub' / 'c.npz', x=np.arange(3))
  fileio.write_json(tmp_path / 'sub' / 'd.json', {'b': np.float64(2.0), 'a': (1,)})
  assert (tmp_path / 'sub' / 'a.txt').read_text() == 'text'
  assert (tmp_path / 'sub' / 'b.bin').read_bytes() == b'\x00\x01'
  np.testing.assert_array_equal(np.load(tmp_path / 'sub' / 'c.npz')['x'], np.arange(3))
  assert json.loads((tmp_path / 'sub' / 'd.json').read_text()) == {'a': [1], 'b': 2.0}
  assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['a.txt', 'b.bin', 'c.npz',
                                                                   'd.json']


def test_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / 'a.txt'
  fileio.atomic_write(path, 'old')
  with pytest.raises(TypeError):
    fileio.atomic_write(path, 3)  # not str or bytes
  assert path.read_text() == 'old'
  assert [p.name for p in tmp_path.iterdir()] == ['a.txt']
