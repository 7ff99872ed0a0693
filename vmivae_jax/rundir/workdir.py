"""A run's working directory: its config, checkpoints and metrics, written safely.

Layout::

  WORKDIR/config.json       the resolved config (a different config refuses, except a larger
                            num_train_steps and eval settings: see extend.py)
  WORKDIR/checkpoints/      Orbax checkpoints of the full TrainState (latest N kept)
  WORKDIR/initial_state/    the step-0 TrainState (kept: compares runs' initialisation)
  WORKDIR/metrics.jsonl     one JSON line per logging period (deterministic: no timings)
  WORKDIR/eval/             eval.py outputs
  WORKDIR/.lock             held (flock) by the train.py process using the workdir

Every file is written to a temporary name and renamed, so a kill never leaves a
half-written config, metrics file or result; Orbax does the same for checkpoints
(it writes ``<step>.orbax-checkpoint-tmp*`` and renames it when complete, so a
step directory only ever appears whole; leftover tmp directories of a killed save
are deleted when the next run opens the workdir). metrics.jsonl is appended to; a
line torn by a kill is dropped, with every line after the restored checkpoint,
when the run resumes.
"""

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp

from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.rundir import extend
from vmivae_jax.util import distributed
from vmivae_jax.util import fileio
# metrics.jsonl is metrics_log.py's; its names stay reachable here, where callers use them.
from vmivae_jax.rundir.metrics_log import METRICS_FILE
from vmivae_jax.rundir.metrics_log import append_metrics  # pylint: disable=unused-import
from vmivae_jax.rundir.metrics_log import read_metrics  # pylint: disable=unused-import
from vmivae_jax.rundir.metrics_log import truncate_metrics  # pylint: disable=unused-import

CONFIG_FILE = 'config.json'
EVAL_DIR = 'eval'            # eval.py's outputs
LOCK_FILE = '.lock'
TMP_MARKER = '.orbax-checkpoint-tmp'


class WorkdirError(RuntimeError):
  """The workdir cannot be used as asked (foreign run, nothing to evaluate, ...)."""


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return fileio.dumps(config_lib.stored_dict(config))


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
    value = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise WorkdirError(f'{path}: unreadable config ({e}); not written by train.py?') from e
  if not isinstance(value, dict):
    raise WorkdirError(f'{path}: not a train.py config (a JSON {type(value).__name__}, '
                       'expected an object)')
  try:
    return config_lib.with_later_keys(ml_collections.ConfigDict(_tuples(value)))
  except (TypeError, ValueError) as e:
    raise WorkdirError(f'{path}: not a train.py config ({e})') from e


def _ensure_dir(workdir: Path) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f'{workdir} exists and is not a directory')
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'{workdir}: cannot create the workdir ({e.strerror or e})') from e


@contextlib.contextmanager
def lock(workdir: Path | str):
  """Holds WORKDIR/.lock (flock) so that two train.py runs never share a workdir.

  The kernel releases the lock when the process dies (even by SIGKILL), so a
  killed run never leaves a stale lock behind.

  Raises:
    WorkdirError: the workdir cannot be created, or another process holds it.
  """
  workdir = Path(workdir)
  _ensure_dir(workdir)
  try:
    f = open(workdir / LOCK_FILE, 'a+')  # pylint: disable=consider-using-with
  except OSError as e:
    raise WorkdirError(f'{workdir}: cannot write in the workdir ({e.strerror or e})') from e
  try:
    try:
      import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
    except ImportError:  # no flock (Windows): no protection against concurrent runs
      fcntl = None
    if fcntl is not None:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        f.seek(0)
        holder = f.read().strip() or '?'
        raise WorkdirError(f'{workdir} is in use by another process (pid {holder}); a '
                           'workdir holds one run at a time') from e
    f.seek(0)
    f.truncate()
    f.write(f'{os.getpid()}\n')
    f.flush()
    yield
  finally:
    f.close()


