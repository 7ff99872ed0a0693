"""The benchmark script runs end to end (``--tiny``) and writes the documented fields.

No timing is asserted: the CI machine is shared and small. The full benchmark is
``python benchmarks/bench.py`` (see benchmarks/README.md).
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'benchmarks' / 'bench.py'


@pytest.fixture(scope='module')
def tiny_results(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'tiny'
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)   # the workers choose their own device counts
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), '--tiny', '--out', str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(out.with_suffix('.json').read_text()), out.with_suffix('.md').read_text()


def test_json_has_step_measurements(tiny_results):
  results, _ = tiny_results
  assert results['meta']['tiny'] is True
  jax_workers = [w for w in results['workers'] if w['worker'] == 'jax']
  assert [w['devices'] for w in jax_workers] == [1]
  for w in jax_workers:
    assert not w.get('error'), w
    assert {'matmul_gflops', 'peak_rss_mib', 'configs', 'load_before'} <= set(w)
    assert {c['kind'] for c in w['configs']} == {'elbo', 'mi'}
    for c in w['configs']:
      for field in ('examples_per_s', 'step_ms', 'compile_s', 'flops_per_example', 'gflops',
                    'matmul_fraction', 'peak_rss_mib_cumulative', 'xla_memory_bytes',
                    'step_ms_rounds'):
        assert field in c, field
      assert c['examples_per_s'] > 0 and c['flops_per_example'] > 0
      assert c['finite']
  dispatch = next(w['dispatch'] for w in jax_workers if w.get('dispatch'))
  assert dispatch['python_loop_step_ms'] > 0 and dispatch['scan_chunk_step_ms'] > 0


def test_json_has_summary_targets_and_eval(tiny_results):
  results, markdown = tiny_results
  summary = results['summary']
  row = next(r for r in summary['table'] if r['kind'] == 'mi')
  for field in ('jax_1dev_ex_s', 'jax_over_torch', 'gflops', 'matmul_fraction',
                'compile_s_1dev', 'peak_rss_mib_1dev'):
    assert field in row
  assert summary['mi_over_elbo'][0]['mi_step_cost_ratio'] > 0
  assert summary['targets'] and all('met' in t for t in summary['targets'])
  evaluation = next(w for w in results['workers'] if w['worker'] == 'eval')
  assert not evaluation.get('error'), evaluation
  assert evaluation['iwae']['seconds_for_10000'] > 0
  assert evaluation['fresh_q']['train_step_ms'] > 0
  assert '## Train step' in markdown and '## Targets' in markdown


def test_torch_section_runs_when_torch_is_installed(tiny_results):
  pytest.importorskip('torch')
  results, _ = tiny_results
  torch_workers = [w for w in results['workers'] if w['worker'] == 'torch']
  assert torch_workers and not any(w.get('error') for w in torch_workers)
  row = next(r for r in results['summary']['table'] if r['kind'] == 'mi')
  assert row['torch_best_ex_s'] > 0 and row['jax_over_torch'] > 0


SWEEP_SCRIPT = ROOT / 'benchmarks' / 'sweep_bench.py'


def test_sweep_bench_in_process_section_runs(tmp_path):
  """The sweep benchmark's in-process section (--tiny: one worker, small layers); the
  concurrent and multi-process sections start many processes (minutes here), so they are
  run by hand: ``python benchmarks/sweep_bench.py --tiny --members=1,2 --batches=8``."""
  out = tmp_path / 'sweep'
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
      [sys.executable, str(SWEEP_SCRIPT), '--tiny', '--sections=inprocess', '--members=1',
       '--batches=8', '--out', str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  result = json.loads(out.with_suffix('.json').read_text())
  rows = {r['program']: r for r in result['inprocess'][0]['rows']}
  assert set(rows) == {'plain', 'sweep 1', 'sweep 1 vmapped (before the fix)'}
  assert rows['plain']['over_plain'] == 1.0
  assert all(r['ms_per_member_step'] > 0 for r in rows.values())
  assert '| 8 | sweep 1 |' in out.with_suffix('.md').read_text()


def test_sweep_bench_window_counts_only_calls_ending_inside():
  """The concurrent section's fixed window: a process's rate counts the calls that end
  inside the window (over the end of its last one), not the one running past it."""
  sys.path.insert(0, str(ROOT))
  from benchmarks import sweep_bench  # pylint: disable=g-import-not-at-top

  class Runner:
    calls = 0

    def call(self):
      time.sleep(0.05)
      self.calls += 1

  runner = Runner()
  got = sweep_bench._window(runner, time.time(), 0.5)   # pylint: disable=protected-access
  assert runner.calls == got['calls'] + 1   # the call ending past 0.5 s is not counted
  assert got['calls'] >= 1 and 0.05 <= got['seconds'] <= 0.5


def test_sweep_suite_check_measures_the_shift_in_recorded_seed_stds():
  """|mean(new) - mean(recorded)| / std(recorded) and Welch's t, per metric on both sides."""
  sys.path.insert(0, str(ROOT))
  from benchmarks import sweep_suite_check  # pylint: disable=g-import-not-at-top

  recorded = {'elbo': {'per_seed': [-101.0, -103.0, -102.0]},        # mean -102, std 1
              'nmi': {'per_seed': [0.5, 0.7, 0.6]},                   # mean 0.6, std 0.1
              'not_in_runs': {'per_seed': [1.0, 2.0]}}
  runs = [{'elbo': -99.0, 'nmi': 0.6}, {'elbo': -101.0, 'nmi': 0.6}]  # mean -100; 0.6
  rows = {key: (shift, t) for key, _, _, shift, t in sweep_suite_check.compare(recorded, runs)}
  assert set(rows) == {'elbo', 'nmi'}
  assert rows['elbo'][0] == pytest.approx(2.0) and rows['nmi'][0] == pytest.approx(0.0, abs=1e-12)
  # Welch: diff 2 over sqrt(1/3 + 2/2) (new side: values -99, -101, std sqrt(2)).
  assert rows['elbo'][1] == pytest.approx(2.0 / math.sqrt(1.0 / 3.0 + 1.0))
  assert rows['nmi'][1] == pytest.approx(0.0, abs=1e-12)


