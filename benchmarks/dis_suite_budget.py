"""The disentanglement suite's training budget: each method's sweep step, timed as the suite
trains it, and the suite's training time projected from it, beside the times its runs
recorded.

  PYTHONPATH=. python benchmarks/dis_suite_budget.py [--rounds 3] [--steps 10] [--out FILE]
  PYTHONPATH=. python benchmarks/dis_suite_budget.py --jobs 2 [--out FILE]

For each method of ``--suite=disentanglement`` the benchmark builds the sweep of its first
variant exactly as the suite does (``suite_runs.load_config`` of the experiment's config
and overrides, ``sweep.seed`` = its five seeds), compiles the trainer's sweep chunk once,
and times ``--steps``-step calls in interleaved rounds (median), on random packed 64x64
images (a step's cost does not depend on the pixels). A method's second variant differs
only in the weight of one term (the same computation, the same cost), so the projection
counts each method's sweep twice:

  projected = sum over methods of 2 x num_train_steps x (sweep step seconds).

That is the suite's training on the whole machine, one sweep at a time (``--jobs=1``);
checkpointing and the metrics writer are left out (under 1% of a run).

With ``--jobs N`` (N > 1) the benchmark runs as ``reproduce --suite=disentanglement
--jobs=N`` trains: N worker processes side by side, each pinned to its own share of the
CPUs (``cpu_affinity.cpu_shares``, as ``reproduce --pin_jobs``), each timing every
method while the others do the same; a method's step is the median over workers. The
projection is then the suite's wall-clock: the 2 x 7 sweeps handed out in the suite's
order (``reproduce.sweep_keys``) to the first free of N slots (``makespan``). With
``--no_pin`` the workers share all CPUs, as ``reproduce --nopin_jobs`` runs them.

With ``--summary``
(default ``results/summary.json``) each method's recorded sweep times are printed beside
it: those sweeps ran two side by side (``--jobs=2``), so each had about half the machine.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from benchmarks import dlib_conv_step  # noqa: E402  (sets the CPU XLA flags first)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vmivae_jax.experiments import report_disentanglement  # noqa: E402
from vmivae_jax.experiments import reproduce  # noqa: E402
from vmivae_jax.experiments import suite as suite_lib  # noqa: E402
from vmivae_jax.experiments import suite_runs  # noqa: E402
from vmivae_jax.util import cpu_affinity  # noqa: E402
from vmivae_jax.util import parallel  # noqa: E402

TARGET_HOURS = 3.0


def sweep_config(experiment: suite_lib.Experiment, variant: str):
  """The config ``reproduce`` trains for one variant's seeds as one sweep."""
  return suite_runs.load_config(experiment.config_file, {
      **experiment.variant_overrides(variant), 'sweep.seed': tuple(experiment.seeds)})


def suite_sweeps(experiments) -> list[tuple[str, str]]:
  """(method, variant) of each sweep, in the order ``reproduce`` hands them out."""
  keys = reproduce.sweep_keys(reproduce.run_keys(experiments))
  return [tuple(k.split(':')[:2]) for k in keys]


def makespan(durations: list[float], slots: int) -> float:
  """Wall-clock time of ``durations`` run in order, each on the first free of ``slots``.

  >>> makespan([3.0, 1.0, 1.0, 1.0], 2)
  3.0
  """
  free = [0.0] * slots
  for d in durations:
    i = free.index(min(free))
    free[i] += d
  return max(free)


