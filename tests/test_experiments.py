"""The reproduction suite: commands, config overrides and the aggregated results files."""

import json
import os
import shlex

import pytest

from vmivae_jax.experiments import report
from vmivae_jax.experiments import reproduce
from vmivae_jax.experiments import suite_runs
from vmivae_jax.experiments import suite as suite_lib
from vmivae_jax.experiments import summary_io
from vmivae_jax.util import cpu_affinity


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
  config = suite_runs.load_config('configs/mnist_joint.py',
                                 {'seed': 3, 'mi_weight': 0.0, 'model.q_hidden': [16]})
  assert (config.seed, config.mi_weight, tuple(config.model.q_hidden)) == (3, 0.0, (16,))
  with pytest.raises(AttributeError):
    config.not_a_key = 1


def test_thesis_suite_pairs_every_seed_and_uses_real_configs():
  for exp in suite_lib.thesis_suite():
    assert (suite_runs.REPO_ROOT / exp.config_file).exists()
    for variant, _ in exp.variants:
      suite_runs.load_config(exp.config_file, {'seed': 0, **exp.variant_overrides(variant)})
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
                              'command': f'{summary_io.REPO_ROOT}/x'}))
  summary = report.write([_experiment()], root=root, results_dir=tmp_path / 'results',
                         docs_dir=tmp_path / 'docs')
  assert summary['joint_mnist']['failed']['elbo'][0]['command'] == 'x'
  page = (tmp_path / 'docs' / 'results.md').read_text()
  assert '**elbo, seed 1 diverged**: loss became non-finite at step 7' in page


# ----------------------------------------------------------------------------------
# The `class` suite: its experiments, its own page, adoption of runs.


def test_class_suite_experiments_as_specified():
  exps = {e.name: e for e in suite_lib.SUITES['class']()}
  assert list(exps) == ['thesis_budget', 'authors_budget', 'class_mnist', 'class_mnist_imsat',
                        'class_mnist_warmup', 'class_mnist_warmup_long',
                        'ablation_class_mnist_imsat', 'class_fashion', 'class_fashion_neighbours',
                        'ablation_class_mnist']
  budget = exps['thesis_budget']
  assert budget.config_file == 'configs/mnist_joint.py' and budget.seeds == (0, 1, 2)
  assert dict(budget.variants) == {'elbo': {'mi_weight': 0.0}, 'mi': {'mi_weight': 10.0}}
  assert budget.curve
  authors = exps['authors_budget']
  assert authors.config_file == 'configs/authors_mnist_joint.py' and authors.curve
  assert dict(authors.variants) == {'elbo': {'mi_weight': 0.0}, 'mi': {'mi_weight': 0.01}}
  authors_config = suite_runs.load_config(authors.config_file, authors.variant_overrides('mi'))
  assert authors_config.num_train_steps == 150_000 and authors_config.batch_size == 124
  assert authors_config.mi_weight == 0.01   # the config's own (the authors') MI weight
  assert authors_config.num_train_steps // authors_config.checkpoint_every_steps <= (
      authors_config.keep_checkpoints)   # every checkpoint of the curve is kept
  for name, config in (('class_mnist', 'configs/mnist_class.py'),
                       ('class_mnist_imsat', 'configs/mnist_class_imsat.py'),
                       ('class_fashion', 'configs/fashion_class.py')):
    assert exps[name].config_file == config and exps[name].seeds == (0, 1, 2, 3, 4)
    assert dict(exps[name].variants) == {'mi': {}, 'elbo': {'mi_weight': 0.0}}
  warmup = exps['class_mnist_warmup']
  assert warmup.config_file == 'configs/mnist_class_warmup.py'
  assert warmup.seeds == (5, 6, 7, 8, 9)   # fresh: seeds 0-4 judged class_mnist_imsat
  assert dict(warmup.variants) == {'mi': {}, 'elbo': {'mi_weight': 0.0}}
  longer = exps['class_mnist_warmup_long']
  assert longer.config_file == 'configs/mnist_class_warmup_long.py'
  assert longer.seeds == (10, 11, 12, 13, 14)   # fresh: seeds 5-9 judged class_mnist_warmup
  assert dict(longer.variants) == {'mi': {}, 'elbo': {'mi_weight': 0.0}}
  neighbours = exps['class_fashion_neighbours']
  assert neighbours.config_file == 'configs/fashion_class_neighbours.py'
  assert neighbours.seeds == (10, 11, 12, 13, 14)   # fresh: tuning used seed 100
  neighbours_config = suite_runs.load_config(neighbours.config_file, neighbours.overrides)
  assert neighbours_config.invariance.neighbour_weight == 10.0
  assert neighbours_config.num_train_steps == 2340   # the config's own 10 epochs
  ablation = exps['ablation_class_mnist']
  assert ablation.seeds == (0, 1, 2) and dict(ablation.variants) == {
      'recipe': {}, 'no_consistency': {'invariance.consistency_weight': 0.0},
      'no_vat': {'invariance.vat_weight': 0.0},
      'no_thickness': {'invariance.augment.dilate_prob': 0.0},
      'no_invariance': {'invariance.consistency_weight': 0.0, 'invariance.vat_weight': 0.0},
      'elbo_twin': {'mi_weight': 0.0}}
  mechanisms = exps['ablation_class_mnist_imsat']
  assert mechanisms.config_file == 'configs/mnist_class_imsat.py'
  assert mechanisms.seeds == (0, 1, 2) and dict(mechanisms.variants) == {
      'generative_gradient': {'code_training.generative_gradient': 1.0},
      'no_information': {'code_training.marginal_entropy_weight': 0.0,
                         'code_training.conditional_entropy_weight': 0.0},
      'per_example_kl': {'code_training.aggregate_kl': False}}
  assert suite_lib.CLASS_TARGETS == {'class_mnist': 0.95, 'class_mnist_imsat': 0.95,
                                     'class_mnist_warmup': 0.95,
                                     'class_mnist_warmup_long': 0.95, 'class_fashion': 0.65,
                                     'class_fashion_neighbours': 0.65}


