"""The benchmark's summary and Markdown report, from the workers' joined results."""

import math
import platform
from pathlib import Path

from benchmarks.shared import ARCH_LABELS, ARCHS, KIND_LABELS, KINDS, STEPS_PER_CALL
from benchmarks.shared import TARGET_IWAE_SECONDS, TARGET_MATMUL_FRACTION, TARGET_MI_OVER_ELBO
from benchmarks.shared import TARGET_VS_TORCH

def _fmt(x, digits=0, suffix=''):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '-'
  return f'{x:,.{digits}f}{suffix}'


def summarise(results: dict) -> dict:
  """Joins the workers' numbers into rows and checks the targets."""
  rows = {}
  for w in results['workers']:
    if w.get('error') or w.get('worker') not in ('jax', 'torch'):
      continue
    for c in w['configs']:
      key = (c['arch'], c['kind'], c['batch'])
      row = rows.setdefault(key, {'arch': c['arch'], 'kind': c['kind'], 'batch': c['batch']})
      if w['worker'] == 'jax':
        d = c['devices']
        row[f'jax{d}'] = c
      else:
        row.setdefault('torch', []).append(dict(c, threads=w['threads']))
  table = []
  for key in sorted(rows, key=lambda k: (ARCHS.index(k[0]), KINDS.index(k[1]), k[2])):
    row = rows[key]
    torch_best = None
    torch_by = {}
    for t in row.get('torch', []):
      if 'examples_per_s' not in t:
        continue
      torch_by[(t['mode'], t['threads'])] = t['examples_per_s']
      if torch_best is None or t['examples_per_s'] > torch_best['examples_per_s']:
        torch_best = dict(t)
    j1 = row.get('jax1')
    ratio = (j1['examples_per_s'] / torch_best['examples_per_s']
             if j1 and torch_best else None)
    table.append({
        'arch': row['arch'], 'kind': row['kind'], 'batch': row['batch'],
        'jax_1dev_ex_s': j1 and j1['examples_per_s'],
        'jax_1dev_step_ms': j1 and j1['step_ms'],
        'jax_8dev_ex_s': row.get('jax8') and row['jax8']['examples_per_s'],
        'torch_ex_s': {f'{m}/{th}t': v for (m, th), v in sorted(torch_by.items())},
        'torch_best_ex_s': torch_best and torch_best['examples_per_s'],
        'torch_best': torch_best and f'{torch_best["mode"]}, {torch_best["threads"]} thread(s)',
        'jax_over_torch': ratio,
        'mflop_per_example': j1 and j1['flops_per_example'] / 1e6,
        'gflops': j1 and j1['gflops'],
        'matmul_fraction': j1 and j1['matmul_fraction'],
        'compile_s_1dev': j1 and j1['compile_s'],
        'compile_s_8dev': row.get('jax8') and row['jax8']['compile_s'],
        'xla_temp_mib_1dev': j1 and j1['xla_memory_bytes'] and j1['xla_memory_bytes']['temp'] / 2**20,
        'peak_rss_mib_1dev': j1 and j1['peak_rss_mib_cumulative'],
        'peak_rss_mib_8dev': row.get('jax8') and row['jax8']['peak_rss_mib_cumulative'],
    })
  mi_ratios = []
  for r in table:
    if r['kind'] == 'mi':
      for base in ('elbo', 'elbo_noq'):
        b = next((x for x in table if x['arch'] == r['arch'] and x['batch'] == r['batch']
                  and x['kind'] == base), None)
        if b and b['jax_1dev_ex_s'] and r['jax_1dev_ex_s']:
          mi_ratios.append({'arch': r['arch'], 'batch': r['batch'], 'baseline': base,
                            'mi_step_cost_ratio': b['jax_1dev_ex_s'] / r['jax_1dev_ex_s']})
  return {'table': table, 'mi_over_elbo': mi_ratios, 'targets': _targets(table, mi_ratios, results)}


