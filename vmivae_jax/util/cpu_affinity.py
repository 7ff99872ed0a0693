"""Disjoint CPU shares for runs that train side by side on one CPU-only machine.

XLA:CPU sizes a process's thread pool to the CPUs it may run on (its affinity mask).
Two runs started side by side on a 2-core machine each get a 2-thread pool: 4 threads
on 2 cores. Pinned to one core each, each runs one thread with no contention: the
disentanglement suite's training projects to 2.67 h that way against 2.84 h unpinned
(benchmarks/README.md, "The disentanglement suite's training budget"). A pinned run has
fewer threads, so its floats round differently from an unpinned one's (the records name
the cores a run had, ``suite_runs.hardware``).
"""

import importlib.util
import os


def expected_platform() -> str:
  """The platform JAX will start on, read without starting it: ``$JAX_PLATFORMS``'s first
  entry, else 'unknown' when a GPU/TPU plugin is installed, else 'cpu'."""
  env = os.environ.get('JAX_PLATFORMS', '')
  if env:
    return env.split(',')[0]
  for plugin in ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm7_plugin', 'libtpu'):
    if importlib.util.find_spec(plugin) is not None:
      return 'unknown'
  return 'cpu'


def available_cpus() -> tuple[int, ...]:
  """The CPUs this process may run on (all of ``os.cpu_count()`` where affinity is not
  supported), sorted."""
  if hasattr(os, 'sched_getaffinity'):
    return tuple(sorted(os.sched_getaffinity(0)))
  return tuple(range(os.cpu_count() or 1))


def cpu_shares(jobs: int, cpus: tuple[int, ...] | None = None) -> list[frozenset[int]]:
  """``jobs`` disjoint, contiguous, near-equal shares of ``cpus`` (default: this process's
  ``available_cpus()``); [] when there is nothing to split (one job, or more jobs than
  CPUs, where runs must share cores anyway).

  >>> cpu_shares(2, (0, 1, 2, 3, 4))
  [frozenset({0, 1, 2}), frozenset({3, 4})]
  """
  if jobs < 1:
    raise ValueError(f'jobs={jobs} must be >= 1')
  cpus = available_cpus() if cpus is None else tuple(sorted(cpus))
  if jobs == 1 or jobs > len(cpus):
    return []
  size, extra = divmod(len(cpus), jobs)
  shares, start = [], 0
  for i in range(jobs):
    end = start + size + (i < extra)
    shares.append(frozenset(cpus[start:end]))
    start = end
  return shares


def can_pin() -> bool:
  """Whether this platform can restrict a child process's CPUs (Linux)."""
  return hasattr(os, 'sched_setaffinity')


def pin(cpus) -> None:
  """Restricts this process to ``cpus``. Call before JAX starts its backend (its thread
  pool is sized then); a CPU this process may not use is an error naming it."""
  cpus = frozenset(int(c) for c in cpus)
  outside = sorted(cpus - set(available_cpus()))
  if not cpus or outside:
    raise ValueError(f'cannot pin to CPUs {sorted(cpus)}: this process may use '
                     f'{list(available_cpus())}')
  os.sched_setaffinity(0, cpus)


def format_cpus(cpus) -> str:
  """'0,1' for {0, 1}: the form ``parse_cpus`` and the ``--cpus`` flags read."""
  return ','.join(map(str, sorted(cpus)))


def parse_cpus(text: str) -> frozenset[int]:
  """'0,1' -> {0, 1}; anything else is an error naming the text."""
  try:
    cpus = frozenset(int(c) for c in text.split(','))
  except ValueError:
    raise ValueError(f'CPUs {text!r}: expected comma-separated CPU numbers, e.g. 0,1') from None
  return cpus