def claim(workdir: Path | str, config: ml_collections.ConfigDict, *, overwrite: bool) -> bool:
  """Records ``config`` in ``workdir``; returns True when resuming the same run.

  A workdir holding a run with a different config is refused unless ``overwrite``,
  which deletes that run's checkpoints and metrics first; except a config that only
  differs in extend.EXTENDABLE settings (train longer: a larger num_train_steps; eval.*,
  keep_checkpoints), which is recorded (atomically) and resumes the run.

  Raises:
    WorkdirError: a different run, or an extension that cannot continue bitwise.
  """
  workdir = Path(workdir)
  _ensure_dir(workdir)
  path = workdir / CONFIG_FILE
  text = config_to_json(config)
  if path.exists():
    try:
      old_text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
      old_text = f'<unreadable: {e}>'
    if old_text == text:
      return True
    filled = _with_later_keys_text(old_text)
    if filled == text:  # recorded before keys that default to off existed: the same run
      logging.info('%s: config recorded before %s existed; their defaults leave it unchanged',
                   workdir, ', '.join(config_lib.LATER_KEYS))
      fileio.atomic_write(path, text)
      return True
    extension = _extension(workdir, filled or old_text, config) if not overwrite else None
    if extension is not None:
      logging.info('%s: %s', workdir, extension)
      fileio.atomic_write(path, text)
      return True
    if not overwrite:
      try:
        old = json.loads(old_text)
      except ValueError:
        old = None
      if isinstance(old, dict):
        diff = sorted(extend.differing_keys(old, json.loads(text)))
        what = (f'a run with a different config (differs in: {", ".join(diff[:8])}'
                f'{", ..." if len(diff) > 8 else ""})')
      else:
        what = f'a {CONFIG_FILE} that is not a train.py config'
      raise WorkdirError(
          f'{workdir} holds {what}. Use another --workdir, or pass --overwrite to delete '
          'that run.')
    _delete_run(workdir)
  elif (workdir / 'checkpoints').exists() and not overwrite:
    raise WorkdirError(f'{workdir} has checkpoints but no {CONFIG_FILE}: refusing to mix runs '
                       '(pass --overwrite to delete them).')
  elif overwrite:
    _delete_run(workdir)
  fileio.atomic_write(path, text)
  return False


def _with_later_keys_text(old_text: str) -> str | None:
  """The recorded config text with config_lib.LATER_KEYS filled in (None: not a config)."""
  try:
    old = json.loads(old_text)
    if not isinstance(old, dict):
      return None
    return config_to_json(config_lib.with_later_keys(ml_collections.ConfigDict(_tuples(old))))
  except (ValueError, TypeError):
    return None


def _extension(workdir: Path, old_text: str, config: ml_collections.ConfigDict) -> str | None:
  """extend.describe_change of the recorded config text and ``config``; None when the
  recorded text is not a JSON object.

  Raises:
    WorkdirError: the change cannot continue the run (see extend.describe_change).
  """
  try:
    old = json.loads(old_text)
  except ValueError:
    return None
  if not isinstance(old, dict):
    return None
  try:
    return extend.describe_change(old, json.loads(config_to_json(config)), workdir=workdir,
                                  checkpoint_steps=checkpoint_steps(workdir))
  except extend.CannotExtend as e:
    raise WorkdirError(str(e)) from e


# experiments/suite_runs.py names the config difference with this (the name it had here).


def _delete_run(workdir: Path) -> None:
  """Deletes what train.py/eval.py wrote (config first: a kill midway leaves no
  config, so the next run refuses or overwrites again, never mixes runs)."""
  logging.warning('--overwrite: deleting the previous run in %s', workdir)
  (workdir / CONFIG_FILE).unlink(missing_ok=True)
  for name in ('checkpoints', 'initial_state', 'eval'):
    shutil.rmtree(workdir / name, ignore_errors=True)
  (workdir / METRICS_FILE).unlink(missing_ok=True)
  for path in workdir.glob('events.out.tfevents.*'):
    path.unlink(missing_ok=True)
  for path in workdir.glob(f'initial_state{TMP_MARKER}*'):
    shutil.rmtree(path, ignore_errors=True)


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
  # Saves are synchronous: when save_checkpoint returns the step is on disk (renamed
  # from its tmp directory), so the trainer's "last good checkpoint" is exact.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         enable_async_checkpointing=False, read_only=read_only,
                                         cleanup_tmp_directories=not read_only)
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
  """Restores ``step`` (default: latest) into the structure of ``abstract_state``.

  Returns None when there is no checkpoint.

  Raises:
    WorkdirError: naming the step's directory, if ``step`` does not exist or cannot be
      read (e.g. files deleted or damaged by hand, or a config that does not match).
  """
  steps = manager.all_steps()
  if step is None:
    step = manager.latest_step()
    if step is None:
      return None
  elif step not in steps:
    raise WorkdirError(f'{manager.directory}: no checkpoint for step {step} '
                       f'(available: {sorted(steps)})')
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  try:
    with _quiet_orbax():
      return _restore_anywhere(
          lambda t: manager.restore(step, args=ocp.args.StandardRestore(t)), target)
  except Exception as e:  # Orbax/TensorStore raise many types for a damaged checkpoint.
    older = sorted(s for s in steps if s < step)
    hint = (f'; delete it to resume from step {older[-1]}' if older
            else '; delete the workdir to start again')
    raise WorkdirError(f'{manager.directory}/{step}: unreadable checkpoint '
                       f'({type(e).__name__}: {_first_line(e)}){hint}') from e


