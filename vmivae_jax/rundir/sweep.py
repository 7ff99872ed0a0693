"""Sweeps: many runs of one config, differing only in numbers, trained in one program.

``config.sweep`` (config_lib.sweep_section) lists per-member values of the keys in
``config_lib.SWEEP_KEYS``; every non-empty tuple holds one value per member (member i
takes item i of each), every other key is shared::

  python train.py --config=configs/mnist_joint.py --workdir=runs/sweep \\
      --config.sweep.seed='(0,1,2,0,1,2)' --config.sweep.mi_weight='(0,0,0,10,10,10)'

Member i is exactly the single run of :func:`member_configs`'s config i: same
initialisation, noise and batch order (all from its own seed), same hyper-parameters,
and its own run directory (``WORKDIR/members/<i>`` by default) holding what train.py
would have written there (config.json, metrics.jsonl, checkpoints, initial_state,
event files), so eval.py and the results tooling see ordinary runs. The sweep's
WORKDIR holds its config.json (with the sweep section) and members.json.

Batch order: per member, from the member's seed (not shared): that is what makes a
member equal to its single run; members with the same seed see the same batches.

This module is the config side (members, checks); build.build_sweep turns a sweep into
objects, sweep_step.py is the vmapped step and sweep_trainer.py the loop.
"""

import copy
import json
import numbers
from pathlib import Path

import ml_collections

from vmivae_jax.config import config_lib
from vmivae_jax.config import validation

MEMBERS_DIR = 'members'
MEMBERS_FILE = 'members.json'
# Weights whose zero removes a term from the program (the term is skipped, not multiplied
# by 0): members must agree on zero vs non-zero. mi_weight is not one: a sweep always
# computes the MI term and multiplies it by each member's (possibly zero) lambda.
ON_OFF_KEYS = ('capacity.gaussian.gamma', 'capacity.categorical.gamma',
               'invariance.consistency_weight', 'invariance.paired_mi_weight',
               'invariance.vat_weight')
INTEGER_KEYS = ('seed', 'capacity.gaussian.steps', 'capacity.categorical.steps')