def _targets(table, mi_ratios, results) -> list[dict]:
  targets = []

  def find(arch, kind, batch):
    return next((r for r in table if (r['arch'], r['kind'], r['batch']) == (arch, kind, batch)), None)

  for kind in ('elbo', 'elbo_noq'):
    r = find('mlp', kind, 256)
    if r and r['matmul_fraction'] is not None:
      targets.append({
          'target': f'MLP {KIND_LABELS[kind]} step, batch 256, 1 device: >= 60% of the same-run '
                    'float32 matmul FLOP/s',
          'value': r['matmul_fraction'], 'threshold': TARGET_MATMUL_FRACTION,
          'met': r['matmul_fraction'] >= TARGET_MATMUL_FRACTION,
          'display': f'{100 * r["matmul_fraction"]:.0f}% ({r["gflops"]:.0f} GFLOP/s)'})
  for m in mi_ratios:
    if m['baseline'] in ('elbo', 'elbo_noq'):
      targets.append({
          'target': (f'{m["arch"]} batch {m["batch"]}: MI step <= 1.6x the ELBO-only step '
                     f'[{KIND_LABELS[m["baseline"]]}] (1 device)'),
          'value': m['mi_step_cost_ratio'], 'threshold': TARGET_MI_OVER_ELBO,
          'met': m['mi_step_cost_ratio'] <= TARGET_MI_OVER_ELBO,
          'display': f'{m["mi_step_cost_ratio"]:.2f}x'})
  for r in table:
    if r['jax_over_torch'] is not None:
      targets.append({
          'target': f'{r["arch"]} {r["kind"]} batch {r["batch"]}: >= 1.5x PyTorch (best variant: eager or compiled at the core count, eager at 1 thread)',
          'value': r['jax_over_torch'], 'threshold': TARGET_VS_TORCH,
          'met': r['jax_over_torch'] >= TARGET_VS_TORCH,
          'display': f'{r["jax_over_torch"]:.2f}x'})
  for w in results['workers']:
    if w.get('worker') == 'jax' and w.get('dispatch'):
      d = w['dispatch']
      targets.append({
          'target': 'Python out of the per-step path (on-device data, lax.scan chunks)',
          'value': d['scan_chunk_step_ms'], 'threshold': None, 'met': True,
          'display': (f'{d["scan_chunk_step_ms"]:.2f} ms/step in a {d["steps"]}-step chunk vs '
                      f'{d["python_loop_step_ms"]:.2f} ms/step with a Python loop of 1-step calls '
                      f'({d["arch"]} {d["kind"]} batch {d["batch"]})')})
    if w.get('worker') == 'eval' and w.get('iwae'):
      i = w['iwae']
      targets.append({
          'target': f'IWAE k={i["num_samples"]} on the 10,000 test images, MLP: <= 5 min',
          'value': i['seconds_for_10000'], 'threshold': TARGET_IWAE_SECONDS,
          'met': i['seconds_for_10000'] <= TARGET_IWAE_SECONDS,
          'display': f'{i["seconds_for_10000"]:.0f} s' + (' (extrapolated)' if i['extrapolated'] else '')})
  return targets


