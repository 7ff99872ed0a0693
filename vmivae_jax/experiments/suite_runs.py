"""One suite run or sweep: its config, run directory, training, evaluation and record.

``run_one`` trains and evaluates one seed of one variant; ``run_sweep`` trains several as
one sweep (a variant's seeds, or every variant x seed of an experiment whose variants
differ only in sweepable numbers) and records each member as ``run_one`` would. Each
run's ``suite_record.json`` holds its metrics, commands, code version and hardware;
``adopt_run`` / ``record_stopped`` bring in runs trained elsewhere. The command line
(``reproduce.py``) schedules these; the reports read the records.
"""

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

from absl import logging

from vmivae_jax.config import config_lib
from vmivae_jax.config import sections
from vmivae_jax.experiments import suite as suite_lib
from vmivae_jax.rundir import extend
from vmivae_jax.rundir import sweep as sweep_lib
from vmivae_jax.util import cpu_affinity
from vmivae_jax.util import fileio

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_config(config_file: str, overrides: dict):
  """get_config() of a config file plus overrides, exactly as train.py's flags apply them."""
  path = REPO_ROOT / config_file
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = config_lib.override(module.get_config(), overrides)
  config.lock()
  return config


# The files whose contents can change a run's numbers (docs and benchmarks cannot).
RESULT_PATHS = ('vmivae_jax', 'configs', 'train.py', 'eval.py', 'pyproject.toml')


def code_version() -> str:
  """HEAD's commit, '+dirty' if RESULT_PATHS have uncommitted changes; or 'unknown'."""
  try:
    commit = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                            *RESULT_PATHS], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return commit + ('+dirty' if dirty.strip() else '')


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), or '' where it cannot be read."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return ''


def hardware() -> str:
  """What this process computes on, for the records: '2 CPU cores (AMD EPYC)',
  '1 of 2 CPU cores (AMD EPYC)' for a process pinned to part of the machine
  (``reproduce --jobs``), or '1 x NVIDIA H200'. The CPU's model is part of it: the same
  number of cores of another kind trains at another speed, and XLA:CPU's convolutions
  round differently on it (and with another number of threads)."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.local_devices()
  if devices[0].platform == 'cpu':  # forced host devices share the machine's cores
    model = cpu_model()
    return _cpu_cores(len(cpu_affinity.available_cpus()), os.cpu_count() or 1) + (
        f' ({model})' if model else '')
  return f'{len(devices)} x {devices[0].device_kind}'


def _cpu_cores(usable: int, total: int) -> str:
  if usable >= total:
    return f'{total} CPU cores'
  return f'{usable} of {total} CPU cores'


def run_dir(root: Path, experiment: str, variant: str, seed: int) -> Path:
  return root / experiment / variant / f'seed{seed}'


ADOPTED_JSON = 'adopted.json'
ADOPTED_LINKS = ('checkpoints', 'initial_state', 'metrics.jsonl')
# Config keys that may differ between an adopted run and the suite: evaluation only.
ADOPT_MAY_DIFFER = ('eval',)


class AdoptError(RuntimeError):
  """A run cannot be adopted (different config, or the suite's workdir is taken)."""


def adopt_run(source: Path, workdir: Path, config) -> None:
  """Makes ``workdir`` an adopted view of the run in ``source`` (see the docstring).

  Idempotent for the same source. Nothing is written in ``source``.

  Raises:
    AdoptError: ``source`` has no config.json or one that differs from ``config``
      outside ADOPT_MAY_DIFFER, or ``workdir`` holds something else.
  """
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  source = Path(source).absolute()
  path = source / workdir_lib.CONFIG_FILE
  if not path.exists():
    raise AdoptError(f'{source}: no {workdir_lib.CONFIG_FILE}; not a train.py workdir')
  # load_config fills sections added since the run was trained with their (off) defaults.
  old = json.loads(workdir_lib.config_to_json(workdir_lib.load_config(source)))
  new = json.loads(workdir_lib.config_to_json(config))
  diff = sorted(extend.differing_keys(old, new))
  bad = [k for k in diff if k.split('.')[0] not in ADOPT_MAY_DIFFER]
  if bad:
    raise AdoptError(f'{source} was trained with a different config than the suite\'s '
                     f'{workdir} (differs in: {", ".join(bad)})')
  marker = workdir / ADOPTED_JSON
  if workdir.is_symlink():
    raise AdoptError(f'{workdir} is a symlink; the suite needs a real directory there')
  if marker.exists():
    if json.loads(marker.read_text())['source'] != str(source):
      raise AdoptError(f'{workdir} already adopts {json.loads(marker.read_text())["source"]}')
  elif workdir.exists() and any(workdir.iterdir()):
    raise AdoptError(f'{workdir} already holds files; adopt into an empty or new directory')
  workdir.mkdir(parents=True, exist_ok=True)
  for name in ADOPTED_LINKS:
    link = workdir / name
    if not link.is_symlink():
      link.symlink_to(source / name, target_is_directory=name != 'metrics.jsonl')
  fileio.atomic_write(workdir / workdir_lib.CONFIG_FILE, workdir_lib.config_to_json(config))
  fileio.atomic_write(marker, json.dumps(
      {'source': str(source), 'config_differs_in': diff}, indent=2, sort_keys=True))


def _evaluate_adopted(experiment, variant, seed, workdir: Path, config) -> dict:
  """Evaluates an adopted run at its latest checkpoint (never trains it)."""
  from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  source = json.loads((workdir / ADOPTED_JSON).read_text())['source']
  record_path = workdir / 'suite_record.json'
  steps = workdir_lib.checkpoint_steps(workdir)
  if not steps:
    raise AdoptError(f'{workdir} (adopted from {source}) has no checkpoint yet')
  reached = steps[-1]
  if record_path.exists():
    record = json.loads(record_path.read_text())
    if record.get('step') == reached:
      return record
  start = time.time()
  metrics = evaluation.evaluate_workdir(workdir, step=reached)
  record = {
      'experiment': experiment.name, 'variant': variant, 'seed': seed, 'step': reached,
      'num_train_steps': int(config.num_train_steps),
      'partial': reached < int(config.num_train_steps), 'adopted_from': source,
      'command': suite_lib.train_command(experiment, variant, seed, source),
      'eval_command': f'python eval.py --workdir={workdir} --step={reached}',
      'train_seconds': 0.0, 'eval_seconds': round(time.time() - start, 1),
      # The training's code version is the source's business; this one evaluated it.
      'code_version': f'{code_version()} (evaluation; trained elsewhere)', 'metrics': metrics,
  }
  if experiment.curve:
    record['curve'] = _curve(workdir)
  fileio.atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True))
  return record


