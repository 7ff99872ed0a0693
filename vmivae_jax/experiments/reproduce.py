"""Runs an experiment suite and regenerates results/summary.json and docs/results.md.

  python -m vmivae_jax.experiments.reproduce --suite=thesis
  python -m vmivae_jax.experiments.reproduce --suite=thesis --only=joint_mnist --jobs=2

Each run trains with the same code path as train.py (its equivalent command is
recorded) into ``--root/<experiment>/<variant>/seed<k>`` and is evaluated as eval.py
does. Finished runs (final checkpoint evaluated) are reused, so an interrupted
suite resumes where it stopped; partial results are aggregated from whatever
runs have finished and marked as such.
"""

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app
from absl import flags
from absl import logging

from vmivae_jax import config_lib
from vmivae_jax import fileio
from vmivae_jax.experiments import report
from vmivae_jax.experiments import suite as suite_lib

_SUITE = flags.DEFINE_enum('suite', 'thesis', sorted(suite_lib.SUITES), 'Experiment suite.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these experiments (default: all).')
_SEEDS = flags.DEFINE_integer('max_seeds', 0, 'Use at most this many seeds (0 = all).')
_ROOT = flags.DEFINE_string('root', 'runs/reproduce', 'Where the runs\' workdirs go.')
_RESULTS = flags.DEFINE_string('results_dir', 'results', 'Where summary.json goes.')
_DOCS = flags.DEFINE_string('docs_dir', 'docs', 'Where results.md and its figures go.')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Runs in parallel (each in its own process).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only aggregate finished runs.')
_RUN_ONE = flags.DEFINE_string('run_one', '', 'Internal: experiment:variant:seed to run.')

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


def run_dir(root: Path, experiment: str, variant: str, seed: int) -> Path:
  return root / experiment / variant / f'seed{seed}'


def run_one(experiment: suite_lib.Experiment, variant: str, seed: int, root: Path) -> dict:
  """Trains and evaluates one run (or reuses it when done); returns its record."""
  from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  from vmivae_jax import trainer  # pylint: disable=g-import-not-at-top
  workdir = run_dir(root, experiment.name, variant, seed)
  overrides = {'seed': seed, **experiment.variant_overrides(variant)}
  config = load_config(experiment.config_file, overrides)
  record_path = workdir / 'suite_record.json'
  if record_path.exists():
    record = json.loads(record_path.read_text())
    if record.get('step') == config.num_train_steps:
      return record
  start = time.time()
  try:
    trainer.train(config, workdir)
  except trainer.DivergenceError as e:  # a result too: recorded, reported, not retried
    record = {'experiment': experiment.name, 'variant': variant, 'seed': seed,
              'step': int(config.num_train_steps), 'failure': str(e),
              'command': suite_lib.train_command(experiment, variant, seed, str(workdir))}
    fileio.atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True))
    return record
  train_seconds = time.time() - start
  start = time.time()
  metrics = evaluation.evaluate_workdir(workdir)
  record = {
      'experiment': experiment.name, 'variant': variant, 'seed': seed,
      'step': int(config.num_train_steps),
      'command': suite_lib.train_command(experiment, variant, seed, str(workdir)),
      'eval_command': f'python eval.py --workdir={workdir}',
      'train_seconds': round(train_seconds, 1), 'eval_seconds': round(time.time() - start, 1),
      'code_version': code_version(), 'metrics': metrics,
  }
  fileio.atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True))
  return record


def _run_in_subprocess(key: str, root: Path) -> str:
  env = dict(os.environ)
  cmd = [sys.executable, '-m', 'vmivae_jax.experiments.reproduce', f'--suite={_SUITE.value}',
         f'--root={root}', f'--run_one={key}']
  proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f'{key} failed:\n{proc.stderr[-3000:]}')
  return key


def main(argv):
  del argv
  experiments = {e.name: e for e in suite_lib.SUITES[_SUITE.value]()}
  root = Path(_ROOT.value).absolute()
  if _RUN_ONE.value:
    name, variant, seed = _RUN_ONE.value.split(':')
    run_one(experiments[name], variant, int(seed), root)
    return
  selected = [experiments[n] for n in (_ONLY.value or experiments)]
  keys = []
  for experiment in selected:
    seeds = experiment.seeds[:_SEEDS.value] if _SEEDS.value else experiment.seeds
    # Seed-major order: partial results always hold complete ELBO-vs-MI pairs.
    keys += [f'{experiment.name}:{v}:{s}' for s in seeds for v, _ in experiment.variants]
  if not _REPORT_ONLY.value:
    with concurrent.futures.ThreadPoolExecutor(max(1, _JOBS.value)) as pool:
      futures = [pool.submit(_run_in_subprocess, k, root) for k in keys]
      for future in concurrent.futures.as_completed(futures):
        try:
          logging.info('finished %s', future.result())
        except RuntimeError as e:
          logging.error('%s', e)
  report.write(list(experiments.values()), root=root, results_dir=Path(_RESULTS.value),
               docs_dir=Path(_DOCS.value))


if __name__ == '__main__':
  app.run(main)
