"""results/summary.json: the suite's runs collected into it, and what it keeps from before.

:func:`collect` turns each finished run's ``suite_record.json`` (its eval metrics and
commands) into per-variant statistics over seeds; :func:`read_previous`,
:func:`merge_previous`, :func:`merge_by_variant` and :func:`carry_over` decide what the
previous summary.json contributes when only some experiments' runs are on this machine. The pages
(report.py, report_class.py) render what these return.
"""

import json
import re
from pathlib import Path

import numpy as np

from vmivae_jax.experiments import suite as suite_lib

REPO_ROOT = Path(__file__).resolve().parents[2]


# The suite's run directory (reproduce's --root) in the commands of summary.json and the
# pages: a shell variable the reader sets, so that a command reruns on any machine.
ROOT_VARIABLE = '$ROOT'
# A --workdir ending in <experiment>/<variant>/seed<N> (a run directory of a suite).
_RUN_WORKDIR = re.compile(r'--workdir=\S*?/?([^/\s]+/[^/\s]+/seed\d+)(?=\s|$)')
COMMANDS_NOTE = (
    '`ROOT` is the directory given to `--root` of the suite command (e.g. `runs/reproduce`); '
    'each run\'s workdir below is `$ROOT/<experiment>/<variant>/seed<k>`. Set `ROOT` in the '
    'shell first and run the commands in the repository root.')
DIRTY_NOTE = (
    'A code version is the commit the run was made with; \'+dirty\' means files that can '
    'change a run\'s numbers (vmivae_jax/, configs/, train.py, eval.py, pyproject.toml) '
    'had uncommitted changes when the run finished, so that commit alone may not '
    'reproduce it exactly.')


def relative(command: str, run_dir: str | None = None) -> str:
  """A command as a user types it in the repository root, its run directory under $ROOT.

  ``run_dir``: the run's directory relative to the suite's root
  (``<experiment>/<variant>/seed<N>``); the command's --workdir becomes ``$ROOT/run_dir``.
  Without it, a --workdir ending in such a path (e.g. an absolute one in an older
  summary.json) is rewritten alike; any other command keeps its paths.
  """
  command = command.replace(f'{REPO_ROOT}/', '')
  if run_dir is not None:
    return re.sub(r'--workdir=\S+', lambda _: f'--workdir={ROOT_VARIABLE}/{run_dir}', command)
  return _RUN_WORKDIR.sub(lambda m: f'--workdir={ROOT_VARIABLE}/{m.group(1)}', command)


def run_dir(experiment: str, variant: str, seed: int) -> str:
  return f'{experiment}/{variant}/seed{seed}'


def _relative_commands(entry):
  """``entry`` (a summary.json tree) with every command in the $ROOT form (as written now)."""
  if isinstance(entry, list):
    return [_relative_commands(x) for x in entry]
  if not isinstance(entry, dict):
    return entry
  out = {}
  for key, value in entry.items():
    if key in ('commands', 'eval_commands') and isinstance(value, list):
      out[key] = [relative(c) if isinstance(c, str) else c for c in value]
    elif key == 'command' and isinstance(value, str):
      out[key] = relative(value)
    else:
      out[key] = _relative_commands(value)
  return out


def dirty_paragraph(section: dict) -> list[str]:
  """The page's note on runs made with uncommitted changes ([] when there are none)."""
  dirty = [name for name, entry in section.items()
           if any(c.endswith('+dirty') for v in entry.get('variants', {}).values()
                  for c in v.get('code_versions', []))]
  if not dirty:
    return []
  names = ', '.join(f'`{n}`' for n in dirty)
  return [f'**Code versions marked `+dirty`.** Runs of {names} were made with uncommitted '
          'changes in the working tree, and this page records that as the runs recorded it. '
          'The numbers stand as measurements of those runs (each read from its own '
          '`eval/metrics.json`); a clean hash needs the experiment rerun at a clean commit '
          '(`--only=<experiment>`, the commands below) and the page regenerated.', '']