def test_disentanglement_suite_experiments_as_specified():
  """Every method x two values of its main hyper-parameter x seeds 0-4, on the dSprites
  configs, with the suite's budget; the baselines train no Q; every config validates."""
  from vmivae_jax.config import validation
  exps = {e.name: e for e in suite_lib.SUITES['disentanglement']()}
  assert list(exps) == ['beta_vae', 'beta_tcvae', 'factor_vae', 'dip_vae_i', 'dip_vae_ii',
                        'vmi_dims01', 'vmi_all_dims']
  methods = {'beta_vae': 'none', 'beta_tcvae': 'beta_tcvae', 'factor_vae': 'factor_vae',
             'dip_vae_i': 'dip_vae_i', 'dip_vae_ii': 'dip_vae_ii', 'vmi_dims01': 'none',
             'vmi_all_dims': 'none'}
  grid = {}
  for name, exp in exps.items():
    assert exp.seeds == (0, 1, 2, 3, 4) and len(exp.variants) == 2
    for variant, _ in exp.variants:
      config = suite_runs.load_config(exp.config_file, {'seed': 0,
                                                       **exp.variant_overrides(variant)})
      validation.validate(config, check_paths=False)
      assert config.dataset == 'dsprites' and config.model.family == 'dlib_conv'
      assert config.num_train_steps == 2000 and config.batch_size == 64
      assert config.disentangle.method == methods[name]
      vmi = name.startswith('vmi')
      assert (config.mi_weight > 0) == vmi
      assert config.mi.gaussian_indices == {'vmi_dims01': (0, 1),
                                            'vmi_all_dims': tuple(range(10))}.get(name, ())
      grid[name, variant] = (config.beta, config.disentangle.tc_weight,
                             config.disentangle.dip_lambda_od, config.mi_weight)
  assert grid['beta_vae', 'beta_1'][0] == 1.0 and grid['beta_vae', 'beta_4'][0] == 4.0
  assert grid['factor_vae', 'tc_weight_40'][1] == 40.0
  assert grid['dip_vae_ii', 'dip_lambda_od_10'][2] == 10.0
  assert grid['vmi_all_dims', 'mi_weight_10'][3] == 10.0
  # beta = 1 is the VMI runs' lambda = 0 twin: the same model and training otherwise.
  twin = suite_runs.load_config(exps['beta_vae'].config_file,
                               {'seed': 0, **exps['beta_vae'].variant_overrides('beta_1')})
  vmi = suite_runs.load_config(exps['vmi_dims01'].config_file,
                              {'seed': 0, **exps['vmi_dims01'].variant_overrides('mi_weight_1')})
  from vmivae_jax.rundir import extend
  assert sorted(extend.differing_keys(twin.to_dict(), vmi.to_dict())) == [
      'mi.gaussian_indices', 'mi_weight']