def record_stopped(experiment: suite_lib.Experiment, variant: str, seed: int, root: Path, *,
                   code_version: str, hardware: str) -> dict:
  """Records a run that stopped before ``num_train_steps`` and cannot be evaluated again
  (its checkpoints are gone) as partial, from the accuracy curve measured while they
  existed: the step and code metrics of its last curve point. Never overwrites a record.

  Raises:
    ValueError: no eval/curve.json, a record already there, or missing provenance.
  """
  from vmivae_jax.evaluation import curve  # pylint: disable=g-import-not-at-top
  workdir = run_dir(root, experiment.name, variant, seed)
  if not code_version or not hardware:
    raise ValueError('--record_stopped needs --trained_with (code version) and --trained_on '
                     '(hardware), read off the training\'s log')
  record_path = workdir / 'suite_record.json'
  if record_path.exists():
    raise ValueError(f'{record_path} exists: the run is already recorded')
  measured = curve.read_curve(workdir)
  if not measured or not measured.get('points'):
    raise ValueError(f'{workdir}: no eval/curve.json to record the stopped run from')
  points = sorted(measured['points'], key=lambda p: p['step'])
  last = points[-1]
  config = load_config(experiment.config_file, {'seed': seed, **experiment.variant_overrides(variant)})
  record = {
      'experiment': experiment.name, 'variant': variant, 'seed': seed, 'step': last['step'],
      'num_train_steps': int(config.num_train_steps), 'partial': True,
      'stopped': f'stopped at step {last["step"]} of {int(config.num_train_steps)}; its '
                 'checkpoints are gone, so only the accuracy curve measured from them is '
                 'recorded (no ELBO, IWAE or fresh Q)',
      'command': suite_lib.train_command(experiment, variant, seed, str(workdir)),
      'eval_command': f'python -m vmivae_jax.experiments.curve --workdir={workdir}',
      'train_seconds': 0.0, 'eval_seconds': 0.0, 'code_version': code_version,
      'hardware': hardware, 'metrics': {k: last[k] for k in curve.METRICS}, 'curve': points,
  }
  fileio.atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True))
  return record


