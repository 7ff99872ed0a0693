"""The disentanglement suite's page: docs/results_disentanglement.md and the
``disentanglement`` key of results/summary.json.

Per method and value of its main hyper-parameter: the six scores (mean ± std over the
finished seeds), the ELBO beside them, the training time against the suite's 3-hour
budget, the published ordering checked (beta-TCVAE and FactorVAE above the plain VAE
on MIG and the FactorVAE score), the commands and one traversal
figure per run of the first seed. Records are collected as for the class suite
(``report_class.collect``); experiments not under ``--root`` keep their recorded numbers.
"""

import json
import shutil
from pathlib import Path

from vmivae_jax.experiments import report_class
from vmivae_jax.experiments import suite as suite_lib
from vmivae_jax.experiments import summary_io
from vmivae_jax.util import fileio

SUITE = 'disentanglement'
# (summary key, column title), in disentanglement_lib's naming.
SCORES = (('disentanglement/mig', 'MIG'),
          ('disentanglement/factor_vae_eval_accuracy', 'FactorVAE score'),
          ('disentanglement/beta_vae_eval_accuracy', 'BetaVAE score'),
          ('disentanglement/dci_disentanglement', 'DCI disent.'),
          ('disentanglement/dci_completeness', 'DCI compl.'),
          ('disentanglement/dci_informativeness_test', 'DCI inform.'),
          ('disentanglement/sap', 'SAP'),
          ('disentanglement/modularity', 'modularity'),
          ('elbo', 'ELBO'))
# The reference every baseline check compares with: the plain VAE (beta = 1).
REFERENCE = ('beta_vae', 'beta_1')
CHECKED = ('beta_tcvae', 'factor_vae')
CHECK_SCORES = (('disentanglement/mig', 'MIG'),
                ('disentanglement/factor_vae_eval_accuracy', 'FactorVAE score'))
TRAIN_BUDGET_SECONDS = 3 * 3600

# Published dSprites numbers, each copied from a source that can be opened (no number is
# from memory). Keys: (our experiment, our variant, what the source calls the model).
_INFOGAN_CR = ('InfoGAN-CR, Lin et al. 2020, Table 1 (github.com/fjxmlzn/InfoGAN-CR, '
               'README, results/Table1.png)')
_ARD_VAE = ('ARD-VAE, Saha et al. 2025, README "Results" (github.com/Surojit-Utah/ARD-VAE; '
            '5 runs, 6 latent dims)')