def test_thesis_budget_config_is_the_in_progress_runs_command_up_to_eval():
  """The runs in /work/runs/thesis_budget were trained with these exact flags."""
  from vmivae_jax.rundir import extend
  from vmivae_jax.rundir import workdir as workdir_lib
  budget = suite_lib.SUITES['class']()[0]
  for variant, weight in (('elbo', 0.0), ('mi', 10.0)):
    for seed in budget.seeds:
      suite_config = suite_runs.load_config(
          budget.config_file, {'seed': seed, **budget.variant_overrides(variant)})
      trained = suite_runs.load_config('configs/mnist_joint.py', {
          'seed': seed, 'mi_weight': weight, 'num_train_steps': 72800,
          'checkpoint_every_steps': 5600, 'keep_checkpoints': 13, 'temperature.initial': 1.0,
          'temperature.anneal_rate': 0.0})
      diff = extend.differing_keys(json.loads(workdir_lib.config_to_json(trained)),
                                   json.loads(workdir_lib.config_to_json(suite_config)))
      assert diff and all(k.startswith('eval.') for k in diff), diff


def _class_experiment(curve=False):
  return suite_lib.Experiment(
      name='class_mnist', title='Class', config_file='configs/mnist_joint.py', curve=curve,
      variants=(('mi', {}), ('elbo', {'mi_weight': 0.0})), seeds=(0, 1, 2), purpose='test')


def _write_class_record(root, exp, variant, seed, accuracy, *, partial_step=None, curve=None,
                        hardware=None):
  path = root / exp / variant / f'seed{seed}' / 'suite_record.json'
  path.parent.mkdir(parents=True)
  record = {'seed': seed, 'step': partial_step or 100, 'num_train_steps': 100,
            'command': f'cmd {variant} {seed}', 'eval_command': f'eval {variant} {seed}',
            'train_seconds': 1.0, 'eval_seconds': 2.0, 'code_version': 'abc',
            'metrics': {'accuracy_hungarian': accuracy, 'accuracy_majority_train': accuracy + 0.01,
                        'nmi': 0.5, 'elbo': -100.0 - seed}}
  if partial_step:
    record['partial'] = True
  if curve:
    record['curve'] = curve
  if hardware:
    record['hardware'] = hardware
  path.write_text(json.dumps(record))


def test_pages_say_where_runs_trained_when_the_records_say_it(tmp_path):
  from vmivae_jax.experiments import report_class
  root, results, docs = tmp_path / 'runs', tmp_path / 'results', tmp_path / 'docs'
  _write_class_record(root, 'class_mnist', 'mi', 0, 0.9, hardware='1 x NVIDIA H200')
  _write_class_record(root, 'class_mnist', 'elbo', 0, 0.5)  # an older record: no field
  section = report_class.write('class', [_class_experiment()], root=root, results_dir=results,
                               docs_dir=docs)
  assert section['class_mnist']['variants']['mi']['hardware'] == ['1 x NVIDIA H200']
  assert section['class_mnist']['variants']['elbo']['hardware'] == []
  page = (docs / 'results_class.md').read_text()
  assert 'Code version (commit): abc. Trained on: 1 x NVIDIA H200.' in page
  assert summary_io.provenance({'variants': {'a': {'code_versions': ['x']}}}) == (
      'Code version (commit): x.')