def to_markdown(results: dict) -> str:
  s = results['summary']
  meta = results['meta']
  lines = [
      f'# VMI-VAE benchmark ({meta["date"]})', '',
      f'Command: `{meta["command"]}`  ',
      f'Machine: {meta["cpu"]}, {meta["cores"]} cores; jax {meta.get("jax", "?")}, '
      f'torch {meta.get("torch", "-")}; load average at start {meta["load_start"]}, '
      f'at end {meta["load_end"]}; total wall {meta["wall_s"]:.0f} s.  ',
      f'Timings: median over {meta["rounds"]} (MLP) / {meta["conv_rounds"]} (conv) interleaved '
      'rounds (the machine is shared, '
      'so numbers are noisy; the JSON has every round). Examples/s = batch / step time '
      f'(steps run in on-device lax.scan chunks of {STEPS_PER_CALL["mlp"]} (MLP) / '
      f'{STEPS_PER_CALL["conv"]} (conv) steps). %matmul = achieved FLOP/s (XLA cost analysis) '
      'over the best float32 matmul (2048^3, 4096^3) of the same round.', '',
      '## Train step', '',
      '| model | step | batch | JAX 1 dev ex/s | JAX 8 dev ex/s | torch ex/s (eager / compiled, '
      f'{meta.get("torch_threads_main", "?")} threads; eager 1 thread) | JAX / best torch '
      '| MFLOP/ex | GFLOP/s | %matmul | compile s (1/8 dev) | peak RSS MiB (1/8 dev) |',
      '|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|',
  ]
  for r in s['table']:
    lines.append(
        f'| {ARCH_LABELS[r["arch"]]} | {KIND_LABELS[r["kind"]]} | {r["batch"]} '
        f'| {_fmt(r["jax_1dev_ex_s"])} | {_fmt(r["jax_8dev_ex_s"])} '
        f'| {_torch_cell(r, meta.get("torch_threads_main"))} '
        f'| {_fmt(r["jax_over_torch"], 2, "x")} | {_fmt(r["mflop_per_example"], 1)} '
        f'| {_fmt(r["gflops"])} | {_fmt(r["matmul_fraction"] and 100 * r["matmul_fraction"], 0, "%")} '
        f'| {_fmt(r["compile_s_1dev"], 1)} / {_fmt(r["compile_s_8dev"], 1)} '
        f'| {_fmt(r["peak_rss_mib_1dev"])} / {_fmt(r["peak_rss_mib_8dev"])} |')
  lines += ['', '## MI step cost relative to ELBO-only (JAX, 1 device)', '',
            '| model | batch | MI / ELBO (lambda=0, Q trained) | MI / ELBO (no Q) |',
            '|---|---:|---:|---:|']
  seen = sorted({(m['arch'], m['batch']) for m in s['mi_over_elbo']},
                key=lambda k: (ARCHS.index(k[0]), k[1]))
  for arch, batch in seen:
    vals = {m['baseline']: m['mi_step_cost_ratio'] for m in s['mi_over_elbo']
            if (m['arch'], m['batch']) == (arch, batch)}
    lines.append(f'| {ARCH_LABELS[arch]} | {batch} | {_fmt(vals.get("elbo"), 2, "x")} '
                 f'| {_fmt(vals.get("elbo_noq"), 2, "x")} |')
  lines += _bounds_markdown(results)
  lines += ['', '## Float32 matmul baseline (same run)', '',
            '| process | size | median GFLOP/s | best GFLOP/s |', '|---|---:|---:|---:|']
  for w in results['workers']:
    for n, v in (w.get('matmul_gflops') or {}).items():
      who = (f'jax {w["arch"]} {w["devices"]} dev' if w.get('worker') == 'jax'
             else f'torch {w.get("arch")} ({w.get("threads")} threads)')
      lines.append(f'| {who} | {n} | {_fmt(v["median"])} | {_fmt(v["best"])} |')
  ev = next((w for w in results['workers'] if w.get('worker') == 'eval'), None)
  if ev:
    lines += ['', '## Evaluation cost (MLP, JAX, 1 device)', '']
    if ev.get('error'):
      lines.append(f'failed: {ev["error"]}')
    else:
      i, q = ev['iwae'], ev['fresh_q']
      lines += [
          '| what | measured | for the full evaluation |', '|---|---|---|',
          f'| IWAE k={i["num_samples"]} (chunk {i["chunk"]}, batch {i["batch_size"]}) '
          f'| {i["seconds"]:.1f} s on {i["images_timed"]} images; decoder '
          f'{i["decoder_gflops"]:.0f} GFLOP/s = {100 * i["matmul_fraction"]:.0f}% of matmul '
          f'| {i["seconds_for_10000"]:.0f} s for 10,000 images'
          f'{" (extrapolated)" if i["extrapolated"] else ""} |',
          f'| fresh-Q MI bound | Q training {q["train_step_ms"]:.2f} ms/step (batch 256, '
          f'{q["steps_timed"]} steps timed); bound on {q["test_images"]} test images '
          f'{q["bound_on_test_s"]:.1f} s | {q["seconds_for_config_steps"]:.0f} s with '
          f'{q["config_steps"]} Q steps{" (extrapolated)" if q["extrapolated"] else ""} |']
  disp = [w['dispatch'] for w in results['workers'] if w.get('dispatch')]
  if disp:
    d = disp[0]
    lines += ['', '## Python in the step path', '',
              f'{d["arch"]} {d["kind"]} batch {d["batch"]}: {d["scan_chunk_step_ms"]:.2f} ms/step '
              f'in one {d["steps"]}-step chunk (the trainer path) vs {d["python_loop_step_ms"]:.2f} '
              'ms/step calling a 1-step chunk from Python.']
  lines += ['', '## Targets', '', '| target | measured | met |', '|---|---|---|']
  for t in s['targets']:
    lines.append(f'| {t["target"]} | {t["display"]} | {"yes" if t["met"] else "**no**"} |')
  failed = [w for w in results['workers'] if w.get('error')]
  if failed:
    lines += ['', '## Failed workers', '']
    lines += [f'- {w.get("worker")} {w.get("spec", {}).get("arch", "")} '
              f'({w.get("spec", {}).get("threads", "")} threads): {w["error"]}'
              + (f' ({w["note"]})' if w.get('note') else '') for w in failed]
  return '\n'.join(lines) + '\n'