def _curve(workdir: Path) -> list[dict]:
  from vmivae_jax.evaluation import curve  # pylint: disable=g-import-not-at-top
  return curve.checkpoint_curve(workdir)['points']


def run_one(experiment: suite_lib.Experiment, variant: str, seed: int, root: Path) -> dict:
  """Trains and evaluates one run (or reuses it when done); returns its record."""
  from vmivae_jax.train import trainer  # pylint: disable=g-import-not-at-top
  workdir = run_dir(root, experiment.name, variant, seed)
  overrides = {'seed': seed, **experiment.variant_overrides(variant)}
  config = load_config(experiment.config_file, overrides)
  if (workdir / ADOPTED_JSON).exists():
    return _evaluate_adopted(experiment, variant, seed, workdir, config)
  if workdir.is_symlink():
    raise AdoptError(f'{workdir} is a symlink: adopt runs with --adopt (a real directory '
                     'with symlinked checkpoints) so the suite never trains into them')
  record_path = workdir / 'suite_record.json'
  if record_path.exists():
    record = json.loads(record_path.read_text())
    if record.get('step') == config.num_train_steps:
      return record
  resumed = _resumed(workdir)
  start = time.time()
  try:
    trainer.train(config, workdir)
  except trainer.DivergenceError as e:  # a result too: recorded, reported, not retried
    record = {'experiment': experiment.name, 'variant': variant, 'seed': seed,
              'step': int(config.num_train_steps), 'failure': str(e),
              'command': suite_lib.train_command(experiment, variant, seed, str(workdir))}
    fileio.atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True))
    return record
  end = time.time()
  return _evaluate_and_record(
      experiment, variant, seed, workdir, config, train_seconds=end - start,
      extra={'train_interval': [round(start, 1), round(end, 1)],
             **({'train_time_complete': False} if resumed else {})})


def _resumed(workdir: Path) -> bool:
  """True when an earlier process already trained part (or all) of the run: the time this
  process measures is then not the run's training time."""
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  return any(step > 0 for step in workdir_lib.checkpoint_steps(workdir))


def _evaluate_and_record(experiment, variant, seed, workdir: Path, config, *,
                         train_seconds: float, extra: dict | None = None) -> dict:
  """Evaluates a trained run as eval.py does and writes its suite_record.json."""
  from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  start = time.time()
  metrics = evaluation.evaluate_workdir(workdir)
  record = {
      'experiment': experiment.name, 'variant': variant, 'seed': seed,
      'step': int(config.num_train_steps),
      'command': suite_lib.train_command(experiment, variant, seed, str(workdir)),
      'eval_command': f'python eval.py --workdir={workdir}',
      'train_seconds': round(train_seconds, 1), 'eval_seconds': round(time.time() - start, 1),
      'code_version': code_version(), 'hardware': hardware(), 'metrics': metrics,
      **(extra or {}),
  }
  if experiment.curve:
    record['curve'] = _curve(workdir)
  fileio.atomic_write(workdir / 'suite_record.json',
                      json.dumps(record, indent=2, sort_keys=True))
  return record


def sweep_dir(root: Path, experiment: str, variants, seeds) -> Path:
  """The sweep's own directory (config.json, members.json) beside its members' run dirs:
  ``<variant>/sweep_s<seeds>`` for one variant, ``sweep_<v1>+<v2>_s<seeds>`` for several."""
  variants = [variants] if isinstance(variants, str) else list(variants)
  seeds_part = f'sweep_s{"-".join(str(s) for s in seeds)}'
  if len(variants) == 1:
    return root / experiment / variants[0] / seeds_part
  return root / experiment / f'sweep_{"+".join(variants)}_{seeds_part[len("sweep_"):]}'


def variants_sweepable(experiment: suite_lib.Experiment) -> bool:
  """True when the experiment's variants differ only in keys a sweep may vary per member."""
  return all(key in sections.SWEEP_KEYS for _, changes in experiment.variants for key in changes)