def test_a_stopped_run_without_checkpoints_is_recorded_partial_from_its_curve(tmp_path):
  from vmivae_jax.experiments import report_class
  root, results, docs = tmp_path / 'runs', tmp_path / 'results', tmp_path / 'docs'
  exp = _class_experiment(curve=True)
  workdir = suite_runs.run_dir(root, exp.name, 'mi', 0)
  with pytest.raises(ValueError, match='no eval/curve.json'):
    suite_runs.record_stopped(exp, 'mi', 0, root, code_version='abc', hardware='1 x GPU')
  points = [{'step': s, 'examples_seen': 256 * s, 'accuracy_hungarian': a,
             'accuracy_majority': a, 'nmi': 0.5, 'accuracy_majority_train': a + 0.01}
            for s, a in ((100, 0.4), (0, 0.1), (200, 0.5))]   # any order on disk
  (workdir / 'eval').mkdir(parents=True)
  (workdir / 'eval' / 'curve.json').write_text(json.dumps({'points': points}))
  with pytest.raises(ValueError, match='--trained_with'):
    suite_runs.record_stopped(exp, 'mi', 0, root, code_version='', hardware='1 x GPU')
  record = suite_runs.record_stopped(exp, 'mi', 0, root, code_version='abc', hardware='1 x GPU')
  assert record['partial'] and record['step'] == 200 and record['metrics']['nmi'] == 0.5
  assert record['metrics']['accuracy_hungarian'] == 0.5 and 'elbo' not in record['metrics']
  assert [p['step'] for p in record['curve']] == [0, 100, 200]
  assert 'stopped at step 200 of' in record['stopped']
  with pytest.raises(ValueError, match='already recorded'):
    suite_runs.record_stopped(exp, 'mi', 0, root, code_version='abc', hardware='1 x GPU')
  report_class.write('class', [exp], root=root, results_dir=results, docs_dir=docs)
  page = (docs / 'results_class.md').read_text()
  assert '| mi | 0 | 200 of ' in page and '| 50.00% | 51.00% | 0.500 | n/a |' in page
  assert 'mi, seed 0: stopped at step 200 of' in page and 'Trained on: 1 x GPU.' in page
  assert '| 0.05 | 200 | 50.0 (n=1) | 51.0 (n=1) |' in page   # the curve table


def test_hardware_names_the_cpu_cores_not_the_forced_host_devices():
  model = suite_runs.cpu_model()
  cores = suite_runs._cpu_cores(len(cpu_affinity.available_cpus()), os.cpu_count())
  assert suite_runs.hardware() == cores + (f' ({model})' if model else '')
  if os.path.exists('/proc/cpuinfo'):
    assert model and model in open('/proc/cpuinfo', encoding='utf-8').read()