_TC_GAN = 'TC-GAN, arXiv 2409.02672, Table 1 (github.com/wangruoyu1126/TC-GAN, README; 10 runs)'
PUBLISHED_SOURCES = {
    'infogan_cr_literature': f'{_INFOGAN_CR}: "the best reported result for each baseline"',
    'infogan_cr_own': f'{_INFOGAN_CR}: the authors\' own FactorVAE runs at the stated gamma',
    'ard_vae': _ARD_VAE,
    'tc_gan': f'{_TC_GAN}; its Z-diff is the BetaVAE score',
}
PUBLISHED = (
    # (experiment, variant, source, model as published, {score key: value})
    ('beta_vae', 'beta_1', 'infogan_cr_literature', 'VAE',
     {'disentanglement/factor_vae_eval_accuracy': 0.63, 'disentanglement/dci_disentanglement': 0.30,
      'disentanglement/mig': 0.10}),
    ('beta_vae', 'beta_1', 'ard_vae', 'VAE',
     {'disentanglement/factor_vae_eval_accuracy': 0.6478, 'disentanglement/mig': 0.06}),
    ('beta_vae', 'beta_1', 'tc_gan', 'VAE',
     {'disentanglement/modularity': 0.87, 'disentanglement/sap': 0.11,
      'disentanglement/beta_vae_eval_accuracy': 0.69}),
    ('beta_vae', 'beta_4', 'infogan_cr_literature', 'beta-VAE (beta not stated)',
     {'disentanglement/factor_vae_eval_accuracy': 0.63, 'disentanglement/dci_disentanglement': 0.41,
      'disentanglement/sap': 0.55, 'disentanglement/mig': 0.21}),
    ('beta_vae', 'beta_4', 'tc_gan', 'beta-VAE (beta not stated)',
     {'disentanglement/modularity': 0.82, 'disentanglement/sap': 0.16,
      'disentanglement/beta_vae_eval_accuracy': 0.86}),
    ('beta_tcvae', 'tc_weight_6', 'infogan_cr_literature', 'beta-TCVAE (beta not stated)',
     {'disentanglement/factor_vae_eval_accuracy': 0.62, 'disentanglement/dci_disentanglement': 0.29,
      'disentanglement/mig': 0.45}),
    ('beta_tcvae', 'tc_weight_6', 'ard_vae', 'beta-TCVAE (beta not stated)',
     {'disentanglement/factor_vae_eval_accuracy': 0.7555, 'disentanglement/mig': 0.20}),
    ('beta_tcvae', 'tc_weight_6', 'tc_gan', 'beta-TCVAE (beta not stated)',
     {'disentanglement/modularity': 0.90, 'disentanglement/sap': 0.22,
      'disentanglement/beta_vae_eval_accuracy': 0.87}),
    ('factor_vae', 'tc_weight_10', 'infogan_cr_own', 'FactorVAE, gamma = 10',
     {'disentanglement/factor_vae_eval_accuracy': 0.83, 'disentanglement/dci_disentanglement': 0.70,
      'disentanglement/sap': 0.57, 'disentanglement/modularity': 0.79, 'disentanglement/mig': 0.40,
      'disentanglement/beta_vae_eval_accuracy': 0.83}),
    ('factor_vae', 'tc_weight_40', 'infogan_cr_own', 'FactorVAE, gamma = 40',
     {'disentanglement/factor_vae_eval_accuracy': 0.82, 'disentanglement/dci_disentanglement': 0.74,
      'disentanglement/sap': 0.56, 'disentanglement/modularity': 0.77, 'disentanglement/mig': 0.43,
      'disentanglement/beta_vae_eval_accuracy': 0.84}),
    ('factor_vae', 'tc_weight_40', 'tc_gan', 'FactorVAE (gamma not stated)',
     {'disentanglement/modularity': 0.92, 'disentanglement/sap': 0.21,
      'disentanglement/beta_vae_eval_accuracy': 0.80}),
    ('dip_vae_i', 'dip_lambda_od_10', 'ard_vae', 'DIP-VAE-I (lambda not stated)',
     {'disentanglement/factor_vae_eval_accuracy': 0.5947, 'disentanglement/mig': 0.05}),
    ('dip_vae_ii', 'dip_lambda_od_10', 'ard_vae', 'DIP-VAE-II (lambda not stated)',
     {'disentanglement/factor_vae_eval_accuracy': 0.6070, 'disentanglement/mig': 0.08}),
)
PUBLISHED_SCORES = tuple((k, t) for k, t in SCORES if k.split('/')[-1] in (
    'mig', 'factor_vae_eval_accuracy', 'beta_vae_eval_accuracy', 'dci_disentanglement', 'sap',
    'modularity'))
# A published value counts as reproduced when it lies within our mean ± max(2 std, 0.05).
REPRODUCED_MARGIN = 0.05

FIGURE = 'traversal_all_dims_0.png'


def _cell(stats: dict | None) -> str:
  if stats is None:
    return 'n/a'
  n = len(stats['per_seed'])
  return f'{stats["mean"]:.3f} ± {stats["std"]:.3f}' if n > 1 else f'{stats["mean"]:.3f} (n=1)'


def score_table(section: dict, experiments: list[suite_lib.Experiment]) -> list[str]:
  """One row per (method, value) with finished runs: every score and the ELBO."""
  lines = ['| method | setting | seeds | ' + ' | '.join(t for _, t in SCORES) + ' |',
           '|---' * (3 + len(SCORES)) + '|']
  for exp in experiments:
    for variant, _ in exp.variants:
      info = section.get(exp.name, {}).get('variants', {}).get(variant)
      if not info or not info['metrics']:
        lines.append(f'| {exp.name} | {variant} | 0 of {len(exp.seeds)} | '
                     + ' | '.join('pending' for _ in SCORES) + ' |')
        continue
      n = len(info['train_seconds'])
      lines.append(f'| {exp.name} | {variant} | {n} of {len(exp.seeds)} | '
                   + ' | '.join(_cell(info['metrics'].get(key)) for key, _ in SCORES) + ' |')
  return lines + ['']


