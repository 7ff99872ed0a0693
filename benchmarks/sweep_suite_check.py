"""Suite runs trained through sweeps vs the recorded (per-seed process) results.

For each variant: mean ± std over seeds of the recorded ``results/summary.json`` and of
the runs under ``--root`` (e.g. made with ``python -m vmivae_jax.experiments.reproduce
--suite=thesis --only=joint_mnist --root=ROOT``, which trains each variant's seeds as one
sweep), and |difference of means| in units of the recorded seed std. Prints a Markdown
table (issue 13: "every number the suite reproduces must stay within its seed spread").

  python benchmarks/sweep_suite_check.py --root=runs/sweepcheck --experiment=joint_mnist \
      --variants=elbo,mi
"""

import json
import statistics
from pathlib import Path

from absl import app
from absl import flags

_ROOT = flags.DEFINE_string('root', 'runs/sweepcheck', 'Root of the runs made through sweeps.')
_SUMMARY = flags.DEFINE_string('summary', 'results/summary.json', 'The recorded results.')
_EXPERIMENT = flags.DEFINE_string('experiment', 'joint_mnist', 'Experiment name.')
_VARIANTS = flags.DEFINE_list('variants', ['elbo', 'mi'], 'Variants to compare.')
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


def main(_):
  summary = json.loads(Path(_SUMMARY.value).read_text())[_EXPERIMENT.value]
  for variant in _VARIANTS.value:
    recorded = summary['variants'][variant]['metrics']
    seeds = recorded[KEYS[-1] if KEYS[-1] in recorded else 'elbo']['seeds']
    runs = [json.loads((Path(_ROOT.value) / _EXPERIMENT.value / variant / f'seed{s}' / 'eval'
                        / 'metrics.json').read_text()) for s in seeds]
    print(f'\n{_EXPERIMENT.value} / {variant} (seeds {", ".join(map(str, seeds))})\n')
    print('| metric | recorded, per-seed processes | through sweeps | |diff of means| / recorded std |')
    print('|---|---|---|---:|')
    for key, old, new, z in compare(recorded, runs):
      fmt = lambda v: f'{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}'
      print(f'| {key} | {fmt(old)} | {fmt(new)} | {z:.2f} |')


if __name__ == '__main__':
  app.run(main)
