"""Suite runs trained through sweeps vs the recorded (per-seed process) results.

For each variant: mean ± std over seeds of the recorded ``results/summary.json`` and of
the runs under ``--root`` (e.g. made with ``python -m vmivae_jax.experiments.reproduce
--suite=thesis --only=joint_mnist --root=ROOT``, which trains each variant's seeds as one
sweep), and |difference of means| in units of the recorded seed std. Prints a Markdown
table (issue 13: "every number the suite reproduces must stay within its seed spread").

  python benchmarks/sweep_suite_check.py --root=runs/sweepcheck --experiment=joint_mnist \
      --variants=elbo,mi
"""

import argparse
import json
import statistics
from pathlib import Path

KEYS = ('accuracy_hungarian', 'accuracy_majority', 'nmi', 'mi_exact_categorical', 'mi_bound',
        'elbo', 'elbo_relaxed', 'iwae_log_likelihood', 'kl_categorical')


def compare(recorded: dict, runs: list[dict]) -> list[tuple[str, list, list, float]]:
  """(metric, recorded per-seed values, new values, |mean diff| / recorded std) per metric."""
  rows = []
  for key in KEYS:
    if key not in recorded or not all(key in m for m in runs):
      continue
    old, new = recorded[key]['per_seed'], [m[key] for m in runs]
    spread = statistics.stdev(old)
    rows.append((key, old, new, abs(statistics.mean(new) - statistics.mean(old)) / spread))
  return rows


def main(argv=None):
  # argparse, not absl flags: the tests import this module beside the suite's own flags.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', default='runs/sweepcheck', help='runs made through sweeps')
  parser.add_argument('--summary', default='results/summary.json', help='recorded results')
  parser.add_argument('--experiment', default='joint_mnist')
  parser.add_argument('--variants', default='elbo,mi', help='comma-separated')
  args = parser.parse_args(argv)
  summary = json.loads(Path(args.summary).read_text())[args.experiment]
  for variant in args.variants.split(','):
    recorded = summary['variants'][variant]['metrics']
    seeds = recorded[KEYS[-1] if KEYS[-1] in recorded else 'elbo']['seeds']
    runs = [json.loads((Path(args.root) / args.experiment / variant / f'seed{s}' / 'eval'
                        / 'metrics.json').read_text()) for s in seeds]
    print(f'\n{args.experiment} / {variant} (seeds {", ".join(map(str, seeds))})\n')
    print('| metric | recorded, per-seed processes | through sweeps | |diff of means| / recorded std |')
    print('|---|---|---|---:|')
    for key, old, new, z in compare(recorded, runs):
      fmt = lambda v: f'{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}'
      print(f'| {key} | {fmt(old)} | {fmt(new)} | {z:.2f} |')


if __name__ == '__main__':
  main()