def test_class_report_own_page_partial_runs_targets_and_keeps_other_keys(tmp_path):
  from vmivae_jax.experiments import report_class
  root, results, docs = tmp_path / 'runs', tmp_path / 'results', tmp_path / 'docs'
  results.mkdir()
  thesis = {'joint_mnist': {'title': 'kept', 'variants': {}}}
  (results / 'summary.json').write_text(json.dumps(thesis))
  (docs).mkdir()
  (docs / 'results.md').write_text('the thesis page')
  for seed, acc in ((0, 0.90), (1, 0.92)):
    _write_class_record(root, 'class_mnist', 'mi', seed, acc)
  _write_class_record(root, 'class_mnist', 'mi', 2, 0.99, partial_step=40)
  _write_class_record(root, 'class_mnist', 'elbo', 0, 0.5)
  section = report_class.write('class', [_class_experiment()], root=root, results_dir=results,
                               docs_dir=docs)
  saved = json.loads((results / 'summary.json').read_text())
  assert saved['joint_mnist'] == thesis['joint_mnist']           # the thesis keys are kept
  assert (docs / 'results.md').read_text() == 'the thesis page'  # and its page
  mi = saved['class']['class_mnist']['variants']['mi']
  assert mi['metrics']['accuracy_hungarian']['per_seed'] == [0.90, 0.92]  # partial excluded
  assert mi['metrics']['accuracy_hungarian']['mean'] == pytest.approx(0.91)
  assert mi['partial'][0]['seed'] == 2 and mi['partial'][0]['step'] == 40
  assert section == saved['class']
  page = (docs / 'results_class.md').read_text()
  assert ('| class_mnist | mi | >= 95%, no seed below 90% | 91.00 ± 1.41 (n=2) (2 of 3 seeds), '
          'lowest seed 90.0% | mean missed by 4.00 points |') in page
  assert '| mi | 2 | 40 of 100 | 99.00% |' in page
  assert 'class_fashion | mi | >= 65% | not run' in page
  assert 'cmd mi 2' in page and 'Runs finished: 3 of 6 planned; partial: 1.' in page
  # A later report from another root keeps this experiment's recorded numbers.
  report_class.write('class', [_class_experiment()], root=tmp_path / 'empty',
                     results_dir=results, docs_dir=docs)
  again = json.loads((results / 'summary.json').read_text())
  assert again['class']['class_mnist'] == saved['class']['class_mnist']
  assert again['joint_mnist'] == thesis['joint_mnist']


def test_class_report_seed_floor_per_seed_line_order_and_dirty_note(tmp_path):
  from vmivae_jax.experiments import report_class
  root, results, docs = tmp_path / 'runs', tmp_path / 'results', tmp_path / 'docs'
  for seed, acc in ((0, 0.97), (1, 0.98), (2, 0.93)):     # mean 96%: above 95% ...
    _write_class_record(root, 'class_mnist', 'mi', seed, acc)
  for seed, acc in ((0, 0.96), (1, 0.97), (2, 0.89)):     # ... and 94%, one seed below 90%
    _write_class_record(root, 'class_mnist', 'elbo', seed, acc)
  record = root / 'class_mnist' / 'elbo' / 'seed2' / 'suite_record.json'
  record.write_text(record.read_text().replace('"abc"', '"abc+dirty"'))
  report_class.write('class', [_class_experiment()], root=root, results_dir=results,
                     docs_dir=docs)
  page = (docs / 'results_class.md').read_text()
  assert '| class_mnist | mi | >= 95%, no seed below 90% | 96.00 ± 2.65 (n=3), lowest seed ' \
         '93.0% | met |' in page
  assert 'lowest seed 89.0% | mean missed by 1.00 points; a seed below 90% |' in page
  assert ('`mi`: test accuracy per seed (seeds 0, 1, 2) 97.0 / 98.0 / 93.0%; training 0.1 min '
          'summed over these runs.') in page
  assert '**Code versions marked `+dirty`.** Runs of `class_mnist` were made' in page
  # Regenerated from another root, the recorded experiment keeps the suite's variant order
  # (mi, then elbo) although summary.json sorts its keys.
  report_class.write('class', [_class_experiment()], root=tmp_path / 'empty',
                     results_dir=results, docs_dir=docs)
  again = (docs / 'results_class.md').read_text()
  assert '| metric (finished runs) | mi | elbo |' in again
  assert again.index('`mi`: test accuracy') < again.index('`elbo`: test accuracy')
  clean = tmp_path / 'clean'
  _write_class_record(clean, 'class_mnist', 'mi', 0, 0.9)
  report_class.write('class', [_class_experiment()], root=clean, results_dir=tmp_path / 'r2',
                     docs_dir=tmp_path / 'd2')
  assert 'Code versions marked' not in (tmp_path / 'd2' / 'results_class.md').read_text()