def in_suite_order(section: dict, experiments: list[suite_lib.Experiment]) -> dict:
  """``section`` with each experiment's variants in the suite's order (summary.json sorts
  keys); variants the suite no longer lists go last."""
  out = dict(section)
  for exp in experiments:
    entry = section.get(exp.name)
    if not entry or 'variants' not in entry:
      continue
    old = entry['variants']
    order = [v for v, _ in exp.variants if v in old] + [v for v in old
                                                        if v not in dict(exp.variants)]
    out[exp.name] = {**entry, 'variants': {v: old[v] for v in order}}
  return out


def hardware_of(records: list[dict]) -> list[str]:
  """Where the records' runs trained (their ``hardware`` field; older records have none)."""
  return sorted({r['hardware'] for r in records if r.get('hardware')})


def provenance(summary_exp: dict) -> str:
  """'Code version (commit): ...' of an experiment's variants, and where they trained
  when recorded (runs trained on an accelerator say so; older records name nothing)."""
  variants = summary_exp['variants'].values()
  versions = sorted({c for v in variants for c in v['code_versions']})
  hardware = sorted({h for v in variants for h in v.get('hardware', [])})
  return (f'Code version (commit): {", ".join(versions)}.'
          + (f' Trained on: {", ".join(hardware)}.' if hardware else ''))


def flatten(metrics: dict, prefix: str = '') -> dict[str, float]:
  """Nested eval metrics as {'a/b': float}; non-numeric values are left out."""
  flat = {}
  for key, value in metrics.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, name + '/'))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
      flat[name] = float(value)
  return flat


