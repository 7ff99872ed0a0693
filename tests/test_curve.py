"""accuracy_majority_train (the thesis's protocol) and the accuracy-over-training curve,
on one real smoke run (mnist_joint smoke, 30 steps, 4 kept checkpoints)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from vmivae_jax.config import config_lib
from vmivae_jax.data import sources as data
from vmivae_jax.evaluation import classifier
from vmivae_jax.evaluation import curve as curve_lib
from vmivae_jax.evaluation import run as eval_run
from vmivae_jax.train import trainer

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get('VMIVAE_DATA_DIR') or REPO.parent / 'shared' / 'datasets')
pytestmark = pytest.mark.skipif(not (DATA_DIR / 'mnist').is_dir(),
                                reason=f'real datasets not found at {DATA_DIR}')


def smoke_config():
  config = config_lib.smoke(config_lib.joint_config('mnist'))
  config.update(data_dir=str(DATA_DIR), num_train_steps=30, checkpoint_every_steps=10,
                keep_checkpoints=5, steps_per_chunk=5)
  config.eval.update(q_train_steps=5, iwae_samples=2, iwae_chunk=2)
  return config


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('curve') / 'run'
  trainer.train(smoke_config(), workdir, num_devices=1)
  return workdir


def _fake_train_codes(labels):
  """Codes with a known many-to-one answer: label 0 split over codes 0 and 8 (both map to
  0), labels 1..7 on their own code, labels 8 and 9 together on code 9."""
  labels = np.asarray(labels)
  codes = np.where(labels == 0, np.where(np.arange(len(labels)) % 2 == 0, 0, 8), labels)
  return np.where(labels >= 8, 9, codes).astype(np.int32)


def test_accuracy_majority_train_fits_and_scores_on_the_training_split(smoke_run, monkeypatch):
  config = smoke_config()
  train = data.load_split('mnist', 'train', data_dir=config.data_dir, limit=config.train_limit)
  real = classifier.code_assignments

  def fake(model, vae_vars, images, **kwargs):
    if len(images) == len(train.labels):  # the training split: codes with a known answer
      assert np.array_equal(images, train.images)
      return _fake_train_codes(train.labels)
    return real(model, vae_vars, images, **kwargs)
  monkeypatch.setattr(classifier, 'code_assignments', fake)
  metrics = eval_run.evaluate_workdir(smoke_run, make_figures=False)
  n = np.bincount(train.labels, minlength=10)
  expected = (n.sum() - n[8] - n[9] + max(n[8], n[9])) / n.sum()
  assert metrics['accuracy_majority_train'] == pytest.approx(expected, abs=1e-12)
  assert metrics['num_train_examples_classified'] == len(train.labels) == 512
  # What a wrong protocol would give instead: one-to-one on train (code 8 holds only
  # zeros, so Hungarian cannot count them), or the test split's numbers.
  hungarian_train = (n.sum() - n[8] - n[9] + max(n[8], n[9]) - (n[0] - (n[0] + 1) // 2)) / n.sum()
  assert abs(expected - hungarian_train) > 0.01
  assert metrics['accuracy_majority_train'] not in (metrics['accuracy_majority'],
                                                    metrics['accuracy_hungarian'])
  saved = json.loads((smoke_run / 'eval' / 'metrics.json').read_text())
  assert saved['accuracy_majority_train'] == metrics['accuracy_majority_train']


def test_curve_measures_every_kept_checkpoint_and_matches_eval(smoke_run, monkeypatch):
  metrics = eval_run.evaluate_workdir(smoke_run, make_figures=False)
  curve = curve_lib.checkpoint_curve(smoke_run, reuse=False)
  assert [p['step'] for p in curve['points']] == [0, 10, 20, 30]
  assert [p['examples_seen'] for p in curve['points']] == [0, 640, 1280, 1920]
  assert curve['partial'] is False and curve['last_step'] == 30
  last = curve['points'][-1]
  for key in ('accuracy_hungarian', 'accuracy_majority', 'nmi', 'accuracy_majority_train'):
    assert last[key] == pytest.approx(metrics[key], abs=1e-9), key
  path = smoke_run / 'eval' / 'curve.json'
  assert json.loads(path.read_text())['points'] == curve['points']
  assert not [p for p in path.parent.iterdir() if p.name.endswith('.tmp')]
  # A rerun measures only checkpoints not yet in curve.json.
  calls = []
  real = classifier.code_assignments
  monkeypatch.setattr(classifier, 'code_assignments',
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  again = curve_lib.checkpoint_curve(smoke_run)
  assert calls == [] and again['points'] == curve['points']


def test_curve_measures_step_0_from_initial_state_once_its_checkpoint_is_gone(
    smoke_run, tmp_path):
  import shutil
  copy = tmp_path / 'run'
  shutil.copytree(smoke_run, copy)
  shutil.rmtree(copy / 'checkpoints' / '0')
  shutil.rmtree(copy / 'eval', ignore_errors=True)
  curve = curve_lib.checkpoint_curve(copy)
  reference = curve_lib.checkpoint_curve(smoke_run)
  assert curve['points'] == reference['points']


def test_curve_cli(smoke_run):
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, '-m', 'vmivae_jax.experiments.curve',
                         f'--workdir={smoke_run}', '--fresh'], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'step      30' in proc.stdout
  bad = subprocess.run([sys.executable, '-m', 'vmivae_jax.experiments.curve',
                        f'--workdir={smoke_run / "nope"}'], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert bad.returncode == 2 and 'error:' in bad.stderr