def test_class_report_curve_table(tmp_path):
  from vmivae_jax.experiments import report_class
  root = tmp_path / 'runs'
  point = lambda step, acc: {'step': step, 'examples_seen': step * 256, 'accuracy_hungarian': acc,
                             'accuracy_majority': acc, 'nmi': 0.1,
                             'accuracy_majority_train': acc + 0.1}
  _write_class_record(root, 'class_mnist', 'mi', 0, 0.8,
                      curve=[point(0, 0.1), point(5600, 0.5), point(11200, 0.8)])
  _write_class_record(root, 'class_mnist', 'mi', 1, 0.6, partial_step=5600,
                      curve=[point(0, 0.2), point(5600, 0.7)])
  section = report_class.write('class', [_class_experiment(curve=True)], root=root,
                               results_dir=tmp_path / 'results', docs_dir=tmp_path / 'docs')
  curve = section['class_mnist']['variants']['mi']['curve']
  assert [p['step'] for p in curve] == [0, 5600, 11200]
  assert curve[1]['accuracy_hungarian']['per_seed'] == [0.5, 0.7]
  assert curve[2]['seeds'] == [0]
  page = (tmp_path / 'docs' / 'results_class.md').read_text()
  assert '| 1.43 | 5600 | 60.0 ± 14.1 (n=2) | 70.0 ± 14.1 (n=2) |' in page
  assert '| 2.87 | 11200 | 80.0 (n=1) | 90.0 (n=1) |' in page


def test_thesis_report_keeps_experiments_not_rerun_and_other_suites(tmp_path):
  root, results, docs = tmp_path / 'runs', tmp_path / 'results', tmp_path / 'docs'
  _write_record(root, 'mi', 0, 0.5)
  results.mkdir()
  previous = {'joint_fashion': {'title': 'Fashion, from another machine', 'purpose': 'p',
                                'config_file': 'c', 'failed': {},
                                'variants': {'mi': {'metrics': {'accuracy_hungarian': {
                                    'per_seed': [0.6], 'seeds': [0], 'mean': 0.6, 'std': 0.0}},
                                    'commands': ['x'], 'eval_commands': ['y'],
                                    'train_seconds': [1.0], 'eval_seconds': [1.0],
                                    'code_versions': ['old']}}},
              'class': {'class_mnist': {'title': 'c'}}}
  (results / 'summary.json').write_text(json.dumps(previous))
  fashion = suite_lib.Experiment(name='joint_fashion', title='Fashion', config_file='c',
                                 variants=(('mi', {}),), seeds=(0,), purpose='p')
  summary = report.write([_experiment(), fashion], root=root, results_dir=results,
                         docs_dir=docs)
  saved = json.loads((results / 'summary.json').read_text())
  kept = dict(saved['joint_fashion'])
  assert kept.pop('carried_over') is True      # marked on the page as not rerun here
  assert kept == previous['joint_fashion']
  assert saved['class'] == previous['class']
  assert saved['joint_mnist']['variants']['mi']['metrics']['accuracy_hungarian']['per_seed'] == [0.5]
  assert summary == saved
  page = (docs / 'results.md').read_text()
  assert '## Fashion, from another machine' in page and '## Joint' in page
  assert page.index('## Joint') < page.index('## Fashion, from another machine')


# --- Adoption of runs trained elsewhere, end to end on a smoke run (real data).


import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

_DATA_DIR = Path(os.environ.get('VMIVAE_DATA_DIR') or suite_runs.REPO_ROOT.parent / 'shared' /
                 'datasets')
