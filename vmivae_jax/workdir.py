"""A run's working directory: its config, checkpoints and metrics, written safely.

Layout::

  WORKDIR/config.json       the resolved config (written once; a different config refuses)
  WORKDIR/checkpoints/      Orbax checkpoints of the full TrainState (latest N kept)
  WORKDIR/initial_state/    the step-0 TrainState (kept: compares runs' initialisation)
  WORKDIR/metrics.jsonl     one JSON line per logging period (deterministic: no timings)
  WORKDIR/eval/             eval.py outputs

Every file is written to a temporary name and renamed, so a kill never leaves a
half-written config, metrics file or result; Orbax does the same for checkpoints.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'


class WorkdirError(RuntimeError):
  """The workdir cannot be used as asked (foreign run, nothing to evaluate, ...)."""


def atomic_write_text(path: Path | str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file in the same directory + rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def atomic_save_npz(path: Path | str, **arrays) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _to_jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_jsonable(v) for v in value]
  return value


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(_to_jsonable(config.to_dict()), indent=2, sort_keys=True)


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs use."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_config(workdir: Path | str) -> ml_collections.ConfigDict:
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise WorkdirError(f'{workdir}: no {CONFIG_FILE}; is this the workdir of a train.py run?')
  try:
    return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))
  except (json.JSONDecodeError, ValueError) as e:
    raise WorkdirError(f'{path}: unreadable config ({e})') from e


def claim(workdir: Path | str, config: ml_collections.ConfigDict, *, overwrite: bool) -> bool:
  """Records ``config`` in ``workdir``; returns True when resuming the same run.

  A workdir holding a run with a different config is refused unless ``overwrite``,
  which deletes that run's checkpoints and metrics first.
  """
  workdir = Path(workdir)
  path = workdir / CONFIG_FILE
  text = config_to_json(config)
  if path.exists():
    if path.read_text() == text:
      return True
    if not overwrite:
      old = json.loads(path.read_text())
      new = json.loads(text)
      diff = sorted(_diff_keys(old, new))
      raise WorkdirError(
          f'{workdir} holds a run with a different config (differs in: {", ".join(diff[:8])}). '
          'Use another --workdir, or pass --overwrite to delete that run.')
    _delete_run(workdir)
  elif (workdir / 'checkpoints').exists() and not overwrite:
    raise WorkdirError(f'{workdir} has checkpoints but no {CONFIG_FILE}: refusing to mix runs '
                       '(pass --overwrite to delete them).')
  elif overwrite:
    _delete_run(workdir)
  atomic_write_text(path, text)
  return False


def _diff_keys(old: Any, new: Any, prefix: str = '') -> set[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = set()
    for k in set(old) | set(new):
      out |= _diff_keys(old.get(k), new.get(k), f'{prefix}{k}.')
    return out
  return set() if old == new else {prefix.rstrip('.')}


def _delete_run(workdir: Path) -> None:
  import shutil  # pylint: disable=g-import-not-at-top
  for name in ('checkpoints', 'initial_state', 'eval'):
    shutil.rmtree(workdir / name, ignore_errors=True)
  for name in (CONFIG_FILE, METRICS_FILE):
    (workdir / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------
# Metrics.


def truncate_metrics(workdir: Path | str, last_step: int) -> None:
  """Drops metric lines after ``last_step`` (written by a run killed after its last
  checkpoint), so a resumed run's metrics.jsonl equals an uninterrupted run's."""
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line)['step'] <= last_step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):
      break  # a torn last line from a kill mid-write
  atomic_write_text(path, ''.join(l + '\n' for l in kept))


def append_metrics(workdir: Path | str, record: dict) -> None:
  with open(Path(workdir) / METRICS_FILE, 'a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')


def read_metrics(workdir: Path | str) -> list[dict]:
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


# ----------------------------------------------------------------------------------
# Checkpoints.


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs every save at INFO through absl; keep the run's console readable."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def checkpoint_manager(workdir: Path | str, *, keep: int = 2,
                       read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         enable_async_checkpointing=False, read_only=read_only)
  with _quiet_orbax():
    return ocp.CheckpointManager(Path(workdir).absolute() / 'checkpoints', options=options)


def close(manager: ocp.CheckpointManager) -> None:
  with _quiet_orbax():
    manager.close()


def save_checkpoint(manager: ocp.CheckpointManager, state) -> None:
  with _quiet_orbax():
    manager.save(int(jax.device_get(state.step)), args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores ``step`` (default: latest) into the structure of ``abstract_state``."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  with _quiet_orbax():
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def save_initial_state(workdir: Path | str, state) -> None:
  path = Path(workdir).absolute() / 'initial_state'
  if path.exists():
    return
  with _quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, state)


def load_initial_state(workdir: Path | str, abstract_state):
  path = Path(workdir).absolute() / 'initial_state'
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  with _quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path, target)
