"""The disentanglement suite's page and summary key, from synthetic run records."""

import json
from pathlib import Path

from vmivae_jax.experiments import report_disentanglement as page
from vmivae_jax.experiments import suite as suite_lib


def _record(exp, variant, seed, *, mig, fvae, train_seconds=100.0, resumed=False):
  return {**({'train_time_complete': False} if resumed else {}),'experiment': exp, 'variant': variant, 'seed': seed, 'step': 2000,
          'command': f'python train.py --config=c.py --workdir=/x/{exp}/{variant}/seed{seed} '
                     f'--config.seed={seed}',
          'eval_command': f'python eval.py --workdir=/x/{exp}/{variant}/seed{seed}',
          'train_seconds': train_seconds, 'eval_seconds': 10.0, 'code_version': 'abc123',
          'metrics': {'elbo': -30.0 - seed, 'disentanglement': {
              'mig': mig, 'factor_vae_eval_accuracy': fvae, 'sap': 0.01, 'seconds': {'mig': 1}}}}


def _experiments():
  make = lambda name, variants: suite_lib.Experiment(
      name=name, title=name.upper(), config_file='configs/dsprites_beta_vae.py', seeds=(0, 1, 2),
      variants=tuple((v, {}) for v in variants), purpose=f'{name} purpose')
  return [make('beta_vae', ('beta_1', 'beta_4')), make('factor_vae', ('tc_weight_40',)),
          make('beta_tcvae', ('tc_weight_6',))]


def _write(root: Path, exp, variant, seed, **kw):
  run = root / exp / variant / f'seed{seed}'
  (run / 'eval').mkdir(parents=True)
  (run / 'suite_record.json').write_text(json.dumps(_record(exp, variant, seed, **kw)))
  (run / 'eval' / page.FIGURE).write_bytes(b'png')


def test_page_tables_checks_and_time(tmp_path):
  root = tmp_path / 'runs'
  for seed, mig in enumerate((0.10, 0.12, 0.14)):
    _write(root, 'beta_vae', 'beta_1', seed, mig=mig, fvae=0.6)
  for seed, mig in enumerate((0.20, 0.22)):        # 2 of 3 seeds finished
    _write(root, 'factor_vae', 'tc_weight_40', seed, mig=mig, fvae=0.5)
  _write(root, 'beta_tcvae', 'tc_weight_6', 0, mig=0.3, fvae=0.7)
  section = page.write(_experiments(), root=root, results_dir=tmp_path / 'results',
                       docs_dir=tmp_path / 'docs')
  text = (tmp_path / 'docs' / 'results_disentanglement.md').read_text()
  # Mean ± sample std over the finished seeds; unfinished settings say so.
  assert '| beta_vae | beta_1 | 3 of 3 | 0.120 ± 0.020 | 0.600 ± 0.000 |' in text
  assert '| beta_vae | beta_4 | 0 of 3 | pending |' in text
  assert '| factor_vae | tc_weight_40 | 2 of 3 | 0.210 ± 0.014 |' in text
  # The ordering check: FactorVAE above the plain VAE on MIG, below on its own score.
  assert '| factor_vae | tc_weight_40 | MIG | 0.210 ± 0.014 | 0.120 ± 0.020 | yes (+0.090) |' in text
  assert ('| factor_vae | tc_weight_40 | FactorVAE score | 0.500 ± 0.000 | 0.600 ± 0.000 | '
          'no (-0.100) |') in text
  assert '| beta_tcvae | tc_weight_6 | MIG | 0.300 (n=1) |' in text
  # Training time: a row per finished setting (3 + 2 + 1 runs of 100 s), summed.
  assert '| factor_vae | tc_weight_40 | 0.06 | not recorded |' in text
  assert 'The 3 sweeps timed whole trained for **0.17 h** in all' in text
  assert 'resumed after an interruption' not in text
  # Relative commands, one figure per setting, the summary key written.
  assert '--workdir=$ROOT/beta_vae/beta_1/seed0' in text and '/x/' not in text
  assert '(figures/disentanglement/beta_vae/beta_1_traversal_all_dims_0.png)' in text
  summary = json.loads((tmp_path / 'results' / 'summary.json').read_text())
  assert summary['disentanglement'] == json.loads(json.dumps(section))
  mig = summary['disentanglement']['beta_vae']['variants']['beta_1']['metrics'][
      'disentanglement/mig']
  assert mig['per_seed'] == [0.10, 0.12, 0.14] and mig['seeds'] == [0, 1, 2]


def test_other_summary_keys_are_kept(tmp_path):
  results = tmp_path / 'results'
  results.mkdir()
  (results / 'summary.json').write_text(json.dumps({'class': {'x': {'title': 'kept'}}}))
  _write(tmp_path / 'runs', 'beta_vae', 'beta_1', 0, mig=0.1, fvae=0.5)
  page.write(_experiments(), root=tmp_path / 'runs', results_dir=results,
             docs_dir=tmp_path / 'docs')
  summary = json.loads((results / 'summary.json').read_text())
  assert summary['class'] == {'x': {'title': 'kept'}} and 'disentanglement' in summary


