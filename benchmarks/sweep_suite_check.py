"""Suite runs trained through sweeps vs the recorded (per-seed process) results.

For each variant: mean ± std over seeds of the recorded ``results/summary.json`` and of
the runs under ``--root`` (e.g. made with ``python -m vmivae_jax.experiments.reproduce
--suite=thesis --only=joint_mnist --root=ROOT``, which trains each variant's seeds as one
sweep), the shift of the mean in units of the recorded seed std, and Welch's t statistic
of the two samples. Prints a Markdown table per experiment and a one-line verdict
(issue 13: "every number the suite reproduces must stay within its seed spread").

``--low_mode=METRIC:VALUE`` counts, pooled over the variants whose recorded median is above
VALUE, the runs of each side that ended below it, with Fisher's exact test: for a bimodal
metric (the MI bound ends near log 10 when the code uses all 10 categories, near log 9
when one collapses) a seed std is no yardstick, but how often the low mode occurs is.

``--extra_recorded`` adds per-seed-process runs of more seeds to the recorded side (and
``--root`` may list several roots), for a variant whose recorded spread looks too small.
With one seed on a side (one-seed experiments) there is no spread to compare with; the
table then shows the two values and their difference only.

  python benchmarks/sweep_suite_check.py --root=runs/sweepcheck \
      --experiments=joint_mnist,joint_fashion
"""

import argparse
import json
import math
import statistics
from pathlib import Path

KEYS = ('accuracy_hungarian', 'accuracy_majority', 'nmi', 'mi_exact_categorical', 'mi_bound',
        'elbo', 'elbo_relaxed', 'iwae_log_likelihood', 'kl_categorical')


def _std(values: list) -> float:
  return statistics.stdev(values) if len(values) > 1 else math.nan


def compare(recorded: dict, runs: list[dict]) -> list[tuple[str, list, list, float, float]]:
  """Per metric present on both sides: (metric, recorded per-seed values, new values,
  |mean diff| / recorded std, Welch's t = mean diff / sqrt(s1^2/n1 + s2^2/n2)).

  The last two are NaN when a side has one value (no spread), and +-inf / 0 when the
  spread is exactly zero (deterministic metrics).
  """
  rows = []
  for key in KEYS:
    if key not in recorded or not all(key in m for m in runs):
      continue
    old, new = recorded[key]['per_seed'], [m[key] for m in runs]
    diff = statistics.mean(new) - statistics.mean(old)
    s_old, s_new = _std(old), _std(new)
    if math.isnan(s_old) or math.isnan(s_new):
      rows.append((key, old, new, math.nan, math.nan))
      continue
    se = math.sqrt(s_old ** 2 / len(old) + s_new ** 2 / len(new))
    shift = abs(diff) / s_old if s_old > 0 else (0.0 if diff == 0 else math.inf)
    t = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    rows.append((key, old, new, shift, t))
  return rows


def _fmt(values: list) -> str:
  mean = statistics.mean(values)
  return f'{mean:.4f}' if len(values) == 1 else f'{mean:.4f} ± {statistics.stdev(values):.4f}'


def _found(roots: list[Path], experiment: str, variant: str) -> dict[int, dict]:
  """seed -> eval metrics of every finished run of the variant under ``roots`` (the first
  root that has a seed wins)."""
  found = {}
  for root in roots:
    for path in sorted((root / experiment / variant).glob('seed*/eval/metrics.json')):
      seed = int(path.parts[-3][len('seed'):])
      found.setdefault(seed, json.loads(path.read_text()))
  return found


def check_experiment(summary: dict, roots: list[Path], experiment: str,
                     variants: list[str] | None = None,
                     extra_recorded: list[Path] = ()) -> list[tuple]:
  """(variant, compare rows) for each variant whose recorded seeds all have results under
  ``roots`` (runs through sweeps; seeds beyond the recorded ones join them); runs under
  ``extra_recorded`` (per-seed processes, e.g. more seeds at the sweeps' commit) join the
  recorded side for seeds it lacks. Prints what it compares and what it skipped."""
  out = []
  for variant in variants or list(summary['variants']):
    recorded = summary['variants'][variant]['metrics']
    seeds = recorded['elbo']['seeds']
    new = _found(roots, experiment, variant)
    missing = [str(s) for s in seeds if s not in new]
    if missing:
      print(f'\n{experiment} / {variant}: skipped, no results under '
            f'{", ".join(map(str, roots))} for seeds {", ".join(missing)}')
      continue
    extra = {s: m for s, m in _found(list(extra_recorded), experiment, variant).items()
             if s not in seeds}
    if extra:
      recorded = {key: {'per_seed': value['per_seed'] + [extra[s].get(key) for s in extra]}
                  for key, value in recorded.items()
                  if 'per_seed' in value and all(key in m for m in extra.values())}
    old_seeds = list(seeds) + list(extra)
    rows = compare(recorded, [new[s] for s in sorted(new)])
    out.append((variant, rows))
    print(f'\n{experiment} / {variant} (recorded seeds {", ".join(map(str, old_seeds))}; '
          f'through sweeps seeds {", ".join(map(str, sorted(new)))})\n')
    print('| metric | recorded, per-seed processes | through sweeps | '
          'shift / recorded std | Welch t |')
    print('|---|---|---|---:|---:|')
    for key, old, new_values, shift, t in rows:
      if math.isnan(shift):
        diff = statistics.mean(new_values) - statistics.mean(old)
        print(f'| {key} | {_fmt(old)} | {_fmt(new_values)} | diff {diff:+.4f} | n/a |')
      else:
        print(f'| {key} | {_fmt(old)} | {_fmt(new_values)} | {shift:.2f} | {t:+.2f} |')
  return out


