"""The page of a suite other than the thesis's: docs/results_<suite>.md and the
``<suite>`` key of results/summary.json (e.g. ``--suite=class``: the code as a classifier).

The thesis suite's page (docs/results.md, report.py) and its keys in summary.json are
left as they are; within the ``<suite>`` key, experiments whose runs are not under
this --root keep their recorded numbers. Per experiment and variant: mean ± std over
seeds of the finished runs (same per-seed record format as summary_io.py), partial runs
(adopted runs still training) listed apart with the step they reached, the accuracy
curve over checkpoints where measured, the class suite's accuracy targets, the commands, and
the category grid of the first seed.
"""

import json
import shutil
from pathlib import Path

from vmivae_jax.experiments import report
from vmivae_jax.experiments import suite as suite_lib
from vmivae_jax.experiments import summary_io
from vmivae_jax.util import fileio

ROWS = ('accuracy_hungarian', 'accuracy_majority_train', 'accuracy_majority', 'nmi', 'elbo',
        'iwae_log_likelihood')
PARTIAL_ROWS = ('accuracy_hungarian', 'accuracy_majority_train', 'nmi', 'elbo')
CURVE_ROWS = ('accuracy_hungarian', 'accuracy_majority_train', 'nmi')
CLASS_FIGURES = ('category_grid.png', 'label_code_counts.png')
# Label-free choice of one run among seeds (reported beside the mean, never
# instead of it): the seed whose training objective ended lowest, as IIC picks its
# lowest-loss head. Fixed before the held-out seeds were run; uses no labels.
SELECTION_KEY = 'loss'
SELECTION_LAST_LOGS = 10
SELECTION_CRITERION = (f'lowest mean training `{SELECTION_KEY}` over the last '
                       f'{SELECTION_LAST_LOGS} logged steps (no labels)')


ADOPTED_NOTE = ('Runs trained outside the suite and adopted with `--adopt` are listed with '
                'the suite workdir they were adopted into.')


def page_name(suite: str) -> str:
  return f'results_{suite}.md'


def _records(root: Path, exp: suite_lib.Experiment, variant: str) -> list[dict]:
  out = []
  for seed in exp.seeds:
    path = root / exp.name / variant / f'seed{seed}' / 'suite_record.json'
    if path.exists():
      out.append(json.loads(path.read_text()))
  return out


def final_training_loss(run_dir: Path, *, key: str = SELECTION_KEY,
                        last: int = SELECTION_LAST_LOGS) -> float | None:
  """Mean of ``key`` over the last ``last`` lines of the run's metrics.jsonl (None if absent)."""
  path = run_dir / 'metrics.jsonl'
  if not path.exists():
    return None
  values = [json.loads(line).get(key) for line in path.read_text().splitlines() if line.strip()]
  values = [v for v in values if v is not None][-last:]
  return sum(values) / len(values) if values else None


def label_free_choice(root: Path, exp: suite_lib.Experiment, variant: str,
                      done: list[dict]) -> dict | None:
  """The finished seed with the lowest final training loss, with its metrics (>= 2 seeds)."""
  scored = []
  for r in done:
    loss = final_training_loss(root / exp.name / variant / f'seed{r["seed"]}')
    if loss is not None:
      scored.append((loss, r))
  if len(scored) < 2:
    return None
  loss, chosen = min(scored, key=lambda t: t[0])
  flat = summary_io.flatten(chosen['metrics'])
  return {'criterion': SELECTION_CRITERION, 'seed': chosen['seed'], 'value': loss,
          'candidates': {str(r['seed']): v for v, r in scored},
          'metrics': {k: flat.get(k) for k in ROWS}}


def _curve_stats(records: list[dict]) -> list[dict]:
  """Per checkpoint step: each curve metric's stats over the seeds that reached it."""
  by_step = {}
  for r in records:
    for point in r.get('curve', []):
      by_step.setdefault(int(point['step']), []).append((r['seed'], point))
  out = []
  for step in sorted(by_step):
    seeds = [s for s, _ in by_step[step]]
    entry = {'step': step, 'examples_seen': int(by_step[step][0][1]['examples_seen']),
             'seeds': seeds}
    for name in CURVE_ROWS:
      entry[name] = summary_io.stats([p[name] for _, p in by_step[step]], seeds)
    out.append(entry)
  return out


def _run_dir(exp: suite_lib.Experiment, variant: str, record: dict) -> str:
  return summary_io.run_dir(exp.name, variant, record['seed'])