def _spawn_workers(args, jobs: int) -> list[dict]:
  """Runs this script once per CPU share, all at once; returns each worker's JSON."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  shares = cpu_affinity.cpu_shares(jobs)
  if args.no_pin:
    shares = [None] * jobs
  elif not shares or not cpu_affinity.can_pin():
    raise SystemExit(f'--jobs {jobs}: cannot give {jobs} workers their own CPUs here '
                     f'(CPUs {list(cpu_affinity.available_cpus())}); try --no_pin')
  with tempfile.TemporaryDirectory() as tmp:
    procs, outs = [], []
    for i, share in enumerate(shares):
      outs.append(Path(tmp) / f'worker{i}.json')
      cmd = [sys.executable, __file__, '--rounds', str(args.rounds), '--steps', str(args.steps),
             '--only', args.only, '--summary', args.summary, '--out', str(outs[-1])]
      if share is not None:
        cmd += ['--cpus', cpu_affinity.format_cpus(share)]
      procs.append(subprocess.Popen(cmd, cwd=ROOT))
    if any(p.wait() for p in procs):
      raise SystemExit('a benchmark worker failed')
    return [json.loads(o.read_text()) for o in outs]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10, help='sweep steps per timed call')
  parser.add_argument('--only', default='', help='comma-separated methods (default: all)')
  parser.add_argument('--summary', default=str(ROOT / 'results' / 'summary.json'))
  parser.add_argument('--out', default='')
  parser.add_argument('--jobs', type=int, default=1,
                      help='workers side by side, each pinned to its own CPUs')
  parser.add_argument('--no_pin', action='store_true',
                      help='with --jobs: leave the workers unpinned (reproduce --nopin_jobs)')
  parser.add_argument('--cpus', default='', help='internal: pin this worker to these CPUs')
  args = parser.parse_args(argv)
  if args.cpus:
    cpu_affinity.pin(cpu_affinity.parse_cpus(args.cpus))
  if args.jobs > 1:
    return _combine(args, _spawn_workers(args, args.jobs))
  experiments = suite_lib.disentanglement_suite()
  if args.only:
    wanted = args.only.split(',')
    unknown = sorted(set(wanted) - {e.name for e in experiments})
    if unknown:
      raise SystemExit(f'--only: unknown methods {unknown}; the suite has '
                       f'{[e.name for e in experiments]}')
    experiments = [e for e in experiments if e.name in wanted]
  mesh = parallel.make_mesh(1)
  rng = np.random.default_rng(0)
  calls, compile_s, train_steps, variants = {}, {}, {}, {}
  for experiment in experiments:
    config = sweep_config(experiment, experiment.variants[0][0])
    train_steps[experiment.name] = int(config.num_train_steps)
    variants[experiment.name] = len(experiment.variants)
    calls[experiment.name] = dlib_conv_step.sweep_call(config, args.steps, mesh, rng,
                                                       seeds=tuple(config.sweep.seed))
    t0 = time.perf_counter()
    metrics = jax.device_get(calls[experiment.name]())
    compile_s[experiment.name] = time.perf_counter() - t0
    if not all(np.all(np.isfinite(v)) for v in metrics.values()):
      raise FloatingPointError(f'{experiment.name}: the sweep step gave NaN/Inf metrics')
  times = {name: [] for name in calls}
  for r in range(args.rounds):
    order = list(calls)[r % len(calls):] + list(calls)[:r % len(calls)]
    for name in order:
      t0 = time.perf_counter()
      calls[name]()
      times[name].append((time.perf_counter() - t0) / args.steps)
  step_s = {name: float(np.median(t)) for name, t in times.items()}
  projected = {name: variants[name] * train_steps[name] * step_s[name] for name in calls}
  summary = json.loads(Path(args.summary).read_text()) if Path(args.summary).exists() else {}
  recorded = {name: [] for name in calls}
  for name, _, seconds, _ in report_disentanglement.sweep_times(
      summary.get(report_disentanglement.SUITE, {})):
    if name in recorded and seconds is not None:
      recorded[name].append(seconds)
  total = sum(projected.values())
  results = {
      'meta': {'steps_per_call': args.steps, 'rounds': args.rounds, 'members': 5,
               'cpu_count': os.cpu_count(), 'loadavg': os.getloadavg(),
               'jax': jax.__version__, 'backend': jax.default_backend(),
               'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
      'sweep_step_s': step_s, 'sweep_step_s_rounds': times, 'compile_s': compile_s,
      'num_train_steps': train_steps, 'variants': variants,
      'projected_train_s': projected, 'projected_total_h': total / 3600,
      'recorded_sweep_s': recorded, 'target_h': TARGET_HOURS,
  }
  print(f"{'method':<14} {'sweep s/step':>12} {'compile s':>10} {'projected h':>12}  "
        'recorded sweeps (h, two side by side)')
  for name in calls:
    rec = ', '.join(f'{s / 3600:.2f}' for s in recorded[name]) or '-'
    print(f'{name:<14} {step_s[name]:12.3f} {compile_s[name]:10.1f} '
          f'{projected[name] / 3600:12.2f}  {rec}')
  print(f'projected suite training, one sweep at a time: {total / 3600:.2f} h '
        f'(target {TARGET_HOURS:g} h)')
  if args.out:
    Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


def _combine(args, workers: list[dict]) -> None:
  """The suite's wall-clock on ``args.jobs`` slots (pinned unless --no_pin), from the
  workers' steps."""
  names = list(workers[0]['sweep_step_s'])
  step_s = {n: float(np.median([w['sweep_step_s'][n] for w in workers])) for n in names}
  steps = workers[0]['num_train_steps']
  experiments = [e for e in suite_lib.disentanglement_suite() if e.name in names]
  order = suite_sweeps(experiments)
  durations = [steps[name] * step_s[name] for name, _ in order]
  wall = makespan(durations, args.jobs)
  results = {
      'meta': {**workers[0]['meta'], 'jobs': args.jobs, 'pinned': not args.no_pin,
               'cpus_per_job': ('all' if args.no_pin else
                                [len(s) for s in cpu_affinity.cpu_shares(args.jobs)]),
               'loadavg': os.getloadavg()},
      'sweep_step_s': step_s,
      'sweep_step_s_workers': [w['sweep_step_s'] for w in workers],
      'num_train_steps': steps, 'sweep_order': order,
      'sweep_s': dict(zip(['/'.join(k) for k in order], durations)),
      'projected_wall_clock_h': wall / 3600, 'summed_sweeps_h': sum(durations) / 3600,
      'target_h': TARGET_HOURS,
  }
  print(f"{'method':<14} {'sweep s/step':>12}  per worker")
  for name in names:
    per = ', '.join(f"{w['sweep_step_s'][name]:.3f}" for w in workers)
    print(f'{name:<14} {step_s[name]:12.3f}  {per}')
  kind = 'unpinned' if args.no_pin else 'pinned'
  print(f'{len(order)} sweeps on {args.jobs} {kind} slots: {wall / 3600:.2f} h wall-clock '
        f'(summed {sum(durations) / 3600:.2f} h; target {TARGET_HOURS:g} h)')
  if args.out:
    Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
  main()