def stats(values: list[float], seeds: list[int]) -> dict:
  """Per-seed values with their mean and sample standard deviation (0 for one seed)."""
  arr = np.asarray(values, np.float64)
  return {'per_seed': [float(v) for v in values], 'seeds': seeds,
          'mean': float(arr.mean()), 'std': float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def collect(experiments: list[suite_lib.Experiment], root: Path) -> dict:
  """{experiment: {variant: {'metrics': {name: stats}, 'commands': [...], ...}}}."""
  summary = {}
  for exp in experiments:
    variants, failed = {}, {}
    for variant, _ in exp.variants:
      records, failures = [], []
      for seed in exp.seeds:
        path = root / exp.name / variant / f'seed{seed}' / 'suite_record.json'
        if path.exists():
          record = json.loads(path.read_text())
          (failures if 'failure' in record else records).append(record)
      if failures:
        failed[variant] = [
            {'seed': r['seed'], 'failure': r['failure'],
             'command': relative(r['command'], run_dir(exp.name, variant, r['seed']))}
            for r in failures]
      if not records:
        continue
      seeds = [r['seed'] for r in records]
      flat = [flatten(r['metrics']) for r in records]
      names = sorted(set.intersection(*(set(f) for f in flat)))
      variants[variant] = {
          'metrics': {n: stats([f[n] for f in flat], seeds) for n in names},
          'commands': [relative(r['command'], run_dir(exp.name, variant, r['seed']))
                       for r in records],
          'eval_commands': [relative(r['eval_command'], run_dir(exp.name, variant, r['seed']))
                            for r in records],
          'train_seconds': [r['train_seconds'] for r in records],
          # False: the run was resumed, its train_seconds only the resuming process's part.
          'train_time_complete': [r.get('train_time_complete', True) for r in records],
          'eval_seconds': [r['eval_seconds'] for r in records],
          'seeds_planned': list(exp.seeds),
          'mi_bound_entropy_kind': records[0]['metrics'].get('mi_bound_entropy_kind'),
          'code_versions': sorted({r.get('code_version', 'not recorded') for r in records}),
          'hardware': hardware_of(records),
      }
    if variants or failed:
      summary[exp.name] = {'title': exp.title, 'config_file': exp.config_file,
                           'purpose': exp.purpose, 'variants': variants, 'failed': failed}
  return summary


def read_previous(results_dir: Path) -> dict:
  """results/summary.json as it stands ({} when absent or unreadable), its commands'
  run directories under $ROOT (an older file has absolute ones)."""
  path = results_dir / 'summary.json'
  try:
    previous = json.loads(path.read_text()) if path.exists() else {}
  except ValueError:
    return {}
  return _relative_commands(previous) if isinstance(previous, dict) else {}


def merge_previous(summary: dict, previous: dict) -> tuple[dict, list[str]]:
  """``summary`` plus every entry of ``previous`` it does not replace: experiments whose
  runs are not under this --root (e.g. made on another machine) and other suites' keys
  keep their recorded numbers. Returns (merged, names kept from ``previous``)."""
  kept = [k for k in previous if k not in summary]
  return {**{k: previous[k] for k in kept}, **summary}, kept


def merge_by_variant(summary: dict, previous: dict) -> dict:
  """``summary`` plus what ``previous`` recorded that it does not replace, variant by
  variant: an experiment or a variant with no runs under this --root keeps its recorded
  numbers (marked ``carried_over``), so a suite finished over several machines or
  sessions loses nothing."""
  merged = {k: v for k, v in previous.items() if k not in summary}
  for name, entry in summary.items():
    old = previous.get(name, {}).get('variants', {}) if isinstance(previous.get(name), dict) else {}
    kept = {v: {**info, 'carried_over': True} for v, info in old.items()
            if v not in entry.get('variants', {})}
    merged[name] = {**entry, 'variants': {**entry.get('variants', {}), **kept}}
  return merged


def carry_over(summary: dict, experiments: list[suite_lib.Experiment],
               results_dir: Path) -> tuple[dict, dict[str, list[str]]]:
  """Keeps the previous summary's entry of each experiment with no runs under root.

  A page regenerated where only some experiments' runs exist keeps the others' recorded
  numbers (marked ``carried_over``) instead of dropping them; a partly rerun
  experiment keeps the recorded numbers of the variants not rerun.

  Returns:
    (the suite's experiments, in its order, with what was carried over; for each
    experiment, the variants whose figures are the committed ones of the previous page).
  """
  path = results_dir / 'summary.json'
  previous = json.loads(path.read_text()) if path.exists() else {}
  merged, committed_figures = {}, {}
  for exp in experiments:
    if exp.name in summary:
      merged[exp.name] = summary[exp.name]
      old = previous.get(exp.name, {}).get('variants', {})
      fresh = summary[exp.name]['variants']
      missing = [v for v, _ in exp.variants if v not in fresh and v in old]
      for v in missing:   # a partial rerun: the other variants keep their recorded numbers
        fresh[v] = _renamed_variant(old[v])
      if missing:
        committed_figures[exp.name] = missing
        order = [v for v, _ in exp.variants if v in fresh]
        summary[exp.name]['variants'] = {v: fresh[v] for v in order}
    elif exp.name in previous:   # summary.json sorts keys: suite order back
      merged[exp.name] = {**in_suite_order(previous, [exp])[exp.name], 'carried_over': True}
      committed_figures[exp.name] = list(previous[exp.name]['variants'])
  return merged, committed_figures


# Runs evaluated before the honest-bound change named the prior-entropy objective
# 'mi_bound' and the aggregate-entropy bound 'mi_bound_aggregate_mc' (same Q, same
# samples). Carried-over variants are shown under today's names; their training-Q
# bound used the prior's entropy and is dropped.
_OLD_GAUSSIAN_NAMES = {'mi_bound': 'mi_objective_prior_entropy',
                       'mi_bound_aggregate_mc': 'mi_bound',
                       'mi_bound_entropy_aggregate_mc': 'mi_bound_entropy'}


def _renamed_variant(old: dict) -> dict:
  out = {**old, 'carried_over': True}
  if old.get('mi_bound_entropy_kind') == 'gaussian_prior':
    metrics = {k: v for k, v in old['metrics'].items()
               if k not in _OLD_GAUSSIAN_NAMES and not k.startswith('mi_bound_training_q')
               and k != 'mi_bound_entropy'}
    metrics.update({new: old['metrics'][k] for k, new in _OLD_GAUSSIAN_NAMES.items()
                    if k in old['metrics']})
    out.update(metrics=metrics, mi_bound_entropy_kind='gaussian_aggregate_mc')
  return out