def collect(experiments: list[suite_lib.Experiment], root: Path) -> dict:
  """{experiment: {... 'variants': {variant: {'metrics', 'partial', 'curve', ...}}}}."""
  summary = {}
  for exp in experiments:
    variants, failed = {}, {}
    for variant, _ in exp.variants:
      records = _records(root, exp, variant)
      failures = [r for r in records if 'failure' in r]
      done = [r for r in records if 'failure' not in r and not r.get('partial')]
      partial = [r for r in records if 'failure' not in r and r.get('partial')]
      if failures:
        failed[variant] = [{'seed': r['seed'], 'failure': r['failure'],
                            'command': summary_io.relative(r['command'], _run_dir(exp, variant, r))}
                           for r in failures]
      if not done and not partial:
        continue
      flat = [summary_io.flatten(r['metrics']) for r in done]
      names = sorted(set.intersection(*(set(f) for f in flat))) if flat else []
      seeds = [r['seed'] for r in done]
      variants[variant] = {
          'metrics': {n: summary_io.stats([f[n] for f in flat], seeds) for n in names},
          'partial': [{'seed': r['seed'], 'step': r['step'],
                       'num_train_steps': r.get('num_train_steps'),
                       'adopted_from': r.get('adopted_from'), 'stopped': r.get('stopped'),
                       'metrics': {k: summary_io.flatten(r['metrics']).get(k) for k in ROWS}}
                      for r in partial],
          'commands': [summary_io.relative(r['command'], _run_dir(exp, variant, r))
                       for r in done + partial],
          'eval_commands': [summary_io.relative(r['eval_command'], _run_dir(exp, variant, r))
                            for r in done + partial],
          'train_seconds': [r['train_seconds'] for r in done],
          'train_time_complete': [r.get('train_time_complete', True) for r in done],
          # [start, end] (unix seconds) of the process's training: the suite's wall time.
          'train_intervals': [r['train_interval'] for r in done if r.get('train_interval')],
          'eval_seconds': [r['eval_seconds'] for r in done],
          'seeds_planned': list(exp.seeds),
          'first_seed': (done + partial)[0]['seed'],
          'code_versions': sorted({r.get('code_version', 'not recorded') for r in done + partial}),
          'hardware': summary_io.hardware_of(done + partial),
      }
      choice = label_free_choice(root, exp, variant, done)
      if choice:
        variants[variant]['label_free_choice'] = choice
      if exp.curve:
        variants[variant]['curve'] = _curve_stats(done + partial)
    if variants or failed:
      summary[exp.name] = {'title': exp.title, 'config_file': exp.config_file,
                           'purpose': exp.purpose, 'variants': variants, 'failed': failed}
  return summary


def _pct_or_value(name: str, stats: dict | None) -> str:
  return report.format_stats(stats, percent=name.startswith('accuracy'))


def _final_table(summary_exp: dict) -> list[str]:
  variants = [v for v, info in summary_exp['variants'].items() if info['metrics']]
  if not variants:
    return ['No run of this experiment has finished yet (partial runs below).', '']
  lines = ['| metric (finished runs) | ' + ' | '.join(variants) + ' |',
           '|---' * (len(variants) + 1) + '|']
  for row in ROWS:
    cells = [_pct_or_value(row, summary_exp['variants'][v]['metrics'].get(row)) for v in variants]
    if any(c != 'n/a' for c in cells):
      lines.append(f'| {row}{" (%)" if row.startswith("accuracy") else ""} | '
                   + ' | '.join(cells) + ' |')
  choices = [(v, summary_exp['variants'][v].get('label_free_choice')) for v in variants]
  for variant, choice in choices:
    if choice:
      acc = choice['metrics'].get('accuracy_hungarian')
      lines.append(f'| label-free pick ({variant}): seed {choice["seed"]}, test hungarian (%) | '
                   + ' | '.join((f'{100 * acc:.2f}' if v == variant and acc is not None else '')
                                for v in variants) + ' |')
  if any(c for _, c in choices):
    lines += ['', f'Label-free pick: one seed chosen by the {SELECTION_CRITERION}; shown beside '
              'the mean over seeds, which is the result.']
  return lines + ['']


def _partial_table(summary_exp: dict) -> list[str]:
  rows = [(v, p) for v, info in summary_exp['variants'].items() for p in info['partial']]
  if not rows:
    return []
  lines = ['**Partial runs** (still training, or stopped early): evaluated at the latest '
           'checkpoint, *not* final results.', '',
           '| variant | seed | step reached | ' + ' | '.join(PARTIAL_ROWS) + ' |',
           '|---' * (3 + len(PARTIAL_ROWS)) + '|']
  for variant, p in rows:
    cells = []
    for name in PARTIAL_ROWS:
      value = p['metrics'].get(name)
      cells.append('n/a' if value is None else
                   (f'{100 * value:.2f}%' if name.startswith('accuracy') else f'{value:.3f}'))
    lines.append(f'| {variant} | {p["seed"]} | {p["step"]} of {p["num_train_steps"]} | '
                 + ' | '.join(cells) + ' |')
  stopped = [f'{variant}, seed {p["seed"]}: {p["stopped"]}.' for variant, p in rows
             if p.get('stopped')]
  return lines + [''] + ([' '.join(stopped), ''] if stopped else [])