def _member_overrides(experiment: suite_lib.Experiment, members) -> dict:
  """Overrides of one sweep over (variant, seed) members: the experiment's shared
  overrides, ``sweep.seed`` and, for every key a variant changes, ``sweep.<key>`` with
  each member's value (the config's own where its variant leaves the key alone)."""
  if not variants_sweepable(experiment):
    raise ValueError(f'{experiment.name}: variants {dict(experiment.variants)} change keys a '
                     f'sweep cannot vary per member (sweepable: {sections.SWEEP_KEYS})')
  base = load_config(experiment.config_file, experiment.overrides)
  keys = sorted({k for _, changes in experiment.variants for k in changes} - {'seed'})
  overrides = {**experiment.overrides, 'sweep.seed': tuple(s for _, s in members)}
  for key in keys:
    default = sweep_lib.get_dotted(base, key)
    overrides[f'sweep.{key}'] = tuple(dict(experiment.variants)[v].get(key, default)
                                      for v, _ in members)
  return overrides


def run_sweep(experiment: suite_lib.Experiment, variants, seeds, root: Path) -> list[dict]:
  """Trains the unfinished (variant, seed) runs as one sweep, then evaluates each; returns
  the records, variant-major. ``variants``: one name (its seeds are the members) or
  several (each variant x seed a member; they must differ only in sweepable keys).
  Finished (or adopted) runs are reused as run_one does; a sweep that cannot run (a
  member diverged, members at different steps) falls back to run_one."""
  from vmivae_jax.train import sweep_trainer  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  variants = [variants] if isinstance(variants, str) else list(variants)
  members = [(v, s) for v in variants for s in seeds]
  steps = {v: int(load_config(experiment.config_file,
                              {'seed': seeds[0], **experiment.variant_overrides(v)}).num_train_steps)
           for v in variants}
  records, train = {}, []
  for variant, seed in members:
    workdir = run_dir(root, experiment.name, variant, seed)
    record_path = workdir / 'suite_record.json'
    done = (record_path.exists()
            and json.loads(record_path.read_text()).get('step') == steps[variant])
    if done or (workdir / ADOPTED_JSON).exists() or workdir.is_symlink():
      records[variant, seed] = run_one(experiment, variant, seed, root)  # reused/adopted/refused
    elif steps[variant] in workdir_lib.checkpoint_steps(workdir):  # trained, not evaluated
      records[variant, seed] = run_one(experiment, variant, seed, root)
    else:
      train.append((variant, seed))
  if train:
    if len(variants) == 1:
      overrides = {**experiment.variant_overrides(variants[0]),
                   'sweep.seed': tuple(s for _, s in train)}
    else:
      overrides = _member_overrides(experiment, train)
    config = load_config(experiment.config_file, overrides)
    dirs = [run_dir(root, experiment.name, v, s) for v, s in train]
    resumed = any(_resumed(d) for d in dirs)
    trained_variants = list(dict.fromkeys(v for v, _ in train))
    where = sweep_dir(root, experiment.name, trained_variants,
                      list(dict.fromkeys(s for _, s in train)))
    start = time.time()
    try:
      sweep_trainer.train(config, where, member_dirs=dirs)
    except (trainer.DivergenceError, workdir_lib.WorkdirError) as e:
      logging.warning('%s: the sweep of %s stopped (%s); running them one by one',
                      experiment.name, train, e)
      for variant, seed in train:
        records[variant, seed] = run_one(experiment, variant, seed, root)
      return [records[m] for m in members]
    end = time.time()
    seconds = end - start
    for (variant, seed), workdir in zip(train, dirs):
      member_config = load_config(experiment.config_file,
                                  {'seed': seed, **experiment.variant_overrides(variant)})
      sweep = {'dir': str(where), 'seeds': list(dict.fromkeys(s for _, s in train)),
               'train_seconds': round(seconds, 1)}
      if len(trained_variants) > 1:
        sweep['variants'] = trained_variants
      records[variant, seed] = _evaluate_and_record(
          experiment, variant, seed, workdir, member_config,
          train_seconds=seconds / len(train),  # its share: totals stay sums over runs
          extra={'sweep': sweep, 'train_interval': [round(start, 1), round(end, 1)],
                 **({'train_time_complete': False} if resumed else {})})
  return [records[m] for m in members]