def _restore_anywhere(restore, target):
  """``restore(target)``; a state written by several processes (on devices this process
  does not have) and read by one (eval.py) is restored onto this process's first device.
  Targets without shardings otherwise restore onto the devices they were saved from."""
  try:
    return restore(target)
  except ValueError as e:
    unsharded = all(getattr(x, 'sharding', None) is None for x in jax.tree.leaves(target))
    if 'topology' not in str(e).lower() or not unsharded:
      raise
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return restore(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target))


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return text[0][:300] if text else ''


def checkpoint_steps(workdir: Path | str) -> list[int]:
  """Steps of the complete checkpoints in WORKDIR/checkpoints (tmp directories excluded)."""
  directory = Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def check_evaluable(workdir: Path | str, step: int | None = None) -> ml_collections.ConfigDict:
  """What eval.py checks first: a train.py workdir with a checkpoint to evaluate.

  Returns:
    The run's config.

  Raises:
    WorkdirError: the workdir does not exist, is not a train.py workdir (no or foreign
      config.json), has no checkpoint yet, or has none for ``step``.
  """
  workdir = Path(workdir)
  if not workdir.exists():
    raise WorkdirError(f'{workdir} does not exist')
  if not workdir.is_dir():
    raise WorkdirError(f'{workdir} is not a directory')
  if not (workdir / CONFIG_FILE).exists():
    contents = sorted(p.name for p in workdir.iterdir())
    what = 'it is empty' if not contents else f'it holds {", ".join(contents[:5])}' + (
        ', ...' if len(contents) > 5 else '')
    raise WorkdirError(f'{workdir} is not the workdir of a train.py run: no {CONFIG_FILE} '
                       f'({what})')
  config = load_config(workdir)
  try:
    validation.validate(config, check_paths=False)
  except validation.ConfigError as e:
    raise WorkdirError(f'{workdir / CONFIG_FILE} is not a valid train.py config: {e}') from e
  steps = checkpoint_steps(workdir)
  if not steps:
    raise WorkdirError(f'{workdir} has no checkpoint yet: nothing to evaluate (train.py '
                       'saves one at step 0)')
  if step is not None and step not in steps:
    raise WorkdirError(f'{workdir} has no checkpoint for step {step} (available: {steps})')
  return config


def save_initial_state(workdir: Path | str, state) -> None:
  """Writes WORKDIR/initial_state once (a kill mid-write leaves only a tmp directory,
  deleted here, so the next run writes it again). With several processes every
  process calls it (Orbax's multi-host save)."""
  path = Path(workdir).absolute() / 'initial_state'
  exists = path.exists()
  if not exists and distributed.is_main_process():
    for tmp in path.parent.glob(f'initial_state{TMP_MARKER}*'):
      shutil.rmtree(tmp, ignore_errors=True)
  # Several processes: all take part in Orbax's save, so all follow process 0's view.
  if distributed.broadcast_from_main(exists):
    return
  with _quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, state)


def load_initial_state(workdir: Path | str, abstract_state):
  path = Path(workdir).absolute() / 'initial_state'
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  with _quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
    return _restore_anywhere(lambda t: checkpointer.restore(path, t), target)
