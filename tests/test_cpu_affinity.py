"""CPU shares for parallel runs: the split, the pinning of a child, and reproduce's use."""

import doctest
import os
import subprocess
import sys

import pytest

from vmivae_jax.experiments import reproduce
from vmivae_jax.experiments import suite_runs
from vmivae_jax.util import cpu_affinity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docstring_example():
  results = doctest.testmod(cpu_affinity, verbose=False, report=False)
  assert results.attempted >= 1 and results.failed == 0


def test_shares_are_disjoint_contiguous_near_equal_and_cover_the_cpus():
  assert cpu_affinity.cpu_shares(2, (0, 1)) == [frozenset({0}), frozenset({1})]
  shares = cpu_affinity.cpu_shares(3, (7, 0, 3, 1, 5))          # any order, any ids
  assert shares == [frozenset({0, 1}), frozenset({3, 5}), frozenset({7})]
  for jobs in range(1, 9):
    shares = cpu_affinity.cpu_shares(jobs, tuple(range(8)))
    if jobs == 1:
      assert shares == []
      continue
    assert sorted(c for s in shares for c in s) == list(range(8))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_nothing_to_split_and_bad_job_counts():
  assert cpu_affinity.cpu_shares(1, (0, 1, 2)) == []
  assert cpu_affinity.cpu_shares(3, (0, 1)) == []               # more jobs than CPUs
  with pytest.raises(ValueError, match='jobs=0'):
    cpu_affinity.cpu_shares(0, (0, 1))


def test_expected_platform_reads_jax_platforms_without_starting_jax(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda,cpu')
  assert cpu_affinity.expected_platform() == 'cuda'
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert cpu_affinity.expected_platform() == 'cpu'


@pytest.mark.skipif(not cpu_affinity.can_pin(), reason='no CPU affinity on this platform')
def test_pinned_child_runs_on_its_share_and_its_record_says_so():
  cpu = cpu_affinity.available_cpus()[0]
  code = ('import os, sys\n'
          'from vmivae_jax.experiments import suite_runs\n'
          'from vmivae_jax.util import cpu_affinity\n'
          'cpu_affinity.pin(cpu_affinity.parse_cpus(sys.argv[1]))\n'
          'print(sorted(os.sched_getaffinity(0)), suite_runs.hardware())\n')
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code, str(cpu)], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  total = os.cpu_count()
  cores = f'1 of {total} CPU cores' if total > 1 else '1 CPU cores'
  assert out.stdout.startswith(f'[{cpu}] {cores}'), out.stdout


def test_bad_cpu_lists_are_named():
  assert cpu_affinity.parse_cpus('0,3') == frozenset({0, 3})
  assert cpu_affinity.format_cpus({3, 0}) == '0,3'
  with pytest.raises(ValueError, match="'0;1'"):
    cpu_affinity.parse_cpus('0;1')
  if cpu_affinity.can_pin():
    with pytest.raises(ValueError, match='cannot pin to CPUs \\[100000\\]'):
      cpu_affinity.pin({100000})


def test_cpu_cores_wording():
  assert suite_runs._cpu_cores(2, 2) == '2 CPU cores'
  assert suite_runs._cpu_cores(1, 2) == '1 of 2 CPU cores'


def test_reproduce_pins_parallel_jobs_only_on_cpu(monkeypatch):
  monkeypatch.setattr(cpu_affinity, 'available_cpus', lambda: (0, 1, 2, 3))
  monkeypatch.setattr(cpu_affinity, 'can_pin', lambda: True)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  q = reproduce.job_cpu_shares(2, pin=True)
  assert [q.get_nowait(), q.get_nowait()] == [frozenset({0, 1}), frozenset({2, 3})]
  assert q.empty()
  assert reproduce.job_cpu_shares(1, pin=True) is None
  assert reproduce.job_cpu_shares(2, pin=False) is None
  assert reproduce.job_cpu_shares(8, pin=True) is None          # more jobs than CPUs
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert reproduce.job_cpu_shares(2, pin=True) is None
