"""Small file helpers shared by the workdir, the evaluation and the figures.

Every file is written to a temporary name in its directory and renamed, so a kill never
leaves a half-written file; JSON is written from plain Python values (:func:`to_jsonable`).
"""

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: Path | str, content: str | bytes) -> Path:
  """Writes ``content`` (text or bytes) to ``path`` via a temporary file + rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w' if isinstance(content, str) else 'wb') as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path


def atomic_save_npz(path: Path | str, **arrays) -> Path:
  """``np.savez`` of ``arrays`` to ``path``, atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return atomic_write(path, buffer.getvalue())


def to_jsonable(value: Any) -> Any:
  """Python dicts/lists/floats/ints for JSON: tuples and arrays become lists, numpy and
  JAX scalars Python numbers, non-finite floats None (null)."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, float) or (hasattr(value, 'dtype') and hasattr(value, 'item')):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def write_json(path: Path | str, value: Any) -> Path:
  """``value`` as indented, key-sorted JSON (strict: no NaN), atomically."""
  return atomic_write(path, dumps(value))


def dumps(value: Any) -> str:
  return json.dumps(to_jsonable(value), indent=2, sort_keys=True, allow_nan=False)
