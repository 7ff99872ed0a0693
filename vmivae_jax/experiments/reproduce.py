"""Runs an experiment suite and regenerates results/summary.json and docs/results.md.

  python -m vmivae_jax.experiments.reproduce --suite=thesis
  python -m vmivae_jax.experiments.reproduce --suite=thesis --only=joint_mnist --jobs=2
  python -m vmivae_jax.experiments.reproduce --suite=class --only=thesis_budget \
      --root=runs/class --adopt='/work/runs/thesis_budget/{variant}_s{seed}'

Each run trains with the same code path as train.py (its equivalent command is
recorded) into ``--root/<experiment>/<variant>/seed<k>`` and is evaluated as eval.py
does. Finished runs (final checkpoint evaluated) are reused, so an interrupted
suite resumes where it stopped; partial results are aggregated from whatever
runs have finished and marked as such.

By default the seeds of one experiment variant train as one sweep (vmivae_jax/rundir/sweep.py:
one process, one compiled program, the seeds as members), each member writing its run
directory at the same ``--root/<experiment>/<variant>/seed<k>`` as a per-seed run (the
sweep's own config.json and members.json go to ``.../<variant>/sweep_s<seeds>``); a
member equals the single run of its seed up to float rounding. ``--no_sweeps`` trains
one process per seed, as before. A sweep that fails (a member diverged, or the seeds'
run directories hold checkpoints at different steps) falls back to per-seed runs for
that variant, so every seed still gets its own record. ``--sweep_variants`` makes one
sweep per experiment instead, its members every variant x seed, where the variants
differ only in sweepable numbers (``suite_runs.variants_sweepable``): on an accelerator
the lambda = 0 twin then costs about nothing beside the MI run.

``--record_stopped=EXPERIMENT:VARIANT:SEED`` (with ``--trained_with`` and
``--trained_on``) records a run that stopped early and whose checkpoints are gone as
partial, from the accuracy curve measured while they existed (``suite_runs.record_stopped``).

``--adopt=PATTERN`` adopts runs trained elsewhere (``{experiment}``, ``{variant}``,
``{seed}`` are filled in) whose config.json equals the suite's config up to
evaluation settings: the suite's workdir becomes a real directory whose
``checkpoints``, ``initial_state`` and ``metrics.jsonl`` are symlinks to the source
(never written: the suite evaluates adopted runs and never trains them), with the
suite's config.json and ``adopted.json`` naming the source. An adopted run that has
not reached ``num_train_steps`` is evaluated at its latest checkpoint and recorded
as partial (the step reached); rerunning the suite re-evaluates it when a newer
checkpoint exists.
"""

import concurrent.futures
import os
import queue
import subprocess
import sys
from pathlib import Path

from absl import app
from absl import flags
from absl import logging

from vmivae_jax.experiments import report
from vmivae_jax.experiments import suite as suite_lib
from vmivae_jax.experiments.suite_runs import REPO_ROOT
from vmivae_jax.experiments.suite_runs import adopt_run
from vmivae_jax.experiments.suite_runs import load_config
from vmivae_jax.experiments.suite_runs import record_stopped
from vmivae_jax.experiments.suite_runs import run_dir
from vmivae_jax.experiments.suite_runs import run_one
from vmivae_jax.experiments.suite_runs import run_sweep
from vmivae_jax.experiments.suite_runs import variants_sweepable
from vmivae_jax.util import cpu_affinity

_SUITE = flags.DEFINE_enum('suite', 'thesis', sorted(suite_lib.SUITES), 'Experiment suite.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these experiments (default: all).')
_SEEDS = flags.DEFINE_integer('max_seeds', 0, 'Use at most this many seeds (0 = all).')
_ROOT = flags.DEFINE_string('root', 'runs/reproduce', 'Where the runs\' workdirs go.')
_RESULTS = flags.DEFINE_string('results_dir', 'results', 'Where summary.json goes.')
_DOCS = flags.DEFINE_string('docs_dir', 'docs', 'Where results.md and its figures go.')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Runs in parallel (each in its own process).')
_PIN_JOBS = flags.DEFINE_bool(
    'pin_jobs', True, 'With --jobs > 1 on a CPU-only machine (Linux): each parallel run gets '
    'its own share of the CPUs (cpu_affinity.cpu_shares), so XLA gives it that many threads '
    'instead of every run starting a pool over all cores. Faster; a pinned run rounds its '
    'floats differently from an unpinned one (fewer threads), and its record says so.')