_SMOKE = {'train_limit': 512, 'test_limit': 200, 'batch_size': 64, 'num_train_steps': 30,
          'steps_per_chunk': 5, 'checkpoint_every_steps': 10, 'keep_checkpoints': 5,
          'model.encoder_hidden': (32,), 'model.decoder_hidden': (32,), 'model.q_hidden': (32,),
          'eval.batch_size': 100, 'eval.q_batch_size': 50, 'eval.num_figure_examples': 4,
          'data_dir': str(_DATA_DIR)}


def _smoke_budget():
  return suite_lib.Experiment(
      name='thesis_budget', title='Budget', config_file='configs/mnist_joint.py', seeds=(0, 1),
      curve=True, variants=(('mi', {'mi_weight': 10.0}),),
      overrides={**_SMOKE, 'eval.iwae_samples': 2, 'eval.iwae_chunk': 2,
                 'eval.q_train_steps': 5}, purpose='test')


@pytest.mark.skipif(not (_DATA_DIR / 'mnist').is_dir(), reason='real datasets not found')
def test_adopted_runs_are_evaluated_never_trained_and_partial_ones_say_so(tmp_path):
  from vmivae_jax.train import trainer
  from vmivae_jax.experiments import report_class
  exp = _smoke_budget()
  # The "external" runs: trained with the suite's config but other eval settings.
  trained_config = suite_runs.load_config(exp.config_file, {
      'seed': 0, 'mi_weight': 10.0, **_SMOKE})
  full = tmp_path / 'elsewhere' / 'mi_s0'
  trainer.train(trained_config, full, num_devices=1)
  partial = tmp_path / 'elsewhere' / 'mi_s1'
  shutil.copytree(full, partial)   # seed 1 "still training": checkpoints up to step 20
  shutil.rmtree(partial / 'checkpoints' / '30')
  config_json = json.loads((partial / 'config.json').read_text())
  config_json['seed'] = 1
  (partial / 'config.json').write_text(json.dumps(config_json))
  before = {p: sorted(str(f.relative_to(p)) for f in p.rglob('*')) for p in (full, partial)}

  root = tmp_path / 'suite'
  pattern = str(tmp_path / 'elsewhere' / '{variant}_s{seed}')
  keys = reproduce.adopt_all({exp.name: exp}, ['thesis_budget:mi:0', 'thesis_budget:mi:1',
                                               'thesis_budget:mi:2'], root, pattern)
  assert keys == ['thesis_budget:mi:0', 'thesis_budget:mi:1']
  seed0 = root / 'thesis_budget' / 'mi' / 'seed0'
  assert (seed0 / 'checkpoints').is_symlink() and not seed0.is_symlink()
  records = [suite_runs.run_one(exp, 'mi', s, root) for s in (0, 1)]
  assert records[0]['step'] == 30 and not records[0]['partial']
  assert records[1]['step'] == 20 and records[1]['partial'] is True
  assert records[0]['adopted_from'] == str(full)
  assert [p['step'] for p in records[0]['curve']] == [0, 10, 20, 30]
  assert 'accuracy_majority_train' in records[0]['metrics']
  # Nothing was written in the sources.
  assert before == {p: sorted(str(f.relative_to(p)) for f in p.rglob('*'))
                    for p in (full, partial)}
  assert (seed0 / 'eval' / 'metrics.json').exists() and not (full / 'eval').exists()
  # Reused while nothing changes.
  assert suite_runs.run_one(exp, 'mi', 1, root) == records[1]

  section = report_class.write('class', [exp], root=root, results_dir=tmp_path / 'results',
                               docs_dir=tmp_path / 'docs')
  mi = section['thesis_budget']['variants']['mi']
  assert mi['metrics']['accuracy_hungarian']['seeds'] == [0]
  assert [p['seed'] for p in mi['partial']] == [1]
  page = (tmp_path / 'docs' / 'results_class.md').read_text()
  assert '| mi | 1 | 20 of 30 |' in page and 'category_grid' in page

  # A config that differs outside eval.* is refused.
  config_json['mi_weight'] = 0.0
  (partial / 'config.json').write_text(json.dumps(config_json))
  with pytest.raises(suite_runs.AdoptError, match='differs in: mi_weight'):
    suite_runs.adopt_run(partial, tmp_path / 'other', suite_runs.load_config(
        exp.config_file, {'seed': 1, **exp.variant_overrides('mi')}))


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