def _matmul_best(results: dict, **match) -> float | None:
  """Best float32 matmul GFLOP/s over the run's worker processes whose fields equal
  ``match`` (a None value matches anything)."""
  best = None
  for w in results['workers']:
    if all(v is None or w.get(k) == v for k, v in match.items()):
      for v in (w.get('matmul_gflops') or {}).values():
        best = max(best or 0.0, v['best'])
  return best


def _bounds_markdown(results: dict) -> list[str]:
  """What bounds the step: FLOP ratios, the PyTorch ceiling and the op-time profile."""
  table = results['summary']['table']
  lines = ['', '## What bounds the step', '',
           'FLOPs from XLA\'s cost analysis of our step (the PyTorch step does the same '
           'arithmetic). "Ceiling" = our best float32 matmul GFLOP/s over PyTorch\'s achieved '
           'step GFLOP/s: the JAX/torch ratio we would reach if our whole step ran at our own '
           'matmul peak. A 1.5x target above the ceiling is out of reach at float32.', '',
           '| model | step | batch | MI / no-Q FLOPs | torch best GFLOP/s | torch %(torch matmul) '
           '| JAX %(JAX matmul) | JAX / torch | ceiling |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in table:
    if not r['mflop_per_example']:
      continue
    noq = next((x for x in table if (x['arch'], x['batch'], x['kind']) ==
                (r['arch'], r['batch'], 'elbo_noq')), None)
    flop_ratio = (r['mflop_per_example'] / noq['mflop_per_example']
                  if noq and noq['mflop_per_example'] and r['kind'] != 'elbo_noq' else None)
    torch_gflops = (r['torch_best_ex_s'] * r['mflop_per_example'] / 1e3
                    if r['torch_best_ex_s'] else None)
    threads = 1 if (r['torch_best'] or '').endswith('1 thread(s)') else None
    torch_mm = _matmul_best(results, worker='torch', arch=r['arch'], threads=threads)
    jax_mm = _matmul_best(results, worker='jax', arch=r['arch'], devices=1)
    lines.append(
        f'| {ARCH_LABELS[r["arch"]]} | {KIND_LABELS[r["kind"]]} | {r["batch"]} '
        f'| {_fmt(flop_ratio, 2, "x")} | {_fmt(torch_gflops)} '
        f'| {_fmt(torch_gflops and torch_mm and 100 * torch_gflops / torch_mm, 0, "%")} '
        f'| {_fmt(r["matmul_fraction"] and 100 * r["matmul_fraction"], 0, "%")} '
        f'| {_fmt(r["jax_over_torch"], 2, "x")} '
        f'| {_fmt(torch_gflops and jax_mm and jax_mm / torch_gflops, 2, "x")} |')
  profiles = []
  for w in results['workers']:
    for c in w.get('configs', []):
      p = c.get('profile')
      if isinstance(p, dict) and p.get('categories_fraction'):
        profiles.append((w, c, p))
  if profiles:
    lines += ['', '### Op-time profile (jax.profiler trace of one chunk, op time summed over '
              'threads; the trace itself slows the chunk)', '', '| model | step | batch | devices | ms/step under the profiler | op-time shares |',
              '|---|---|---:|---:|---:|---|']
    for w, c, p in profiles:
      shares = ', '.join(f'{k} {100 * v:.0f}%' for k, v in p['categories_fraction'].items()
                         if v >= 0.005)
      lines.append(f'| {ARCH_LABELS[c.get("arch", w.get("arch"))]} | {KIND_LABELS[c["kind"]]} '
                   f'| {c["batch"]} | {w.get("devices")} | {p["wall_ms_per_step"]:.1f} '
                   f'| {shares} |')
  return lines


def _torch_cell(r, main_threads) -> str:
  t = r.get('torch_ex_s') or {}
  if not t:
    return '-'
  main = f'{_fmt(t.get(f"eager/{main_threads}t"))} / {_fmt(t.get(f"compiled/{main_threads}t"))}'
  one = [v for k, v in t.items() if k.endswith('/1t') and main_threads != 1]
  return main + (f'; {_fmt(one[0])}' if one else '')


def cpu_name() -> str:
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


