"""Which config changes may continue a finished run on its workdir ("train longer").

``workdir.claim`` refuses a workdir whose recorded config differs from the new one,
except for the changes this module allows: settings that change no number the run has
already produced (``EXTENDABLE``), and a larger ``num_train_steps`` when the longer run
would have gone exactly as the recorded one up to its end. Pure functions of the two
configs as JSON dicts; the caller reads and writes the files.
"""

from pathlib import Path
from typing import Any

# Settings a run may change on its workdir without starting over ("train longer"):
# none of them changes a number the run has already produced. num_train_steps may only
# grow (the loop, the data order, the noise and every schedule are functions of the
# seed and the step, never of the total); keep_checkpoints only decides which old
# checkpoints Orbax deletes; eval.* is read by eval.py only; data_feed only decides how
# the same batches reach the devices (a run may switch feeds, e.g. when moving to
# several hosts); data_cache_dir only says where the same rendered images are kept.
# steps_per_chunk and checkpoint_every_steps are NOT here: they set the chunk boundaries, hence the
# logged metrics (one line per chunk) and the compiled programs.
EXTENDABLE = ('num_train_steps', 'keep_checkpoints', 'eval', 'data_feed', 'data_cache_dir')
# Config keys whose effect depends on num_train_steps (a schedule over the fraction of
# training, ...): while one is non-zero/non-empty, num_train_steps cannot change. None
# exists today (temperature, capacity and MI warm-up count absolute steps); a schedule
# added later that reads num_train_steps must be listed here.
LENGTH_DEPENDENT: tuple[str, ...] = ()


class CannotExtend(ValueError):
  """Only EXTENDABLE settings differ, but the run cannot continue as the longer run would."""


def differing_keys(old: Any, new: Any, prefix: str = '') -> set[str]:
  """The dotted keys whose values differ between two nested config dicts."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = set()
    for k in set(old) | set(new):
      out |= differing_keys(old.get(k), new.get(k), f'{prefix}{k}.')
    return out
  return set() if old == new else {prefix.rstrip('.')}


def _lookup(tree: dict, dotted: str):
  for part in dotted.split('.'):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def describe_change(old: dict, new: dict, *, workdir: Path,
                    checkpoint_steps: list[int]) -> str | None:
  """A description of the allowed change from the recorded config ``old`` to ``new``
  (both as JSON dicts), or None when they differ in anything else (the caller refuses).

  Args:
    old: the config recorded in the workdir.
    new: the config of the run asking for the workdir.
    workdir: named in the messages.
    checkpoint_steps: the steps of the workdir's complete checkpoints.

  Raises:
    CannotExtend: only EXTENDABLE settings differ but the change cannot continue the
      run as the longer run would have gone (shorter, a length-dependent schedule, or a
      last chunk off the longer run's chunk grid).
  """
  diff = sorted(differing_keys(old, new))
  if not diff or any(k.split('.')[0] not in EXTENDABLE for k in diff):
    return None
  if 'num_train_steps' not in diff:
    return f'settings that change no trained number updated ({", ".join(diff)})'
  before, after = int(old['num_train_steps']), int(new['num_train_steps'])
  if after < before:
    raise CannotExtend(
        f'{workdir} holds a run of num_train_steps={before}; it cannot be shortened to '
        f'{after} (evaluate an earlier checkpoint with eval.py --step instead, or use '
        'another --workdir).')
  dependent = [k for k in LENGTH_DEPENDENT if _lookup(new, k)]
  if dependent:
    raise CannotExtend(
        f'{workdir}: cannot extend num_train_steps from {before} to {after}: '
        f'{", ".join(dependent)} depend(s) on the total length, so the longer run would '
        'have differed from the start. Use another --workdir.')
  every, chunk = int(new['checkpoint_every_steps']), int(new['steps_per_chunk'])
  if (before % every) % chunk and before in checkpoint_steps:
    raise CannotExtend(
        f'{workdir}: cannot extend num_train_steps from {before} to {after}: the run ended '
        f'with a short chunk at step {before}, which a {after}-step run would not have '
        f'(chunks of steps_per_chunk={chunk} from every multiple of '
        f'checkpoint_every_steps={every}), so the result would not equal a fresh '
        f'{after}-step run. Use another --workdir.')
  return f'extending num_train_steps from {before} to {after} (changed: {", ".join(diff)})'