def _curve_table(summary_exp: dict) -> list[str]:
  variants = [v for v, info in summary_exp['variants'].items() if info.get('curve')]
  if not variants:
    return []
  steps = sorted({p['step'] for v in variants for p in summary_exp['variants'][v]['curve']})
  lines = ['**Accuracy over training** (test Hungarian / training-set majority, the '
           'thesis\'s protocol; mean over the seeds that reached the checkpoint, n = seeds):', '',
           '| examples seen (M) | step | ' + ' | '.join(
               f'{v}: test hungarian (%) | {v}: train majority (%)' for v in variants) + ' |',
           '|---' * (2 + 2 * len(variants)) + '|']
  for step in steps:
    cells, examples = [], None
    for v in variants:
      point = next((p for p in summary_exp['variants'][v]['curve'] if p['step'] == step), None)
      if point is None:
        cells += ['', '']
        continue
      examples = point['examples_seen']
      cells += [_curve_cell(point['accuracy_hungarian']),
                _curve_cell(point['accuracy_majority_train'])]
    lines.append(f'| {examples / 1e6:.2f} | {step} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def _curve_cell(stats: dict) -> str:
  n = len(stats['per_seed'])
  return (f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f} (n={n})' if n > 1
          else f'{100 * stats["mean"]:.1f} (n=1)')


def _targets(summary: dict) -> list[str]:
  lines = ['| experiment | variant | target (test accuracy, Hungarian) | measured | met? |',
           '|---|---|---|---|---|']
  for exp, threshold in suite_lib.CLASS_TARGETS.items():
    variants = summary.get(exp, {}).get('variants', {})
    for variant in ('mi', 'elbo'):
      info = variants.get(variant)
      stats = info['metrics'].get('accuracy_hungarian') if info else None
      floor = suite_lib.CLASS_SEED_FLOORS.get(exp)
      target = f'>= {100 * threshold:.0f}%' + (
          f', no seed below {100 * floor:.0f}%' if floor is not None else '')
      if stats is None:
        partial = info['partial'] if info else []
        what = (f'partial only (steps {", ".join(str(p["step"]) for p in partial)})'
                if partial else 'not run')
        lines.append(f'| {exp} | {variant} | {target} | {what} | no result |')
        continue
      lowest = min(stats['per_seed'])
      misses = []
      if stats['mean'] < threshold:
        misses.append(f'mean missed by {100 * (threshold - stats["mean"]):.2f} points')
      if floor is not None and lowest < floor:
        misses.append(f'a seed below {100 * floor:.0f}%')
      met = 'met' if not misses else '; '.join(misses)
      n = len(stats['per_seed'])
      planned = len(info['seeds_planned'])
      lines.append(f'| {exp} | {variant} | {target} | {_pct_or_value("accuracy", stats)}'
                   f'{"" if n == planned else f" ({n} of {planned} seeds)"}, lowest seed '
                   f'{100 * lowest:.1f}% | {met} |')
  return lines + ['', 'The targets are for the `mi` variant (the recipe); `elbo` is its '
                  'lambda = 0 twin, shown for comparison.', '']


def _per_seed(summary_exp: dict) -> list[str]:
  """Each variant's test accuracy per seed and its training time (a sweep's time is
  shared among its members, so the sum is the sweeps' wall time)."""
  lines = []
  for variant, info in summary_exp['variants'].items():
    stats = info['metrics'].get('accuracy_hungarian')
    if not stats:
      continue
    values = ' / '.join(f'{100 * v:.1f}' for v in stats['per_seed'])
    seeds = ', '.join(str(s) for s in stats['seeds'])
    seconds = info.get('train_seconds', [])
    timed = (f'; training {sum(seconds) / 60:.1f} min summed over these runs'
             if seconds and all(seconds) else '')   # adopted runs were not timed here
    lines.append(f'`{variant}`: test accuracy per seed (seeds {seeds}) {values}%{timed}.')
  return [' '.join(lines), ''] if lines else []


def _copy_figures(exp_name: str, summary_exp: dict, root: Path, docs_dir: Path,
                  suite: str) -> dict[str, list[tuple[str, str]]]:
  out = {}
  for variant, info in summary_exp['variants'].items():
    src = root / exp_name / variant / f'seed{info["first_seed"]}' / 'eval'
    figs = []
    for fig in CLASS_FIGURES:
      dst = docs_dir / 'figures' / suite / exp_name / f'{variant}_{fig}'
      if (src / fig).exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / fig, dst)
      if dst.exists():
        figs.append((fig, str(dst.relative_to(docs_dir))))
    out[variant] = figs
  return out