def test_published_values_beside_ours_with_the_reproduced_margin(tmp_path):
  root = tmp_path / 'runs'
  for seed, mig in enumerate((0.09, 0.10, 0.11)):     # MIG 0.10 ± 0.01: the published 0.10
    _write(root, 'beta_vae', 'beta_1', seed, mig=mig, fvae=0.40)   # FactorVAE 0.40 vs 0.63
  page.write(_experiments(), root=root, results_dir=tmp_path / 'results',
             docs_dir=tmp_path / 'docs')
  text = (tmp_path / 'docs' / 'results_disentanglement.md').read_text()
  row = next(line for line in text.splitlines()
             if line.startswith('| beta_vae, beta_1 | VAE | infogan_cr_literature |'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  titles = [t for _, t in page.PUBLISHED_SCORES]
  assert cells[3 + titles.index('MIG')] == '0.10 / 0.10'
  assert cells[3 + titles.index('FactorVAE score')] == '0.40 / 0.63 *'
  assert cells[3 + titles.index('SAP')] == '-'                       # not published there
  assert '| beta_tcvae, tc_weight_6 | beta-TCVAE (beta not stated) | ard_vae | pending / 0.20 |' \
      in text
  # Scored: the published values of beta_1 whose score our records have (FactorVAE and MIG
  # of InfoGAN-CR and ARD-VAE, SAP of TC-GAN); within the 0.05 margin: MIG 0.10 and 0.06.
  assert '**2 of 5** values with a finished run' in text


def test_a_partly_rerun_method_keeps_its_recorded_settings(tmp_path):
  """A session that reruns only beta = 4 keeps beta = 1's recorded numbers (and figure)."""
  results, docs = tmp_path / 'results', tmp_path / 'docs'
  for seed in range(3):
    _write(tmp_path / 'first', 'beta_vae', 'beta_1', seed, mig=0.1, fvae=0.5)
  page.write(_experiments(), root=tmp_path / 'first', results_dir=results, docs_dir=docs)
  _write(tmp_path / 'second', 'beta_vae', 'beta_4', 0, mig=0.3, fvae=0.7)
  section = page.write(_experiments(), root=tmp_path / 'second', results_dir=results,
                       docs_dir=docs)
  variants = section['beta_vae']['variants']
  assert list(variants) == ['beta_1', 'beta_4']
  assert variants['beta_1']['carried_over'] and 'carried_over' not in variants['beta_4']
  text = (docs / 'results_disentanglement.md').read_text()
  assert '| beta_vae | beta_1 | 3 of 3 | 0.100 ± 0.000 |' in text
  assert '| beta_vae | beta_4 | 1 of 3 | 0.300 (n=1) |' in text
  assert '(figures/disentanglement/beta_vae/beta_1_traversal_all_dims_0.png)' in text


def test_resumed_runs_are_left_out_of_the_training_time_and_counted_apart(tmp_path):
  root = tmp_path / 'runs'
  _write(root, 'beta_vae', 'beta_1', 0, mig=0.1, fvae=0.6, train_seconds=3600.0)
  _write(root, 'beta_vae', 'beta_1', 1, mig=0.1, fvae=0.6, train_seconds=0.5, resumed=True)
  section = page.write(_experiments(), root=root, results_dir=tmp_path / 'results',
                       docs_dir=tmp_path / 'docs')
  assert page.train_time(section) == (3600.0, 1, 1)
  text = (tmp_path / 'docs' / 'results_disentanglement.md').read_text()
  assert '| beta_vae | beta_1 | not timed whole (resumed) |' in text
  assert '1 finished runs were resumed after an interruption' in text
  # Sections written before the field existed count every run as timed whole.
  old = {'e': {'variants': {'v': {'train_seconds': [1.0, 2.0]}}}}
  assert page.train_time(old) == (3.0, 2, 0)


def test_wall_time_is_the_union_of_the_training_intervals():
  section = {'a': {'variants': {
      'x': {'train_intervals': [[0.0, 100.0]] * 5, 'train_seconds': [20.0] * 5},  # a sweep
      'y': {'train_intervals': [[50.0, 150.0], [400.0, 460.0]],
            'train_seconds': [100.0, 60.0]}}},
             'b': {'variants': {'z': {'train_seconds': [9.0]}}}}   # an older record
  assert page.train_wall_time(section) == (210.0, 7, 260.0)
  assert page.train_wall_time({}) == (0.0, 0, 0)


def test_sweep_times_sum_a_setting_and_leave_out_resumed_ones():
  section = {'beta_vae': {'variants': {
      'beta_1': {'train_seconds': [360.0] * 5, 'hardware': ['2 CPU cores'] * 5},
      'beta_4': {'train_seconds': [0.5, 720.0], 'train_time_complete': [False, True]}}},
             'dip_vae_i': {'variants': {'x': {'train_seconds': [1800.0] * 2}}}}
  assert page.sweep_times(section) == [
      ('beta_vae', 'beta_1', 1800.0, ['2 CPU cores']), ('beta_vae', 'beta_4', None, []),
      ('dip_vae_i', 'x', 3600.0, [])]
  text = '\n'.join(page.train_time_table(section, suite_lib.disentanglement_suite()))
  assert '| beta_vae | beta_1 | 0.50 | 2 CPU cores |' in text
  assert '| beta_vae | beta_4 | not timed whole (resumed) | not recorded |' in text
  assert 'The 2 sweeps timed whole trained for **1.50 h**' in text
  assert 'about half the sum: **0.75 h**' in text


def test_the_page_gives_the_wall_time_when_records_hold_intervals(tmp_path):
  root = tmp_path / 'runs'
  _write(root, 'beta_vae', 'beta_1', 0, mig=0.1, fvae=0.6)
  record_path = root / 'beta_vae' / 'beta_1' / 'seed0' / 'suite_record.json'
  record = json.loads(record_path.read_text())
  record['train_interval'] = [1000.0, 1000.0 + 1800.0]
  record_path.write_text(json.dumps(record))
  page.write(_experiments(), root=root, results_dir=tmp_path / 'results',
             docs_dir=tmp_path / 'docs')
  text = (tmp_path / 'docs' / 'results_disentanglement.md').read_text()
  assert 'for the 1 runs whose records hold their training interval' in text
  assert '**0.50 h** of wall-clock' in text
  assert 'half their summed training: 0.01 h' in text   # train_seconds 100
