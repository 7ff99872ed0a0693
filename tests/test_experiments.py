"""The reproduction suite: commands, config overrides and the aggregated results files."""

import json
import shlex

import pytest

from vmivae_jax.experiments import report
from vmivae_jax.experiments import reproduce
from vmivae_jax.experiments import suite as suite_lib


def _experiment():
  return suite_lib.Experiment(
      name='joint_mnist', title='Joint', config_file='configs/mnist_joint.py',
      variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': 10.0})), seeds=(0, 1, 2),
      overrides={'num_train_steps': 7, 'model.encoder_hidden': (8, 8)}, purpose='test')


def test_train_command_spells_every_override_as_a_flag():
  cmd = suite_lib.train_command(_experiment(), 'mi', 2, 'runs/x')
  assert cmd.startswith('python train.py --config=configs/mnist_joint.py --workdir=runs/x ')
  words = shlex.split(cmd)     # what a POSIX shell passes to train.py
  for flag in ('--config.seed=2', '--config.mi_weight=10.0', '--config.num_train_steps=7',
               '--config.model.encoder_hidden=(8,8)'):
    assert flag in words
  assert "'--config.model.encoder_hidden=(8,8)'" in cmd   # quoted: ( ) are shell syntax


def test_load_config_applies_overrides_and_locks():
  config = reproduce.load_config('configs/mnist_joint.py',
                                 {'seed': 3, 'mi_weight': 0.0, 'model.q_hidden': [16]})
  assert (config.seed, config.mi_weight, tuple(config.model.q_hidden)) == (3, 0.0, (16,))
  with pytest.raises(AttributeError):
    config.not_a_key = 1


def test_thesis_suite_pairs_every_seed_and_uses_real_configs():
  for exp in suite_lib.thesis_suite():
    assert (reproduce.REPO_ROOT / exp.config_file).exists()
    for variant, _ in exp.variants:
      reproduce.load_config(exp.config_file, {'seed': 0, **exp.variant_overrides(variant)})
  joint = {e.name: e for e in suite_lib.thesis_suite()}['joint_mnist']
  assert len(joint.seeds) >= 5 and {'elbo', 'mi'} <= {v for v, _ in joint.variants}
  # Every MI variant of a joint experiment has its lambda = 0 twin (identical otherwise).
  overrides = dict(joint.variants)
  for variant in overrides:
    if variant.startswith('mi'):
      twin = 'elbo' + variant[2:]
      assert {**overrides[variant], 'mi_weight': 0.0} == {**overrides[twin], 'mi_weight': 0.0}


def _write_record(root, variant, seed, accuracy):
  path = root / 'joint_mnist' / variant / f'seed{seed}' / 'suite_record.json'
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({
      'seed': seed, 'command': f'cmd {variant} {seed}', 'eval_command': f'eval {variant} {seed}',
      'train_seconds': 1.0, 'eval_seconds': 2.0,
      'metrics': {'accuracy_hungarian': accuracy, 'kl': {'gaussian': 3.0 + seed},
                  'mi_bound_entropy_kind': 'categorical_aggregate', 'code_usage': [1, 2]}}))


def test_report_aggregates_per_seed_mean_std_and_marks_partial_runs(tmp_path):
  root = tmp_path / 'runs'
  for seed, acc in ((0, 0.5), (1, 0.7)):
    _write_record(root, 'mi', seed, acc)
  _write_record(root, 'elbo', 0, 0.2)
  summary = report.write([_experiment()], root=root, results_dir=tmp_path / 'results',
                         docs_dir=tmp_path / 'docs')
  saved = json.loads((tmp_path / 'results' / 'summary.json').read_text())
  assert saved == json.loads(json.dumps(summary))
  acc = saved['joint_mnist']['variants']['mi']['metrics']['accuracy_hungarian']
  assert acc['per_seed'] == [0.5, 0.7] and acc['seeds'] == [0, 1]
  assert acc['mean'] == pytest.approx(0.6) and acc['std'] == pytest.approx(0.1414, abs=1e-4)
  assert saved['joint_mnist']['variants']['mi']['metrics']['kl/gaussian']['per_seed'] == [3.0, 4.0]
  page = (tmp_path / 'docs' / 'results.md').read_text()
  assert 'cmd mi 1' in page and 'eval elbo 0' in page
  assert 'Runs finished: 3 of 6 planned' in page
  assert 'short by 35.00 points' in page  # 60% against the 95% target
  assert 'Code version (commit): not recorded' in page


