"""The benchmark script runs end to end (``--tiny``) and writes the documented fields.

No timing is asserted: the CI machine is shared and small. The full benchmark is
``python benchmarks/bench.py`` (see benchmarks/README.md).
"""

import json
import os
import subprocess
import sys
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
