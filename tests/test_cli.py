"""End to end: train.py then eval.py as subprocesses, on the real data (skipped if absent).

The two smoke runs (512 training images, 20 steps) train concurrently, then are
evaluated concurrently; the refusal cases run alongside the training.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmivae_jax.config import config_lib
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.util import fileio

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / 'shared' / 'datasets'
TIMEOUT = 600

REQUIRED = ('step', 'elbo', 'reconstruction', 'kl', 'iwae_log_likelihood', 'iwae_samples',
            'active_units', 'active_units_variances', 'mi_bound', 'mi_bound_se',
            'mi_bound_entropy_kind', 'mi_bound_training_q', 'mi_bound_training_q_se', 'elbo_se',
            'iwae_minus_elbo_se')
CATEGORICAL = ('mi_exact_categorical', 'mi_exact_categorical_se', 'kl_categorical',
               'elbo_relaxed', 'elbo_relaxed_minus_hard', 'accuracy_hungarian',
               'accuracy_majority', 'nmi', 'ari', 'code_usage')
GAUSSIAN = ('mi_objective_prior_entropy', 'latent_influence')
FIGURES = {
    'joint': ('traversal_grid.png', 'traversal_rows.png', 'category_grid.png',
              'categorical_histogram.png', 'label_code_counts.png', 'training_curves.png'),
    'gauss': ('traversal_grid.png', 'traversal_rows.png', 'training_curves.png'),
}
CONFIGS = {'joint': 'configs/mnist_joint.py:smoke', 'gauss': 'configs/mnist_gauss.py:smoke'}


def _env():
  env = dict(os.environ)
  env.pop('VMIVAE_DATA_DIR', None)
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  return env


def _start(args):
  return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc):
  out, err = proc.communicate(timeout=TIMEOUT)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope='module')
def cli(tmp_path_factory):
  if not (DATA_DIR / 'mnist').is_dir():
    pytest.skip(f'real datasets not found at {DATA_DIR}')
  base = tmp_path_factory.mktemp('cli')
  workdirs = {name: base / name for name in CONFIGS}
  empty = base / 'empty'
  empty.mkdir()
  no_checkpoints = base / 'no_checkpoints'
  fileio.atomic_write(no_checkpoints / workdir_lib.CONFIG_FILE,
                                workdir_lib.config_to_json(
                                    config_lib.smoke(config_lib.joint_config('mnist'))))
  training = {name: _start(['train.py', f'--config={CONFIGS[name]}', f'--workdir={wd}',
                            f'--config.data_dir={DATA_DIR}'])
              for name, wd in workdirs.items()}
  refusals = {name: _start(['eval.py', f'--workdir={wd}'])
              for name, wd in (('empty', empty), ('no_checkpoints', no_checkpoints))}
  results = {f'train_{name}': _finish(p) for name, p in training.items()}
  evaluating = {name: _start(['eval.py', f'--workdir={wd}']) for name, wd in workdirs.items()
                if results[f'train_{name}'].returncode == 0}
  results.update({f'eval_{name}': _finish(p) for name, p in evaluating.items()})
  results.update({f'eval_{name}': _finish(p) for name, p in refusals.items()})
  return workdirs, results


def _check_ok(result):
  assert result.returncode == 0, f'{result.args} failed:\n{result.stderr[-3000:]}'


def _all_finite(value, path='metrics'):
  if isinstance(value, dict):
    for k, v in value.items():
      _all_finite(v, f'{path}.{k}')
  elif isinstance(value, list):
    for i, v in enumerate(value):
      _all_finite(v, f'{path}[{i}]')
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    assert math.isfinite(value), f'{path} = {value}'


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_train_then_eval(cli, name):
  workdirs, results = cli
  _check_ok(results[f'train_{name}'])
  wd = workdirs[name]
  config = json.loads((wd / 'config.json').read_text())
  assert [r['step'] for r in workdir_lib.read_metrics(wd)] == [5, 10, 15, 20]
  assert sorted(int(p.name) for p in (wd / 'checkpoints').iterdir()) == [10, 20]

  _check_ok(results[f'eval_{name}'])
  metrics = json.loads((wd / 'eval' / 'metrics.json').read_text())
  required = REQUIRED + (CATEGORICAL if name == 'joint' else GAUSSIAN)
  missing = [k for k in required if k not in metrics]
  assert not missing, missing
  for key in required:
    assert metrics[key] is not None, key
  _all_finite(metrics)
  assert metrics['step'] == 20
  assert metrics['iwae_samples'] == config['eval']['iwae_samples']
  # k = 8: the IWAE bound is >= the ELBO in expectation; paired Monte Carlo error only.
  assert metrics['iwae_minus_elbo_se'] < 2.0
  assert (metrics['iwae_log_likelihood'] - metrics['elbo']
          >= -3.0 * metrics['iwae_minus_elbo_se'])
  for key in ('mi_bound_se', 'mi_bound_training_q_se', 'elbo_se'):
    assert 0.0 < metrics[key] < 5.0, key
  for png in FIGURES[name]:
    assert (wd / 'eval' / png).stat().st_size > 1000, png
  assert sorted(metrics['figures']) == sorted(FIGURES[name])

  if name == 'joint':
    assert set(metrics['kl']) == {'gaussian', 'categorical_0'}
    assert metrics['mi_bound_entropy_kind'] == 'categorical_aggregate'
    assert 'mi_objective_prior_entropy' not in metrics
    assert 0.0 <= metrics['accuracy_hungarian'] <= metrics['accuracy_majority'] <= 1.0
    assert sum(metrics['code_usage']) == config['test_limit']
    assignments = np.load(wd / 'eval' / 'assignments.npz')
    assert assignments['label'].shape == assignments['code'].shape == (config['test_limit'],)
    assert assignments['label'].dtype.kind == assignments['code'].dtype.kind == 'i'
    np.testing.assert_array_equal(np.bincount(assignments['code'], minlength=10),
                                  metrics['code_usage'])
  else:
    assert set(metrics['kl']) == {'gaussian'}
    assert metrics['mi_bound_entropy_kind'] == 'gaussian_aggregate_mc'
    assert 'elbo_relaxed' not in metrics    # no codes: one ELBO
    influence = metrics['latent_influence']
    assert set(influence['mi_dims']) == {'0', '1'}
    assert influence['mi_dims_mean'] == pytest.approx(np.mean(list(influence['mi_dims'].values())))
    assert len(influence['per_dim']) == 32 and influence['other_dims_mean'] > 0
    assert len(metrics['active_units_variances']) == 32
    assert not (wd / 'eval' / 'assignments.npz').exists()


@pytest.mark.parametrize('name,message', [
    ('empty', 'is not the workdir of a train.py run: no config.json (it is empty)'),
    ('no_checkpoints', 'has no checkpoint yet: nothing to evaluate')])
def test_eval_refuses_without_checkpoint(cli, name, message):
  _, results = cli
  result = results[f'eval_{name}']
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