def get_dotted(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _leaves(tree, prefix: str = '') -> dict:
  """Dotted key -> value of every leaf of a (Config)dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(_leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def swept(config) -> dict[str, tuple]:
  """The swept keys and their per-member values ({} for a single run)."""
  if 'sweep' not in config:
    return {}
  return {k: tuple(v) for k, v in _leaves(config.sweep).items()
          if isinstance(v, (tuple, list)) and len(v)}


def is_sweep(config) -> bool:
  return bool(swept(config))


def num_members(config) -> int:
  values = swept(config)
  return len(next(iter(values.values()))) if values else 1


class SweepError(validation.ConfigError):
  """An invalid sweep section (a ConfigError: train.py exits 2 with the message)."""


def check(config) -> None:
  """The sweep section's own checks (keys, lengths, value types, on/off agreement).

  Raises:
    SweepError: naming ``config.sweep.<key>`` and the offending value.
  """
  if 'sweep' not in config:
    return
  section = config.sweep
  if not isinstance(section, (ml_collections.ConfigDict, dict)):
    raise SweepError(f'config.sweep={section!r}: expected a group of settings like '
                     f'{config_lib.sweep_section().to_dict()!r}')
  base = config_lib.get_base_config()
  for key, value in _leaves(section).items():
    if key not in config_lib.SWEEP_KEYS:
      try:
        get_dotted(base, key)
        known = True
      except (KeyError, AttributeError):
        known = False
      why = (f'{key} cannot vary across the members of a sweep: it sets shapes, the '
             'program\'s structure or the loop, which one compiled program shares' if known
             else f'the config has no key {key!r}')
      raise SweepError(f'config.sweep.{key}={value!r}: {why}. Sweepable keys: '
                       f'{", ".join(config_lib.SWEEP_KEYS)}')
    if not isinstance(value, (tuple, list)):
      raise SweepError(f'config.sweep.{key}={value!r}: expected a tuple of per-member values')
  values = swept(config)
  if not values:
    return
  lengths = {k: len(v) for k, v in values.items()}
  first = next(iter(lengths))
  for key, n in lengths.items():
    if n != lengths[first]:
      raise SweepError(
          f'config.sweep.{key} has {n} values {values[key]!r} but config.sweep.{first} has '
          f'{lengths[first]}: every swept key lists one value per member')
  for key, items in values.items():
    for i, item in enumerate(items):
      integer = key in INTEGER_KEYS
      ok = (isinstance(item, numbers.Integral) if integer else isinstance(item, numbers.Real))
      if not ok or isinstance(item, bool):
        raise SweepError(f'config.sweep.{key}={items!r}: item {i} ({item!r}) is not '
                         f'{"an integer" if integer else "a number"}')
  for key in ON_OFF_KEYS:
    if key in values:
      on = {float(v) > 0 for v in values[key]}
      if len(on) > 1:
        raise SweepError(
            f'config.sweep.{key}={values[key]!r}: members mix 0 (the term is left out of '
            'the program) and > 0; a sweep compiles one program, so every member must have '
            'the term on or every member off')


def member_configs(config) -> list[ml_collections.ConfigDict]:
  """Each member's config: the shared settings, its values, and an empty sweep section.

  A value takes the type of the key it replaces (``mi_weight=10`` becomes 10.0), so a
  member's config.json equals the single run's.
  """
  check(config)
  values = swept(config)
  members = []
  for i in range(num_members(config)):
    member = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
    member.sweep = config_lib.sweep_section()
    for key, items in values.items():
      *parents, leaf = key.split('.')
      node = member
      for part in parents:
        node = node[part]
      node[leaf] = type(node[leaf])(items[i])
    members.append(member)
  return members


def validate(config, *, num_devices: int = 1, check_paths: bool = True) -> None:
  """The sweep's checks, then every member's config (``validation.validate``).

  Raises:
    SweepError: the sweep section is invalid, or a member's config is (the message
      names the member's values and the key), or ``data_feed='host'`` (sweeps read
      the members' data orders from the on-device training set only).
  """
  check(config)
  values = swept(config)
  for i, member in enumerate(member_configs(config)):
    try:
      validation.validate(member, num_devices=num_devices, check_paths=check_paths and i == 0)
    except validation.ConfigError as e:
      if not any(str(e).startswith(f'config.{k}=') for k in values):
        raise  # a shared setting: the message is the single run's
      which = ', '.join(f'{k}={v[i]!r}' for k, v in values.items())
      raise SweepError(f'config.sweep member {i} ({which}): {e}') from e
  if config.data_feed == 'host':
    raise SweepError(
        "config.data_feed='host': a sweep uses the device feed only (each member reads its "
        "own data order from the on-device training set, in one process); set "
        "data_feed='device', or train the members as single runs to feed them from the host")


def default_member_dirs(workdir: Path | str, n: int) -> list[Path]:
  return [Path(workdir) / MEMBERS_DIR / str(i) for i in range(n)]


def describe_members(config, member_dirs) -> str:
  """members.json: each member's directory and swept values."""
  values = swept(config)
  return json.dumps({'members': [
      {'dir': str(d), **{k: v[i] for k, v in values.items()}}
      for i, d in enumerate(member_dirs)]}, indent=2, sort_keys=True)


def member_dirs_of(workdir: Path | str) -> list[str] | None:
  """The member directories a sweep's WORKDIR lists (None: not a sweep's workdir)."""
  path = Path(workdir) / MEMBERS_FILE
  if not path.exists():
    return None
  try:
    return [m['dir'] for m in json.loads(path.read_text())['members']]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def placeholder_config(member) -> ml_collections.ConfigDict:
  """A member's config with every sweepable number set to a placeholder that keeps only
  what shapes the program (a term on or off), so that sweeps differing in values build
  equal (hashable) step statics and share one compiled program; the values themselves
  reach the step as arrays (sweep_step.HParams)."""
  c = ml_collections.ConfigDict(copy.deepcopy(member.to_dict()))
  c.seed = 0
  c.mi_weight = c.beta = 1.0
  c.vae_optimizer.learning_rate = c.q_optimizer.learning_rate = 1.0
  c.temperature.update(initial=1.0, floor=1.0, anneal_rate=0.0)
  for group in ('gaussian', 'categorical'):
    cap = c.capacity[group]
    cap.update(gamma=1.0 if cap.gamma > 0 else 0.0, max_nats=0.0, steps=1)
  for key in ('consistency_weight', 'paired_mi_weight', 'vat_weight'):
    c.invariance[key] = 1.0 if c.invariance[key] > 0 else 0.0
  return c


def check_not_sweep(workdir: Path | str) -> None:
  """eval.py on a sweep's directory: an error naming its members' run directories."""
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  dirs = member_dirs_of(workdir)
  if dirs is not None:
    raise workdir_lib.WorkdirError(
        f'{workdir} is the directory of a sweep of {len(dirs)} members; evaluate each '
        f'member\'s run directory, e.g. python eval.py --workdir={dirs[0]}')