def baseline_checks(section: dict) -> list[str]:
  """beta-TCVAE and FactorVAE against the plain VAE on MIG and the FactorVAE score."""
  ref = section.get(REFERENCE[0], {}).get('variants', {}).get(REFERENCE[1])
  lines = ['| method | setting | score | method | plain VAE (beta = 1) | above it? |',
           '|---|---|---|---|---|---|']
  for name in CHECKED:
    for variant, info in section.get(name, {}).get('variants', {}).items():
      for key, title in CHECK_SCORES:
        ours = info['metrics'].get(key)
        base = ref['metrics'].get(key) if ref else None
        if ours is None or base is None:
          verdict = 'no result'
        else:
          diff = ours['mean'] - base['mean']
          verdict = f'{"yes" if diff > 0 else "no"} ({diff:+.3f})'
        lines.append(f'| {name} | {variant} | {title} | {_cell(ours)} | {_cell(base)} | '
                     f'{verdict} |')
  return lines + ['']


def _published_cell(ours: dict | None, published: float | None) -> tuple[str, bool | None]:
  if published is None:
    return '-', None
  if ours is None:
    return f'pending / {published:.2f}', None
  margin = max(2 * ours['std'], REPRODUCED_MARGIN)
  inside = abs(ours['mean'] - published) <= margin
  return f'{ours["mean"]:.2f} / {published:.2f}{"" if inside else " *"}', inside


def published_table(section: dict) -> list[str]:
  """Ours next to each published value (ours / published; '*': outside our margin)."""
  names = [t for _, t in PUBLISHED_SCORES]
  lines = ['| ours (method, setting) | published model | source | ' + ' | '.join(names) + ' |',
           '|---' * (3 + len(names)) + '|']
  verdicts = []
  for name, variant, source, model, values in PUBLISHED:
    info = section.get(name, {}).get('variants', {}).get(variant)
    cells = []
    for key, _ in PUBLISHED_SCORES:
      ours = info['metrics'].get(key) if info else None
      cell, inside = _published_cell(ours, values.get(key))
      cells.append(cell)
      if inside is not None:
        verdicts.append(inside)
    lines.append(f'| {name}, {variant} | {model} | {source} | ' + ' | '.join(cells) + ' |')
  sources = [f'`{k}`: {v}.' for k, v in PUBLISHED_SOURCES.items()]
  return lines + ['', f'Reproduced (the published value within our mean ± max(2 std, '
                  f'{REPRODUCED_MARGIN})): **{sum(verdicts)} of {len(verdicts)}** values '
                  'with a finished run; `*` marks the others. ' + ' '.join(sources), '']


def train_time(section: dict) -> tuple[float, int, int]:
  """(seconds of training summed over the finished runs timed whole, their number, the
  number of finished runs resumed after an interruption, whose time is not known)."""
  timed, resumed = [], 0
  for exp in section.values():
    for v in exp.get('variants', {}).values():
      complete = v.get('train_time_complete') or [True] * len(v.get('train_seconds', []))
      timed += [s for s, whole in zip(v.get('train_seconds', []), complete) if whole]
      resumed += complete.count(False)
  return sum(timed), len(timed), resumed


def train_wall_time(section: dict) -> tuple[float, int, float]:
  """(seconds during which any of the finished runs was training, the number of runs whose
  records hold their training interval, those runs' training seconds summed): the union
  of the intervals, so sweeps trained side by side count once, and the gaps between them
  (evaluations) not at all."""
  variants = [v for exp in section.values() for v in exp.get('variants', {}).values()]
  intervals = sorted({tuple(i) for v in variants for i in v.get('train_intervals', [])})
  runs = sum(len(v.get('train_intervals', [])) for v in variants)
  summed = sum(s for v in variants if v.get('train_intervals')
               for s in v.get('train_seconds', []))
  total, current_end = 0.0, float('-inf')
  for start, end in intervals:
    total += max(0.0, end - max(start, current_end))
    current_end = max(current_end, end)
  return total, runs, summed


def sweep_times(section: dict) -> list[tuple[str, str, float | None, list[str]]]:
  """(method, setting, training seconds of the setting's runs summed, or None when one was
  resumed and so not timed whole, hardware) per finished setting, in the section's order.
  Each setting's seeds train as one sweep, so the sum is that sweep's training time."""
  rows = []
  for name, exp in section.items():
    for variant, v in exp.get('variants', {}).items():
      seconds = v.get('train_seconds', [])
      complete = v.get('train_time_complete') or [True] * len(seconds)
      rows.append((name, variant, float(sum(seconds)) if all(complete) else None,
                   sorted(set(v.get('hardware') or []))))
  return rows