COMPACT_KEYS = ('accuracy_hungarian', 'elbo', 'mi_bound')


def compact_table(checked: list[tuple[str, str, list]]) -> str:
  """One Markdown row per (experiment, variant): recorded vs through-sweeps means ± stds of
  COMPACT_KEYS, and the largest shift (recorded stds) and |Welch t| over every metric."""
  lines = ['| experiment / variant | ' + ' | '.join(
      f'{key}: recorded / sweeps' for key in COMPACT_KEYS) + ' | max shift | max abs t |',
           '|---|' + '---|' * len(COMPACT_KEYS) + '---:|---:|']
  for experiment, variant, rows in checked:
    by_key = {row[0]: row for row in rows}
    cells = [f'{_fmt(by_key[k][1])} / {_fmt(by_key[k][2])}' if k in by_key else '-'
             for k in COMPACT_KEYS]
    spread = [row for row in rows if not math.isnan(row[3])]
    tail = (f'{max(r[3] for r in spread):.2f} | {max(abs(r[4]) for r in spread):.2f}'
            if spread else 'n/a (one seed) | n/a')
    lines.append(f'| {experiment} / {variant} | ' + ' | '.join(cells) + f' | {tail} |')
  return '\n'.join(lines)


def verdict(checked: list[tuple]) -> str:
  """One line: how many metric means moved by more than 1 and 2 recorded stds, and how
  many have |Welch t| > 2 (about 5% of them by chance alone when nothing changed)."""
  rows = [row for *_, variant_rows in checked for row in variant_rows if not math.isnan(row[3])]
  if not rows:
    return 'no multi-seed variant to compare'
  shifts, ts = [row[3] for row in rows], [abs(row[4]) for row in rows]
  return (f'{len(rows)} metric means over {len(checked)} variants: max shift '
          f'{max(shifts):.2f} recorded std; {sum(s > 1 for s in shifts)} beyond 1 std, '
          f'{sum(s > 2 for s in shifts)} beyond 2; |Welch t| > 2 for '
          f'{sum(t > 2 for t in ts)} (~{0.05 * len(rows):.1f} expected by chance)')


def low_mode_count(checked: list[tuple], metric: str, threshold: float) -> str:
  """One line: of the runs of variants whose recorded median ``metric`` is at least
  ``threshold``, how many ended below it on each side, and Fisher's exact two-sided p of
  the 2x2 table (no difference in how often the low mode occurs)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  old_low = old_n = new_low = new_n = variants = 0
  for *_, rows in checked:
    for key, old, new, *_ in rows:
      if key != metric or statistics.median(old) < threshold:
        continue
      variants += 1
      old_low, old_n = old_low + sum(v < threshold for v in old), old_n + len(old)
      new_low, new_n = new_low + sum(v < threshold for v in new), new_n + len(new)
  if not variants:
    return f'no variant with a recorded median {metric} >= {threshold:g}'
  p = stats.fisher_exact([[old_low, old_n - old_low], [new_low, new_n - new_low]]).pvalue
  return (f'{metric} < {threshold:g} over {variants} variants (recorded median above): '
          f'recorded {old_low} of {old_n} runs, through sweeps {new_low} of {new_n}; '
          f"Fisher's exact p = {p:.2f}")


def main(argv=None):
  # argparse, not absl flags: the tests import this module beside the suite's own flags.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', default='runs/sweepcheck',
                      help='comma-separated roots of runs made through sweeps')
  parser.add_argument('--extra_recorded', default='',
                      help='comma-separated roots of per-seed-process runs that join the '
                           'recorded side (seeds it lacks)')
  parser.add_argument('--summary', default='results/summary.json', help='recorded results')
  parser.add_argument('--experiments', default='joint_mnist', help='comma-separated')
  parser.add_argument('--compact', action='store_true',
                      help='one row per variant (headline metrics, largest shift and |t|)')
  parser.add_argument('--variants', default='',
                      help='comma-separated (default: every variant of each experiment)')
  parser.add_argument('--low_mode', default='',
                      help='METRIC:VALUE: count the runs below VALUE on each side (variants '
                           'whose recorded median is above it), Fisher exact test')
  args = parser.parse_args(argv)
  if args.low_mode:
    low_metric, _, low_value = args.low_mode.partition(':')
    try:
      low_value = float(low_value)
    except ValueError:
      low_value = None
    if low_metric not in KEYS or low_value is None:
      parser.error(f'--low_mode={args.low_mode!r}: expected METRIC:VALUE with METRIC one of '
                   f'{", ".join(KEYS)} and VALUE a number')
  summary = json.loads(Path(args.summary).read_text())
  variants = args.variants.split(',') if args.variants else None
  checked = []
  for experiment in args.experiments.split(','):
    checked += [(experiment, variant, rows) for variant, rows in check_experiment(
        summary[experiment], [Path(r) for r in args.root.split(',')], experiment, variants,
        [Path(r) for r in args.extra_recorded.split(',') if r])]
  if args.compact:
    print('\n' + compact_table(checked))
  print(f'\nverdict: {verdict(checked)}')
  if args.low_mode:
    print(f'low mode: {low_mode_count(checked, low_metric, low_value)}')


if __name__ == '__main__':
  main()