def test_class_report_label_free_pick_is_lowest_final_loss_not_best_accuracy(tmp_path):
  from vmivae_jax.experiments import report_class
  root = tmp_path / 'runs'
  # seed 0: most accurate, final loss 5; seed 1: lowest final loss (3) although its
  # first logs were the highest; seed 2: lowest loss early only (1, then 9).
  logs = {0: [5.0] * 12, 1: [50.0] * 5 + [3.0] * 10, 2: [1.0] * 5 + [9.0] * 10}
  for seed, acc in ((0, 0.95), (1, 0.80), (2, 0.85)):
    _write_class_record(root, 'class_mnist', 'mi', seed, acc)
    (root / 'class_mnist' / 'mi' / f'seed{seed}' / 'metrics.jsonl').write_text(
        ''.join(json.dumps({'step': i, 'loss': v}) + '\n' for i, v in enumerate(logs[seed])))
  _write_class_record(root, 'class_mnist', 'elbo', 0, 0.5)   # one seed: no pick
  section = report_class.write('class', [_class_experiment()], root=root,
                               results_dir=tmp_path / 'results', docs_dir=tmp_path / 'docs')
  choice = section['class_mnist']['variants']['mi']['label_free_choice']
  assert choice['seed'] == 1 and choice['value'] == pytest.approx(3.0)
  assert choice['candidates'] == {'0': 5.0, '1': 3.0, '2': 9.0}
  assert choice['metrics']['accuracy_hungarian'] == 0.80
  assert 'label_free_choice' not in section['class_mnist']['variants']['elbo']
  page = (tmp_path / 'docs' / 'results_class.md').read_text()
  assert '| label-free pick (mi): seed 1, test hungarian (%) | 80.00 |  |' in page
  # The mean over seeds stays the result.
  assert section['class_mnist']['variants']['mi']['metrics']['accuracy_hungarian'][
      'mean'] == pytest.approx((0.95 + 0.80 + 0.85) / 3)


def test_commands_name_run_directories_under_the_root_variable(tmp_path):
  """summary.json and the pages write a run's --workdir as $ROOT/<experiment>/<variant>/seed<N>
  (the reader sets ROOT); an older summary.json with absolute paths reads the same."""
  absolute = 'python eval.py --workdir=/work/runs/class/class_mnist/mi/seed3 --step=7020'
  assert summary_io.relative(absolute) == (
      'python eval.py --workdir=$ROOT/class_mnist/mi/seed3 --step=7020')
  assert summary_io.relative(summary_io.relative(absolute)) == summary_io.relative(absolute)
  elsewhere = f'python train.py --workdir={summary_io.REPO_ROOT}/runs/budget/mi_s0 --config.seed=0'
  assert summary_io.relative(elsewhere, 'thesis_budget/mi/seed0') == (
      'python train.py --workdir=$ROOT/thesis_budget/mi/seed0 --config.seed=0')
  assert summary_io.relative('python train.py --workdir=runs/x') == 'python train.py --workdir=runs/x'
  old = {'joint_mnist': {'variants': {'mi': {'commands': [absolute], 'eval_commands': [absolute]}},
                         'failed': {'mi': [{'seed': 3, 'failure': 'f', 'command': absolute}]}},
         'class': {'class_mnist': {'variants': {'mi': {'commands': [absolute],
                                                       'eval_commands': [absolute]}}}}}
  (tmp_path / 'summary.json').write_text(json.dumps(old))
  text = json.dumps(summary_io.read_previous(tmp_path))
  assert '/work/' not in text and text.count('$ROOT/class_mnist/mi/seed3') == 5