def train_time_table(section: dict, experiments: list[suite_lib.Experiment]) -> list[str]:
  """Each setting's sweep training time (in the suite's order), and the wall-clock it
  implies."""
  order = {e.name: i for i, e in enumerate(experiments)}
  rows = sorted(sweep_times(section), key=lambda row: order.get(row[0], len(order)))
  lines = ['| method | setting | sweep training (h) | hardware |', '|---|---|---|---|']
  for name, variant, seconds, hardware in rows:
    cell = f'{seconds / 3600:.2f}' if seconds is not None else 'not timed whole (resumed)'
    lines.append(f'| {name} | {variant} | {cell} | {", ".join(hardware) or "not recorded"} |')
  timed = [s for *_, s, _ in rows if s is not None]
  lines += ['', f'The {len(timed)} sweeps timed whole trained for **{sum(timed) / 3600:.2f} h** '
            'in all. The suite runs two sweeps side by side (`--jobs=2`) on the 2 cores, so '
            'each sweep trained with about half the machine, and the wall-clock of these '
            f'sweeps is about half the sum: **{sum(timed) / 7200:.2f} h**. The sweeps ran in '
            'several sessions, on machines of different CPU kinds (the hardware column) and '
            'sometimes beside other jobs; `benchmarks/dis_suite_budget.py` times every '
            'method\'s sweep step in one run on one idle machine and projects the whole '
            'suite from it ([benchmarks/README.md](../benchmarks/README.md#the-disentanglement-'
            'suites-training-budget)).', '']
  return lines


def _copy_figures(section: dict, root: Path, docs_dir: Path) -> dict:
  out = {}
  for name, exp in section.items():
    for variant, info in exp.get('variants', {}).items():
      src = root / name / variant / f'seed{info["first_seed"]}' / 'eval' / FIGURE
      dst = docs_dir / 'figures' / SUITE / name / f'{variant}_{FIGURE}'
      if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
      if dst.exists():
        out[name, variant] = str(dst.relative_to(docs_dir))
  return out


def _resumed_and_wall_clock(resumed: int, wall: float, wall_runs: int,
                            wall_summed: float) -> list[str]:
  """The training-time paragraph after the table: runs not timed whole, and the measured
  wall-clock of the runs that recorded their intervals (none: no paragraph)."""
  sentences = []
  if resumed:
    sentences.append(f'{resumed} finished runs were resumed after an interruption; their '
                     'training time was not measured whole.')
  if wall_runs:
    sentences.append(f'Measured directly, for the {wall_runs} runs whose records hold their '
                     f'training interval: **{wall / 3600:.2f} h** of wall-clock training '
                     '(sweeps side by side counted once), against half their summed '
                     f'training: {wall_summed / 7200:.2f} h.')
  return [' '.join(sentences), ''] if sentences else []