def test_sweep_suite_check_has_no_spread_for_one_seed_and_counts_the_verdict(tmp_path):
  """One-seed variants get no shift or t (NaN, left out of the verdict); the verdict counts
  shifts beyond 1 and 2 recorded stds; a variant without results is skipped, not failed."""
  sys.path.insert(0, str(ROOT))
  from benchmarks import sweep_suite_check  # pylint: disable=g-import-not-at-top

  (_, _, _, shift, t), = sweep_suite_check.compare({'elbo': {'per_seed': [-100.0]}},
                                                   [{'elbo': -90.0}])
  assert math.isnan(shift) and math.isnan(t)
  summary = {'variants': {
      'a': {'metrics': {'elbo': {'per_seed': [-101.0, -103.0, -102.0], 'seeds': [0, 1, 2]},
                        'nmi': {'per_seed': [0.5, 0.7, 0.6], 'seeds': [0, 1, 2]}}},
      'b': {'metrics': {'elbo': {'per_seed': [-1.0], 'seeds': [0]}}}}}
  for seed, elbo, nmi in ((0, -104.5, 0.6), (1, -104.5, 0.75), (2, -104.5, 0.6)):
    path = tmp_path / 'exp' / 'a' / f'seed{seed}' / 'eval' / 'metrics.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({'elbo': elbo, 'nmi': nmi}))
  checked = sweep_suite_check.check_experiment(summary, [tmp_path], 'exp')
  assert [variant for variant, _ in checked] == ['a']        # 'b' has no results: skipped
  line = sweep_suite_check.verdict(checked)
  # elbo shifts by 2.5 std, nmi by 0.5: one beyond 1 std, one beyond 2.
  assert 'max shift 2.50' in line and '1 beyond 1 std, 1 beyond 2' in line, line
  table = sweep_suite_check.compact_table([('exp', variant, rows) for variant, rows in checked])
  assert '| exp / a | - | -102.0000 ± 1.0000 / -104.5000 ± 0.0000 | - | 2.50 | 4.33 |' in table, table
  # More seeds: a per-seed-process run of seed 3 joins the recorded side (a recorded seed
  # found there is ignored), a sweep run of seed 3 joins the new side.
  for root, seed, elbo in (('extra', 3, -106.0), ('extra', 0, 0.0), ('more', 3, -104.5)):
    path = tmp_path / root / 'exp' / 'a' / f'seed{seed}' / 'eval' / 'metrics.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({'elbo': elbo, 'nmi': 0.6}))
  (_, rows), = sweep_suite_check.check_experiment(
      summary, [tmp_path, tmp_path / 'more'], 'exp', ['a'], [tmp_path / 'extra'])
  elbo_row, = [row for row in rows if row[0] == 'elbo']
  assert elbo_row[1] == [-101.0, -103.0, -102.0, -106.0] and elbo_row[2] == [-104.5] * 4


def test_sweep_suite_check_counts_the_low_mode_with_fishers_exact_test():
  """Runs below the threshold per side, only for variants whose recorded median is above it
  (an unused code's MI near 0 is not a low mode); p from the 2x2 table."""
  sys.path.insert(0, str(ROOT))
  from benchmarks import sweep_suite_check  # pylint: disable=g-import-not-at-top

  high, low = 2.29, 2.18
  checked = [
      ('e', 'mi', [('mi_bound', [high, high, low], [low, low, high], 0.0, 0.0),
                   ('elbo', [-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], 0.0, 0.0)]),
      ('e', 'mi2', [('mi_bound', [high, high], [high, low], 0.0, 0.0)]),
      ('e', 'elbo', [('mi_bound', [0.01, 0.02, 0.03], [0.01, 0.02, 0.03], 0.0, 0.0)])]
  line = sweep_suite_check.low_mode_count(checked, 'mi_bound', 2.24)
  # Recorded 1 of 5 low, sweeps 3 of 5: Fisher's exact two-sided p = 0.524 (hypergeometric:
  # 4 low among 10, P(table as or less likely than k = 1) = 2 * (5 + 50) / 210).
  assert 'over 2 variants' in line and 'recorded 1 of 5 runs, through sweeps 3 of 5' in line, line
  assert "p = 0.52" in line, line
  assert 'no variant' in sweep_suite_check.low_mode_count(checked, 'mi_bound', 3.0)


def test_dis_suite_budget_times_the_config_each_suite_member_trains():
  """The benchmarked sweep is the suite's: every member's config (one train.py run of the
  suite) is the sweep's with that member's seed, so the projection times the real step."""
  sys.path.insert(0, str(ROOT))
  from benchmarks import dis_suite_budget  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite as suite_lib  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite_runs  # pylint: disable=g-import-not-at-top
  from vmivae_jax.rundir import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  for experiment in suite_lib.disentanglement_suite():
    variant = experiment.variants[0][0]
    config = dis_suite_budget.sweep_config(experiment, variant)
    assert tuple(config.sweep.seed) == tuple(experiment.seeds)
    member = json.loads(workdir_lib.config_to_json(suite_runs.load_config(
        experiment.config_file, {'seed': experiment.seeds[0],
                                 **experiment.variant_overrides(variant)})))
    swept = json.loads(workdir_lib.config_to_json(config))
    swept['sweep'], member['sweep'] = None, None
    swept['seed'] = member['seed']
    assert swept == member, experiment.name