def _figures(figures: dict, summary_exp: dict) -> list[str]:
  variants = [v for v, figs in figures.items() if figs]
  if not variants:
    return []
  lines = ['| figure | ' + ' | '.join(
      f'{v} (seed {summary_exp["variants"][v]["first_seed"]})' for v in variants) + ' |',
           '|---' * (len(variants) + 1) + '|']
  for kind in CLASS_FIGURES:
    cells = [next((f'![{v} {kind}]({path})' for f, path in figures[v] if f == kind), '')
             for v in variants]
    if any(cells):
      lines.append(f'| {kind.removesuffix(".png")} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def render(suite: str, summary: dict, experiments: list[suite_lib.Experiment],
           figures: dict) -> str:
  lines = [
      f'# Results: the `{suite}` suite', '',
      f'Generated by `python -m vmivae_jax.experiments.reproduce --suite={suite}` (this page '
      f'and the `{suite}` key of `results/summary.json`; every number is read from the runs\' '
      '`eval/metrics.json` and `eval/curve.json`). The thesis suite\'s page is '
      '[results.md](results.md).', '',
      '**Protocol.** The code of an example is argmax q(c|x). `accuracy_hungarian`, '
      '`accuracy_majority` and `nmi` are measured on the test split (one-to-one and '
      'many-to-one code -> label maps); `accuracy_majority_train` is the thesis\'s protocol: '
      'the many-to-one map fitted and scored on all the training images. `elbo` and '
      '`iwae_log_likelihood` are on the test split (IWAE with 50 samples). Mean ± sample '
      'std over seeds of *finished* runs; partial runs are listed apart with the step they '
      'reached.', '', summary_io.COMMANDS_NOTE + ' ' + ADOPTED_NOTE + ' '
      + summary_io.DIRTY_NOTE, '', *summary_io.dirty_paragraph(summary),
      '## Targets', '', *_targets(summary)]
  for exp in experiments:
    if exp.name not in summary:
      continue
    summary_exp = summary[exp.name]
    done = sum(len(v['commands']) - len(v['partial']) for v in summary_exp['variants'].values())
    partial = sum(len(v['partial']) for v in summary_exp['variants'].values())
    planned = len(exp.seeds) * len(exp.variants)
    lines += [f'## {summary_exp["title"]}', '',
              f'{summary_exp["purpose"]}. Config: `{summary_exp["config_file"]}`; variants: '
              + ', '.join(f'`{v}` {dict(exp.variants)[v] or "(the config as is)"}'
                          for v, _ in exp.variants) + '.', '',
              *_final_table(summary_exp), *_per_seed(summary_exp),
              *_partial_table(summary_exp), *_curve_table(summary_exp),
              f'Runs finished: {done} of {planned} planned; partial: {partial}. '
              + summary_io.provenance(summary_exp), '']
    for variant, failures in summary_exp.get('failed', {}).items():
      for f in failures:
        lines += [f'**{variant}, seed {f["seed"]} diverged**: {f["failure"]} '
                  f'(`{f["command"]}`)', '']
    lines += ['<details><summary>Commands (one per run)</summary>', '', '```']
    for v in summary_exp['variants'].values():
      for cmd, ecmd in zip(v['commands'], v['eval_commands']):
        lines += [cmd, ecmd]
    lines += ['```', '', '</details>', '', *_figures(figures.get(exp.name, {}), summary_exp)]
  return '\n'.join(lines) + '\n'


def write(suite: str, experiments: list[suite_lib.Experiment], *, root: Path,
          results_dir: Path, docs_dir: Path) -> dict:
  """Writes docs/results_<suite>.md and the ``suite`` key of results/summary.json
  (every other key of summary.json, and this suite's experiments not under ``root``,
  are kept as they were). Returns the suite's merged summary."""
  collected = collect(experiments, root)
  everything = summary_io.read_previous(results_dir)
  previous = everything.get(suite, {}) if isinstance(everything.get(suite), dict) else {}
  section = summary_io.merge_by_variant(collected, previous)
  section = summary_io.in_suite_order(section, experiments)
  figures = {}
  for name in section:
    if name in collected:
      figures[name] = _copy_figures(name, section[name], root, docs_dir, suite)
    else:
      figures[name] = {v: [(f, f'figures/{suite}/{name}/{v}_{f}') for f in CLASS_FIGURES
                           if (docs_dir / 'figures' / suite / name / f'{v}_{f}').exists()]
                       for v in section[name].get('variants', {})}
  everything[suite] = section
  fileio.atomic_write(results_dir / 'summary.json',
                      json.dumps(everything, indent=2, sort_keys=True))
  fileio.atomic_write(docs_dir / page_name(suite), render(suite, section, experiments, figures))
  return section