def render(section: dict, experiments: list[suite_lib.Experiment], figures: dict) -> str:
  _, _, resumed = train_time(section)
  wall, wall_runs, wall_summed = train_wall_time(section)
  planned = sum(len(e.seeds) * len(e.variants) for e in experiments)
  lines = [
      '# Results: the `disentanglement` suite', '',
      'Generated by `python -m vmivae_jax.experiments.reproduce --suite=disentanglement` '
      '(this page and the `disentanglement` key of `results/summary.json`; every number is '
      'read from the runs\' `eval/metrics.json`). What the data, metrics and objectives are: '
      '[disentanglement.md](disentanglement.md).', '',
      '**Protocol.** Procedural dSprites (737,280 images; our own rasteriser of the '
      'original factor grid). Every method trains disentanglement_lib\'s conv '
      'encoder/decoder with 10 Gaussian dims, Bernoulli likelihood, Adam 1e-4, batch 64, for '
      f'{suite_lib.DISENTANGLEMENT_STEPS:,} steps ({64 * suite_lib.DISENTANGLEMENT_STEPS:,} '
      'examples: 0.67% of disentanglement_lib\'s 300,000 steps, what 2 CPU cores allow for '
      f'{planned} runs). Each value of a method\'s main hyper-parameter trains seeds 0-4 as '
      'one sweep; no tuning was done on dSprites, so every seed is held out. The scores read '
      'the encoder mean over the whole factor grid, at a fifth of disentanglement_lib\'s '
      'sample sizes (MIG, modularity: 2,000 points; SAP, DCI: 2,000 train / 1,000 test; '
      'BetaVAE, FactorVAE: 2,000 / 1,000 points of 64-image batches); the ELBO is on 2,000 '
      'test images. Mean ± sample std over the finished seeds.', '',
      summary_io.COMMANDS_NOTE + ' ' + summary_io.DIRTY_NOTE, '',
      '## Scores', '', *score_table(section, experiments),
      '## Baselines against the plain VAE', '',
      'The target: beta-TCVAE and FactorVAE above beta-VAE with beta = 1 on MIG and the '
      'FactorVAE score (the published ordering).', '', *baseline_checks(section),
      '## Next to the published numbers', '',
      'Cells are ours / published (our mean over the finished seeds). The published models '
      'trained far longer (disentanglement_lib: 300,000 steps; ours: '
      f'{suite_lib.DISENTANGLEMENT_STEPS:,}), most sources do not state the hyper-parameter, '
      'some use 6 latent dims instead of 10, and MIG differs between implementations (the '
      'beta-TCVAE authors\' code leaves out the shape factor and reads posterior samples; '
      'ours, as disentanglement_lib, reads the means of all five factors). So a value far '
      'from ours says the settings differ as much as the methods do; Locatello et al. 2019 '
      'give their results as plots, so their ranges are not transcribed here. Our rows are '
      'matched to the published model by name (beta = 4 stands for an unstated beta > 1, the '
      'larger weight for an unstated one).', '', *published_table(section),
      '## Training time', '',
      f'The budget: the whole suite\'s training in {TRAIN_BUDGET_SECONDS / 3600:.0f} h on 2 CPU '
      'cores; evaluation is not included. Each row is one setting\'s seeds, trained as one '
      'sweep.', '',
      *train_time_table(section, experiments),
      *_resumed_and_wall_clock(resumed, wall, wall_runs, wall_summed)]
  for exp in experiments:
    summary_exp = section.get(exp.name)
    lines += [f'## {exp.title}', '', f'{exp.purpose}. Config: `{exp.config_file}`.', '']
    if not summary_exp:
      lines += ['No run has finished yet.', '']
      continue
    lines += [summary_io.provenance(summary_exp), '',
              '<details><summary>Commands (one per run)</summary>', '', '```']
    for v in summary_exp['variants'].values():
      for cmd, ecmd in zip(v['commands'], v['eval_commands']):
        lines += [cmd, ecmd]
    lines += ['```', '', '</details>', '']
    figs = [(v, figures[exp.name, v]) for v, _ in exp.variants if (exp.name, v) in figures]
    if figs:
      lines += ['| ' + ' | '.join(
          f'{v} (seed {summary_exp["variants"][v]["first_seed"]})' for v, _ in figs) + ' |',
                '|---' * len(figs) + '|',
                '| ' + ' | '.join(f'![{exp.name} {v} traversal]({p})' for v, p in figs) + ' |',
                '', 'Each row: one Gaussian dim over [-2, 2] from a test example\'s posterior '
                'mean.', '']
  return '\n'.join(lines) + '\n'


def write(experiments: list[suite_lib.Experiment], *, root: Path, results_dir: Path,
          docs_dir: Path) -> dict:
  """Writes docs/results_disentanglement.md and the suite's key of summary.json (the other
  keys, and experiments not under ``root``, kept as they were)."""
  collected = report_class.collect(experiments, root)
  everything = summary_io.read_previous(results_dir)
  previous = everything.get(SUITE, {}) if isinstance(everything.get(SUITE), dict) else {}
  section = summary_io.in_suite_order(
      summary_io.merge_by_variant(collected, previous), experiments)
  figures = _copy_figures(section, root, docs_dir)
  everything[SUITE] = section
  fileio.atomic_write(results_dir / 'summary.json',
                      json.dumps(everything, indent=2, sort_keys=True))
  fileio.atomic_write(docs_dir / report_class.page_name(SUITE),
                      render(section, experiments, figures))
  return section

