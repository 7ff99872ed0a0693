#!/usr/bin/env python
"""Sweeps: N runs as members of one program vs N separate processes (issue 13).

  python benchmarks/sweep_bench.py                          # N = 1,4,16; MLP; batch 64, 256
  python benchmarks/sweep_bench.py --members=1,4 --batches=64 --steps=20 --rounds=2
  python benchmarks/sweep_bench.py --tiny                   # seconds: checks the script

For each batch size and N, the MLP MI step (the joint MNIST setting: encoder 784-512-512,
mirror decoder, Q 784-512-512, 16 Gaussian + one 10-way code, lambda = 10) trains

* ``sweep``: N members (seeds 0..N-1) in one process: ``sweep_step.make_sweep_chunk``,
  the trainer's vmapped, donated lax.scan chunk;
* ``processes``: N separate processes, each one run (``train_step.make_train_chunk``),
  running CONCURRENTLY (as ``reproduce --jobs=N`` would): every worker compiles and warms
  up, then all start timing together (a barrier on stdin).

Reported per configuration: examples/s per member (= batch x steps / seconds of that
member's program) and in total (the sum over members), the compile time, and the
seconds from process start to ready (import + data + compile: what each separate
process pays once). Each worker times ``--rounds`` calls of ``--steps`` steps after
a warm-up call; the median call is used. Writes ``<out>.json`` and ``<out>.md``.

The machine matters: on a 2-core CPU both paths share the same two cores; on an
accelerator, separate processes also share one device (``benchmarks/sweep_bench_gpu.sh``).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ''):
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shared import HERE, ROOT, loadavg, maxrss_mib, median  # noqa: E402


def _worker(spec: dict) -> None:
  """One process: builds and compiles, prints 'ready', waits for a line, times, prints JSON."""
  start = time.perf_counter()
  from vmivae_jax import conv_ops  # pylint: disable=g-import-not-at-top
  conv_ops.apply_cpu_xla_flags()   # train.py's CPU options, before the backend starts
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks.shared import load_images, make_config, tiny_config  # pylint: disable=g-import-not-at-top
  from vmivae_jax import build, parallel, sweep_step, train_step  # pylint: disable=g-import-not-at-top
  images_np, source = load_images('train', spec['train_examples'], spec['data_dir'])
  config = make_config('mlp', 'mi', spec['batch'])
  if spec['tiny']:
    config = tiny_config(config)
  mesh = parallel.make_mesh(1)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  n, steps = spec['members'], spec['steps']
  if spec['mode'] == 'sweep':
    config.sweep.seed = tuple(range(n))
    run = build.build_sweep(config, num_train_examples=len(images_np))
    state = sweep_step.stack_states([m.initial_state() for m in run.members])
    args = (images, run.keys('step'), run.keys('data'), run.hparams)
    fn = sweep_step.make_sweep_chunk(run.step_statics, mesh, steps)
  else:
    config.seed = spec['seed']
    run = build.build_run(config, num_train_examples=len(images_np))
    state = run.initial_state()
    args = (images, run.keys['step'], run.keys['data'])
    fn = train_step.make_train_chunk(run.step_statics, mesh, steps)
  t0 = time.perf_counter()
  compiled = fn.lower(state, *args).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, *args)   # warm-up
  jax.block_until_ready((state, metrics))
  ready_s = time.perf_counter() - start
  print('ready', flush=True)
  sys.stdin.readline()
  times = []
  for _ in range(spec['rounds']):
    t = time.perf_counter()
    state, metrics = compiled(state, *args)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  print(json.dumps({'times': times, 'compile_s': compile_s, 'ready_s': ready_s,
                    'rss_mib': maxrss_mib(), 'data': source, 'backend': jax.default_backend(),
                    'device': str(jax.devices()[0])}), flush=True)


def _launch(specs: list[dict]) -> list[dict]:
  """Starts one worker per spec, waits until all are ready, starts them together."""
  procs = [subprocess.Popen([sys.executable, __file__, '--worker', json.dumps(s)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
           for s in specs]
  for p in procs:
    line = p.stdout.readline()
    if line.strip() != 'ready':
      raise RuntimeError(f'worker failed before ready: {line!r}; rc={p.wait()}')
  load = loadavg()
  for p in procs:
    p.stdin.write('go\n')
    p.stdin.flush()
  results = []
  for p in procs:
    out = p.stdout.readline()
    if p.wait() != 0 or not out:
      raise RuntimeError(f'worker failed (rc={p.returncode})')
    results.append({**json.loads(out), 'load_at_start': load})
  return results


def measure(mode: str, members: int, batch: int, args) -> dict:
  base = {'mode': mode, 'batch': batch, 'steps': args.steps, 'rounds': args.rounds,
          'train_examples': args.train_examples, 'data_dir': args.data_dir, 'tiny': args.tiny}
  if mode == 'sweep':
    workers = _launch([{**base, 'members': members}])
    per_member = [batch * args.steps / median(workers[0]['times'])] * members
  else:
    workers = _launch([{**base, 'members': 1, 'seed': i} for i in range(members)])
    per_member = [batch * args.steps / median(w['times']) for w in workers]
  return {'mode': mode, 'members': members, 'batch': batch,
          'examples_per_s_per_member': median(per_member),
          'examples_per_s_total': sum(per_member),
          'compile_s': max(w['compile_s'] for w in workers),
          'ready_s': max(w['ready_s'] for w in workers),
          'rss_mib_per_process': max(w['rss_mib'] for w in workers),
          'workers': workers}


def to_markdown(result: dict) -> str:
  lines = [f'Command: `{result["command"]}`  ',
           f'Machine: {result["machine"]}; backend {result["backend"]}; load average at start '
           f'{result["load_start"]}, at end {result["load_end"]}; total wall '
           f'{result["wall_s"]:.0f} s; {result["steps"]} steps per call, median of '
           f'{result["rounds"]} calls.', '',
           '| batch | N | one program: ex/s per member | total | compile s | N processes '
           '(concurrent): ex/s per member | total | ready s (slowest) | program / processes |',
           '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  rows = {}
  for r in result['results']:
    rows.setdefault((r['batch'], r['members']), {})[r['mode']] = r
  for (batch, n), modes in sorted(rows.items()):
    s, p = modes.get('sweep'), modes.get('processes')
    cell = lambda r, k, d=0: f'{r[k]:,.{d}f}' if r else '-'
    ratio = f'{s["examples_per_s_total"] / p["examples_per_s_total"]:.2f}x' if s and p else '-'
    lines.append(f'| {batch} | {n} | {cell(s, "examples_per_s_per_member")} | '
                 f'{cell(s, "examples_per_s_total")} | {cell(s, "compile_s", 1)} | '
                 f'{cell(p, "examples_per_s_per_member")} | {cell(p, "examples_per_s_total")} | '
                 f'{cell(p, "ready_s", 1)} | {ratio} |')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--members', default='1,4,16')
  parser.add_argument('--batches', default='64,256')
  parser.add_argument('--modes', default='sweep,processes')
  parser.add_argument('--steps', type=int, default=20, help='steps per timed call')
  parser.add_argument('--rounds', type=int, default=3, help='timed calls per worker')
  parser.add_argument('--train_examples', type=int, default=60_000)
  parser.add_argument('--max_processes', type=int, default=16,
                      help='skip "processes" configurations with more workers (memory)')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--tiny', action='store_true', help='small layers, 2 steps: seconds')
  parser.add_argument('--out', default=str(HERE / 'results' / 'sweep'))
  args = parser.parse_args(argv)
  if args.worker:
    _worker(json.loads(args.worker))
    return None
  if args.tiny:
    args.steps, args.rounds, args.train_examples = 2, 1, 512
  start, load_start = time.time(), loadavg()
  results = []
  for batch in [int(b) for b in args.batches.split(',')]:
    for n in [int(m) for m in args.members.split(',')]:
      for mode in args.modes.split(','):
        if mode == 'processes' and n > args.max_processes:
          continue
        r = measure(mode, n, batch, args)
        print(f'batch {batch} N {n} {mode}: {r["examples_per_s_per_member"]:.0f} ex/s per '
              f'member, {r["examples_per_s_total"]:.0f} total', file=sys.stderr, flush=True)
        results.append(r)
  result = {'command': 'python benchmarks/sweep_bench.py ' + ' '.join(sys.argv[1:] if argv is None
                                                                      else argv),
            'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
            'backend': results[0]['workers'][0]['backend'] if results else '?',
            'steps': args.steps, 'rounds': args.rounds, 'load_start': load_start,
            'load_end': loadavg(), 'wall_s': time.time() - start, 'results': results}
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(result, indent=1))
  out.with_suffix('.md').write_text(to_markdown(result))
  print(to_markdown(result))
  return result


if __name__ == '__main__':
  main()