_CPUS = flags.DEFINE_string('cpus', '', 'Internal: the CPUs this run may use (e.g. 0,1), '
                            'set by --jobs with --pin_jobs before JAX starts.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only aggregate finished runs.')
_RUN_ONE = flags.DEFINE_string('run_one', '', 'Internal: experiment:variant:seed to run.')
_RUN_SWEEP = flags.DEFINE_string('run_sweep', '',
                                 'Internal: experiment:variant:seed,seed,... to run as a sweep.')
_NO_SWEEPS = flags.DEFINE_bool('no_sweeps', False,
                               'One process per seed instead of one sweep per variant.')
_SWEEP_VARIANTS = flags.DEFINE_bool(
    'sweep_variants', False,
    'One sweep per experiment instead of one per variant, its members every variant x seed, '
    'where the variants differ only in sweepable numbers (e.g. mi_weight): on an '
    'accelerator the lambda = 0 twin then trains in the same program as the MI run. Other '
    'experiments keep one sweep per variant.')
_RECORD_STOPPED = flags.DEFINE_string(
    'record_stopped', '', 'experiment:variant:seed of a run stopped before its last step whose '
    'checkpoints are gone (e.g. left on a lent accelerator): records it as partial from its '
    'eval/curve.json (the code metrics at its last measured checkpoint; no ELBO or IWAE). '
    'Needs --trained_with and --trained_on, read off the training\'s own log.')
_TRAINED_WITH = flags.DEFINE_string('trained_with', '',
                                    'With --record_stopped: the training\'s code version.')
_TRAINED_ON = flags.DEFINE_string('trained_on', '',
                                  'With --record_stopped: the hardware it trained on.')
_ADOPT = flags.DEFINE_string(
    'adopt', '', 'Adopt existing runs: a path pattern with {experiment}, {variant}, {seed} '
    '(symlinked, never written; see the module docstring).')

def _run_in_subprocess(key: str, root: Path, what: str = 'run_one', shares=None) -> str:
  """Runs ``key`` in a child process; with ``shares`` (a queue of CPU sets) the child is
  pinned to one set, taken for the run and given back after it."""
  env = dict(os.environ)
  cmd = [sys.executable, '-m', 'vmivae_jax.experiments.reproduce', f'--suite={_SUITE.value}',
         f'--root={root}', f'--{what}={key}']
  cpus = shares.get() if shares is not None else None
  if cpus is not None:
    cmd.append(f'--cpus={cpu_affinity.format_cpus(cpus)}')
  try:
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
  finally:
    if cpus is not None:
      shares.put(cpus)
  if proc.returncode:
    raise RuntimeError(f'{key} failed:\n{proc.stderr[-3000:]}')
  return key


def job_cpu_shares(jobs: int, pin: bool) -> 'queue.Queue | None':
  """A queue of the CPU sets parallel runs are pinned to, or None (no pinning: one job,
  --nopin_jobs, an accelerator, or no affinity support)."""
  if (not pin or jobs < 2 or not cpu_affinity.can_pin()
      or cpu_affinity.expected_platform() != 'cpu'):
    return None
  shares = cpu_affinity.cpu_shares(jobs)
  if not shares:
    return None
  q = queue.Queue()
  for s in shares:
    q.put(s)
  logging.info('pinning the %d parallel runs to CPUs %s', jobs,
               ' | '.join(cpu_affinity.format_cpus(s) for s in shares))
  return q