def test_report_lists_diverged_runs_instead_of_dropping_them(tmp_path):
  root = tmp_path / 'runs'
  _write_record(root, 'mi', 0, 0.5)
  path = root / 'joint_mnist' / 'elbo' / 'seed1' / 'suite_record.json'
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({'seed': 1, 'failure': 'loss became non-finite at step 7',
                              'command': f'{report.REPO_ROOT}/x'}))
  summary = report.write([_experiment()], root=root, results_dir=tmp_path / 'results',
                         docs_dir=tmp_path / 'docs')
  assert summary['joint_mnist']['failed']['elbo'][0]['command'] == 'x'
  page = (tmp_path / 'docs' / 'results.md').read_text()
  assert '**elbo, seed 1 diverged**: loss became non-finite at step 7' in page


def test_report_keeps_recorded_experiments_whose_runs_are_absent(tmp_path):
  """Regenerating the page where only some experiments' runs exist must not wipe the
  others: their previous summary entries (and committed figures) are carried over."""
  root = tmp_path / 'runs'
  _write_record(root, 'mi', 0, 0.5)
  other = suite_lib.Experiment(name='gauss_mnist', title='Gaussian', config_file='c.py',
                               variants=(('lambda_1', {'mi_weight': 1.0}),), seeds=(0,),
                               purpose='p')
  previous = {'gauss_mnist': {'title': 'Gaussian', 'config_file': 'c.py', 'purpose': 'p',
                              'failed': {}, 'variants': {'lambda_1': {
                                  'metrics': {'mi_bound': {'per_seed': [1.25], 'seeds': [0],
                                                           'mean': 1.25, 'std': 0.0}},
                                  'commands': ['old cmd'], 'eval_commands': ['old eval'],
                                  'train_seconds': [1.0], 'eval_seconds': [1.0],
                                  'seeds_planned': [0], 'mi_bound_entropy_kind': 'x',
                                  'code_versions': ['abc']}}}}
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'summary.json').write_text(json.dumps(previous))
  fig = tmp_path / 'docs' / 'figures' / 'gauss_mnist' / 'lambda_1_traversal_grid.png'
  fig.parent.mkdir(parents=True)
  fig.write_bytes(b'png')
  summary = report.write([_experiment(), other], root=root, results_dir=tmp_path / 'results',
                         docs_dir=tmp_path / 'docs')
  assert summary['gauss_mnist']['carried_over'] is True
  assert summary['gauss_mnist']['variants'] == previous['gauss_mnist']['variants']
  assert 'carried_over' not in summary['joint_mnist']
  page = (tmp_path / 'docs' / 'results.md').read_text()
  assert '| mi_bound | 1.250 |' in page and 'old cmd' in page and '*Carried over*' in page
  assert '(figures/gauss_mnist/lambda_1_traversal_grid.png)' in page


def test_report_partial_rerun_keeps_other_variants_under_new_names(tmp_path):
  root = tmp_path / 'runs'
  exp = suite_lib.Experiment(name='gauss_mnist', title='Gaussian', config_file='c.py',
                             variants=(('lambda_0', {}), ('lambda_1', {})), seeds=(0,),
                             purpose='p')
  path = root / 'gauss_mnist' / 'lambda_1' / 'seed0' / 'suite_record.json'
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({'seed': 0, 'command': 'new', 'eval_command': 'e',
                              'train_seconds': 1.0, 'eval_seconds': 1.0,
                              'metrics': {'mi_bound': 3.2, 'mi_objective_prior_entropy': 4.1,
                                          'mi_bound_entropy_kind': 'gaussian_aggregate_mc'}}))
  stat = lambda x: {'per_seed': [x], 'seeds': [0], 'mean': x, 'std': 0.0}
  previous = {'gauss_mnist': {'title': 'Gaussian', 'config_file': 'c.py', 'purpose': 'p',
                              'failed': {}, 'variants': {'lambda_0': {
                                  'metrics': {'mi_bound': stat(0.556),
                                              'mi_bound_aggregate_mc': stat(0.502),
                                              'mi_bound_training_q': stat(0.486)},
                                  'commands': ['old'], 'eval_commands': ['e'],
                                  'train_seconds': [1.0], 'eval_seconds': [1.0],
                                  'seeds_planned': [0], 'mi_bound_entropy_kind': 'gaussian_prior',
                                  'code_versions': ['abc']}}}}
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'summary.json').write_text(json.dumps(previous))
  summary = report.write([exp], root=root, results_dir=tmp_path / 'results',
                         docs_dir=tmp_path / 'docs')
  v = summary['gauss_mnist']['variants']
  assert list(v) == ['lambda_0', 'lambda_1']
  assert v['lambda_0']['metrics']['mi_bound']['mean'] == 0.502
  assert v['lambda_0']['metrics']['mi_objective_prior_entropy']['mean'] == 0.556
  assert 'mi_bound_training_q' not in v['lambda_0']['metrics']
  page = (tmp_path / 'docs' / 'results.md').read_text()
  assert '| mi_bound | 0.502 | 3.200 |' in page and '*Partly rerun*: lambda_0' in page