def main(argv):
  del argv
  experiments = {e.name: e for e in suite_lib.SUITES[_SUITE.value]()}
  root = Path(_ROOT.value).absolute()
  if _CPUS.value:
    cpu_affinity.pin(cpu_affinity.parse_cpus(_CPUS.value))
  if _RUN_ONE.value:
    name, variant, seed = _RUN_ONE.value.split(':')
    run_one(experiments[name], variant, int(seed), root)
    return
  if _RECORD_STOPPED.value:
    name, variant, seed = _RECORD_STOPPED.value.split(':')
    record_stopped(experiments[name], variant, int(seed), root,
                   code_version=_TRAINED_WITH.value, hardware=_TRAINED_ON.value)
    return
  if _RUN_SWEEP.value:
    name, variants, seeds = _RUN_SWEEP.value.split(':')
    run_sweep(experiments[name], variants.split('+'), [int(s) for s in seeds.split(',')], root)
    return
  selected = [experiments[n] for n in (_ONLY.value or experiments)]
  keys = run_keys(selected, max_seeds=_SEEDS.value)
  what = 'run_one'
  if _ADOPT.value:  # evaluate the adopted runs only: never start the others' training
    keys = adopt_all(experiments, keys, root, _ADOPT.value)
  elif not _NO_SWEEPS.value:  # one process per variant (or experiment), seeds as members
    merged = ({n for n, e in experiments.items() if variants_sweepable(e)}
              if _SWEEP_VARIANTS.value else set())
    what, keys = 'run_sweep', sweep_keys(keys, merge_variants=merged)
  if not _REPORT_ONLY.value:
    shares = job_cpu_shares(_JOBS.value, _PIN_JOBS.value)
    with concurrent.futures.ThreadPoolExecutor(max(1, _JOBS.value)) as pool:
      futures = [pool.submit(_run_in_subprocess, k, root, what, shares) for k in keys]
      for future in concurrent.futures.as_completed(futures):
        try:
          logging.info('finished %s', future.result())
        except RuntimeError as e:
          logging.error('%s', e)
  write_report(_SUITE.value, list(experiments.values()), root=root,
               results_dir=Path(_RESULTS.value), docs_dir=Path(_DOCS.value))


def run_keys(experiments, max_seeds: int = 0) -> list[str]:
  """experiment:variant:seed of every run, in the order the suite starts them: seed-major
  within an experiment, so partial results always hold complete ELBO-vs-MI pairs.
  ``max_seeds`` > 0 keeps each experiment's first seeds."""
  keys = []
  for experiment in experiments:
    seeds = experiment.seeds[:max_seeds] if max_seeds else experiment.seeds
    keys += [f'{experiment.name}:{v}:{s}' for s in seeds for v, _ in experiment.variants]
  return keys


def sweep_keys(keys: list[str], merge_variants=frozenset()) -> list[str]:
  """experiment:variant:seed keys -> one experiment:variant:seed,seed,... key per variant
  (in the order of the variants' first seeds); for the experiments in ``merge_variants``
  one experiment:v1+v2:seed,... key holding every variant x seed."""
  seeds: dict[tuple[str, str], list[str]] = {}
  for key in keys:
    name, variant, seed = key.split(':')
    seeds.setdefault((name, variant), []).append(seed)
  out: dict[str, tuple[list[str], list[str]]] = {}
  for (name, variant), s in seeds.items():
    if name in merge_variants:
      variants, merged_seeds = out.setdefault(name, ([], []))
      variants.append(variant)
      merged_seeds += [x for x in s if x not in merged_seeds]
    else:
      out[f'{name}:{variant}'] = ([variant], s)
  return [f'{k.split(":")[0]}:{"+".join(v)}:{",".join(s)}' for k, (v, s) in out.items()]


def adopt_all(experiments: dict, keys: list[str], root: Path, pattern: str) -> list[str]:
  """Adopts the source of every run key whose filled-in pattern exists; returns those keys."""
  adopted = []
  for key in keys:
    name, variant, seed = key.split(':')
    source = Path(pattern.format(experiment=name, variant=variant, seed=seed))
    if not source.exists():
      logging.info('adopt: no %s for %s', source, key)
      continue
    exp = experiments[name]
    config = load_config(exp.config_file, {'seed': int(seed), **exp.variant_overrides(variant)})
    adopt_run(source, run_dir(root, name, variant, int(seed)), config)
    logging.info('adopted %s as %s', source, key)
    adopted.append(key)
  return adopted


def write_report(suite: str, experiments, *, root: Path, results_dir: Path, docs_dir: Path):
  """The thesis suite writes docs/results.md; any other suite its own page and key."""
  if suite == 'thesis':
    return report.write(experiments, root=root, results_dir=results_dir, docs_dir=docs_dir)
  if suite == 'disentanglement':
    from vmivae_jax.experiments import report_disentanglement  # pylint: disable=g-import-not-at-top
    return report_disentanglement.write(experiments, root=root, results_dir=results_dir,
                                        docs_dir=docs_dir)
  from vmivae_jax.experiments import report_class  # pylint: disable=g-import-not-at-top
  return report_class.write(suite, experiments, root=root, results_dir=results_dir,
                            docs_dir=docs_dir)


if __name__ == '__main__':
  app.run(main)
