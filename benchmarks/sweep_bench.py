#!/usr/bin/env python
"""Sweeps: N runs as members of one program vs N separate processes (issue 13).

  python benchmarks/sweep_bench.py                          # all sections, N = 1,4,16
  python benchmarks/sweep_bench.py --sections=inprocess --members=1,4 --batches=64
  python benchmarks/sweep_bench.py --tiny                   # seconds: checks the script

The MLP MI step (the joint MNIST setting: encoder 784-512-512, mirror decoder, Q
784-512-512, 16 Gaussian + one 10-way code, lambda = 10), per batch size. Three sections:

``concurrent``: for each N, N members (seeds 0..N-1) in one process
  (``sweep_step.make_sweep_chunk``, the trainer's vmapped, donated lax.scan chunk) vs N
  separate processes, each one run (``train_step.make_train_chunk``) running
  CONCURRENTLY (as ``reproduce --jobs=N`` would). Every process of both sides is
  started, compiles and warms up first; then the two sides take turns (``--rounds``
  rounds, the order rotating): a side's processes all start at one wall-clock time and
  run calls of ``--steps`` steps for a fixed window (``--window`` s, at least 3 warm-up
  calls of the slowest process). A process's examples/s = batch x steps x (calls
  completed within the window) / (time of its last such call): every process is busy
  for the whole window, so the N processes share the machine throughout and their sum
  is the aggregate throughput (timing a fixed number of calls instead would let the
  processes that finish first free the CPU for the others). Reported: examples/s per
  member (median over members of the median over rounds) and in total, compile time,
  and seconds from process start to ready (import + data + compile: what each separate
  process pays once).
``inprocess``: one process, the calls interleaved (``shared.Rounds``): the plain train
  chunk and the N-member sweep chunk for each N (N = 1 also as the vmapped program of
  before the one-member fix, ``vmap_one_member=True``); ms per member-step and the ratio
  to the plain step. The cost of the vmapped program itself, without process effects.
``multiprocess``: one data-parallel run (the plain chunk, the same global batch) as
  1 process x 1 device, 1 process x 2 devices (shard_map, in-process all-reduce) and
  2 processes x 1 device (``jax.distributed`` on localhost, gloo CPU collectives, as
  tests/test_multihost.py launches them); the configurations take turns, one call
  each per round; steps/s (median) and the ratio 2x1 / 1x2: the multi-process overhead.

Writes ``<out>.json`` and ``<out>.md``. The machine matters: on a 2-core CPU every
process shares the same two cores; on an accelerator, separate processes also share
one device (``benchmarks/sweep_bench_gpu.sh``).
"""

import argparse
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ''):
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shared import HERE, ROOT, loadavg, maxrss_mib, median  # noqa: E402

SECTIONS = ('concurrent', 'inprocess', 'multiprocess')


# ----------------------------------------------------------------------------------
# Worker side (a subprocess: its own jax backend and device count).


def _program(spec: dict, images_np, mesh, *, members=None, vmap_one_member=False):
  """(jitted chunk, state, args) of the plain step (members=None) or an N-member sweep."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks.shared import make_config, tiny_config  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax.util import parallel  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import sweep_step  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import train_step  # pylint: disable=g-import-not-at-top
  config = make_config('mlp', 'mi', spec['batch'])
  if spec['tiny']:
    config = tiny_config(config)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  if members:
    config.sweep.seed = tuple(range(members))
    run = build.build_sweep(config, num_train_examples=len(images_np))
    state = sweep_step.stack_states([m.initial_state() for m in run.members])
    args = (images, *parallel.replicate((run.keys('step'), run.keys('data'), run.hparams), mesh))
    fn = sweep_step.make_sweep_chunk(run.step_statics, mesh, spec['steps'],
                                     vmap_one_member=vmap_one_member)
  else:
    config.seed = spec.get('seed', 0)
    run = build.build_run(config, num_train_examples=len(images_np))
    state = run.initial_state()
    args = (images, *parallel.replicate((run.keys['step'], run.keys['data']), mesh))
    fn = train_step.make_train_chunk(run.step_statics, mesh, spec['steps'])
  return fn, parallel.replicate(state, mesh), args


class _Runner:
  """A compiled chunk and its (donated) state: ``call()`` runs one chunk to completion."""

  def __init__(self, fn, state, args):
    import jax  # pylint: disable=g-import-not-at-top
    self._block = jax.block_until_ready
    t = time.perf_counter()
    self.compiled = fn.lower(state, *args).compile()
    self.compile_s = time.perf_counter() - t
    self._state, self._args = state, args
    t = time.perf_counter()
    self.call()   # warm-up
    self.warmup_s = time.perf_counter() - t

  def call(self):
    state, metrics = self.compiled(self._state, *self._args)
    self._block((state, metrics))
    self._state = state


def _window(runner: _Runner, t0: float, window: float) -> dict:
  """Calls from wall-clock ``t0`` until ``window`` s have passed; the calls ending inside."""
  time.sleep(max(0.0, t0 - time.time()))
  ends = []
  while not ends or ends[-1] < window:
    runner.call()
    ends.append(time.time() - t0)
  inside = [e for e in ends if e <= window] or ends[:1]   # a call longer than the window
  return {'calls': len(inside), 'seconds': inside[-1]}


def _serve(spec: dict) -> None:
  """A resident worker: builds, compiles, prints 'ready', then answers commands on stdin.

  ``window T0 W`` (see _window), ``calls K`` (K timed calls), ``stop`` (prints the
  process's facts and exits). Each answer is one JSON line on stdout.
  """
  start = time.perf_counter()
  from vmivae_jax.model import conv_ops  # pylint: disable=g-import-not-at-top
  conv_ops.apply_cpu_xla_flags()   # train.py's CPU options, before the backend starts
  from vmivae_jax.util import distributed  # pylint: disable=g-import-not-at-top
  if spec.get('num_processes', 1) > 1:
    distributed.initialize(coordinator_address=spec['coordinator'],
                           num_processes=spec['num_processes'], process_id=spec['process_id'])
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks.shared import load_images  # pylint: disable=g-import-not-at-top
  from vmivae_jax.util import parallel  # pylint: disable=g-import-not-at-top
  images_np, source = load_images('train', spec['train_examples'], spec['data_dir'])
  mesh = parallel.make_mesh()
  runner = _Runner(*_program(spec, images_np, mesh, members=spec.get('members')))
  ready_s = time.perf_counter() - start
  print(json.dumps({'ready': True, 'warmup_s': runner.warmup_s}), flush=True)
  for line in sys.stdin:
    command, *values = line.split()
    if command == 'window':
      answer = _window(runner, float(values[0]), float(values[1]))
    elif command == 'calls':
      answer = {'times': []}
      for _ in range(int(values[0])):
        t = time.perf_counter()
        runner.call()
        answer['times'].append(time.perf_counter() - t)
    else:
      # The collectives of the compiled program (those in the scan body run every step).
      reduced = [re.findall(r'\w+\[([0-9,]*)\]', line.split(' all-reduce')[0].split('= ')[-1])
                 for line in runner.compiled.as_text().splitlines()
                 if re.search(r' all-reduce(-start)?\(', line)]
      answer = {'all_reduces': len(reduced),
                'all_reduce_elements': sum(math.prod(int(d) for d in dims.split(',') if d)
                                           for shapes in reduced for dims in shapes),
                'compile_s': runner.compile_s, 'ready_s': ready_s, 'rss_mib': maxrss_mib(),
                'data': source, 'backend': jax.default_backend(), 'devices': mesh.devices.size,
                'device': str(jax.devices()[0])}
    print(json.dumps(answer), flush=True)
    if command == 'stop':
      return


def _inprocess(spec: dict) -> None:
  """One process, plain vs sweep chunks timed in interleaved rounds; prints one JSON line."""
  from vmivae_jax.model import conv_ops  # pylint: disable=g-import-not-at-top
  conv_ops.apply_cpu_xla_flags()
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks.shared import Rounds, load_images  # pylint: disable=g-import-not-at-top
  from vmivae_jax.util import parallel  # pylint: disable=g-import-not-at-top
  images_np, source = load_images('train', spec['train_examples'], spec['data_dir'])
  mesh = parallel.make_mesh(1)
  programs = {'plain': (None, False)}
  for n in spec['member_counts']:
    programs[f'sweep {n}'] = (n, False)
    if n == 1:
      programs['sweep 1 vmapped (before the fix)'] = (1, True)
  rounds, facts = Rounds(), {}
  for name, (n, vmapped) in programs.items():
    runner = _Runner(*_program(spec, images_np, mesh, members=n, vmap_one_member=vmapped))
    rounds.add(name, runner.call)
    cost = runner.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    facts[name] = {'members': n or 1, 'compile_s': runner.compile_s,
                   'flops_per_call': (cost or {}).get('flops'),
                   'hlo_transposes': len(re.findall(r' transpose\(', runner.compiled.as_text()))}
  load_before = loadavg()
  samples = rounds.run(spec['rounds'])
  plain = median(samples['plain']) / spec['steps']
  rows = []
  for name, times in samples.items():
    step = median(times) / spec['steps']
    per_member = step / facts[name]['members']
    rows.append({'program': name, **facts[name], 'ms_per_step': 1e3 * step,
                 'ms_per_member_step': 1e3 * per_member, 'over_plain': per_member / plain,
                 'ms_per_step_rounds': [1e3 * t / spec['steps'] for t in times]})
  print(json.dumps({'batch': spec['batch'], 'rows': rows, 'load_before': load_before,
                    'load_after': loadavg(), 'data': source,
                    'backend': jax.default_backend()}), flush=True)


# ----------------------------------------------------------------------------------
# Parent side.


class _Worker:
  """A resident worker process (``_serve``)."""

  def __init__(self, spec: dict, env: dict):
    self.spec = spec
    self.proc = subprocess.Popen([sys.executable, __file__, '--worker', json.dumps(spec)],
                                 cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)

  def send(self, line: str):
    self.proc.stdin.write(line + '\n')
    self.proc.stdin.flush()

  def receive(self) -> dict:
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f'worker {self.spec} ended (rc={self.proc.wait()})')
      if line.startswith('{'):
        return json.loads(line)
      print(f'worker: {line.rstrip()}', file=sys.stderr)   # a library's print, not ours

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


def _env(devices: int = 1) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)   # the workers choose their own device counts
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(groups: dict[str, list[tuple[dict, dict]]]) -> dict[str, list[_Worker]]:
  """Starts every worker of every group (name -> [(spec, env)]); returns once all are ready."""
  workers = {name: [_Worker(spec, env) for spec, env in specs] for name, specs in groups.items()}
  try:
    for group in workers.values():
      for w in group:
        w.warmup_s = w.receive()['warmup_s']
  except BaseException:
    for group in workers.values():
      for w in group:
        w.kill()
    raise
  return workers


def _stop(workers: dict[str, list[_Worker]]) -> dict[str, list[dict]]:
  """Each worker's facts; every worker is told first (the processes of a distributed run
  leave together: process 0's coordinator waits for the others at shutdown)."""
  for group in workers.values():
    for w in group:
      w.send('stop')
  facts = {name: [w.receive() for w in group] for name, group in workers.items()}
  for group in workers.values():
    for w in group:
      w.proc.wait()
  return facts


def _order(names: list, r: int) -> list:
  return names[r % len(names):] + names[:r % len(names)]


def _base(args, batch: int) -> dict:
  return {'batch': batch, 'steps': args.steps, 'train_examples': args.train_examples,
          'data_dir': args.data_dir, 'tiny': args.tiny}


def concurrent(n: int, batch: int, args) -> list[dict]:
  """One N-member program vs N concurrent processes, in alternating fixed windows."""
  base = _base(args, batch)
  groups = {'sweep': [({**base, 'members': n}, _env())]}
  if n <= args.max_processes:
    groups['processes'] = [({**base, 'seed': i}, _env()) for i in range(n)]
  workers = _start(groups)
  try:
    window = max(args.window, 3 * max(w.warmup_s for g in workers.values() for w in g))
    rates = {name: [[] for _ in group] for name, group in workers.items()}   # ex/s per round
    loads = []
    for r in range(args.rounds):
      for name in _order(list(workers), r):
        loads.append(loadavg())
        t0 = time.time() + 0.5
        for w in workers[name]:
          w.send(f'window {t0} {window}')
        for i, w in enumerate(workers[name]):
          got = w.receive()
          rates[name][i].append(batch * args.steps * got['calls'] / got['seconds'])
    facts = _stop(workers)
  finally:
    for group in workers.values():
      for w in group:
        w.kill()
  results = []
  for name, per_worker in rates.items():
    member_rates = [median(rs) for rs in per_worker]
    if name == 'sweep':
      member_rates = member_rates * n
    results.append({
        'mode': name, 'members': n, 'batch': batch, 'window_s': window,
        'examples_per_s_per_member': median(member_rates),
        'examples_per_s_total': sum(member_rates),
        'compile_s': max(f['compile_s'] for f in facts[name]),
        'ready_s': max(f['ready_s'] for f in facts[name]),
        'rss_mib_per_process': max(f['rss_mib'] for f in facts[name]),
        'rates_per_worker_per_round': per_worker, 'loads': loads, 'workers': facts[name]})
  return results


def inprocess(batch: int, args) -> dict:
  spec = {**_base(args, batch), 'mode': 'inprocess', 'rounds': args.rounds_inprocess,
          'member_counts': [int(m) for m in args.members.split(',')]}
  proc = subprocess.run([sys.executable, __file__, '--worker', json.dumps(spec)], cwd=ROOT,
                        env=_env(), stdout=subprocess.PIPE, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'in-process worker failed (rc={proc.returncode})')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def multiprocess(batch: int, args) -> dict:
  """The plain chunk at one global batch: 1 x 1 device, 1 x 2 devices, 2 x 1 device."""
  base = _base(args, batch)
  port = _free_port()
  groups = {'1 process x 1 device': [(base, _env())],
            '1 process x 2 devices': [(base, _env(devices=2))],
            '2 processes x 1 device': [({**base, 'coordinator': f'localhost:{port}',
                                         'num_processes': 2, 'process_id': i}, _env())
                                       for i in (0, 1)]}
  workers = _start(groups)
  try:
    times = {name: [] for name in workers}
    loads = []
    for r in range(args.rounds_multiprocess):
      loads.append(loadavg())
      for name in _order(list(workers), r):
        for w in workers[name]:
          w.send('calls 1')
        # The processes of one run wait for each other in the collectives: the slowest.
        times[name].append(max(w.receive()['times'][0] for w in workers[name]))
    facts = _stop(workers)
  finally:
    for group in workers.values():
      for w in group:
        w.kill()
  steps_per_s = {name: args.steps / median(ts) for name, ts in times.items()}
  return {'batch': batch, 'steps_per_s': steps_per_s, 'times': times, 'loads': loads,
          'two_processes_over_one': (steps_per_s['2 processes x 1 device']
                                     / steps_per_s['1 process x 2 devices']),
          'workers': facts}


def to_markdown(result: dict) -> str:
  lines = [f'Command: `{result["command"]}`  ',
           f'Machine: {result["machine"]}; backend {result["backend"]}; load average at start '
           f'{result["load_start"]}, at end {result["load_end"]}; total wall '
           f'{result["wall_s"]:.0f} s; {result["steps"]} steps per call.', '']
  if result.get('concurrent'):
    lines += ['Concurrent (aggregate examples/s in a fixed wall window, median of '
              f'{result["rounds"]} alternating windows per side):', '',
              '| batch | N | one program: ex/s per member | total | compile s | N processes '
              '(concurrent): ex/s per member | total | ready s (slowest) | program / processes '
              '| window s |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    rows = {}
    for r in result['concurrent']:
      rows.setdefault((r['batch'], r['members']), {})[r['mode']] = r
    for (batch, n), modes in sorted(rows.items()):
      s, p = modes.get('sweep'), modes.get('processes')
      cell = lambda r, k, d=0: f'{r[k]:,.{d}f}' if r else '-'
      ratio = f'{s["examples_per_s_total"] / p["examples_per_s_total"]:.2f}x' if s and p else '-'
      lines.append(f'| {batch} | {n} | {cell(s, "examples_per_s_per_member")} | '
                   f'{cell(s, "examples_per_s_total")} | {cell(s, "compile_s", 1)} | '
                   f'{cell(p, "examples_per_s_per_member")} | '
                   f'{cell(p, "examples_per_s_total")} | {cell(p, "ready_s", 1)} | {ratio} | '
                   f'{s["window_s"]:.0f} |')
    lines.append('')
  if result.get('inprocess'):
    lines += ['In one process (calls interleaved, median of '
              f'{result["rounds_inprocess"]} rounds):', '',
              '| batch | program | ms per step | ms per member-step | / plain step | '
              'transposes in compiled HLO | load before |', '|---:|:---|---:|---:|---:|---:|:---|']
    for b in result['inprocess']:
      for row in b['rows']:
        lines.append(f'| {b["batch"]} | {row["program"]} | {row["ms_per_step"]:.1f} | '
                     f'{row["ms_per_member_step"]:.1f} | {row["over_plain"]:.2f}x | '
                     f'{row.get("hlo_transposes", "-")} | {b["load_before"]} |')
    lines.append('')
  if result.get('multiprocess'):
    names = list(result['multiprocess'][0]['steps_per_s'])
    lines += ['One data-parallel run, same global batch (steps/s, median of '
              f'{result["rounds_multiprocess"]} interleaved calls):', '',
              '| batch | ' + ' | '.join(names) + ' | 2 processes / 1 process x 2 devices | '
              'all-reduces in the program (elements) |', '|---:|' + '---:|' * (len(names) + 2)]
    for b in result['multiprocess']:
      facts = b['workers']['2 processes x 1 device'][0]
      reduces = (f'{facts["all_reduces"]} ({facts["all_reduce_elements"]:,})'
                 if 'all_reduces' in facts else '-')
      lines.append(f'| {b["batch"]} | ' + ' | '.join(f'{b["steps_per_s"][n]:.1f}' for n in names)
                   + f' | {b["two_processes_over_one"]:.2f}x | {reduces} |')
    lines.append('')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--sections', default=','.join(SECTIONS))
  parser.add_argument('--members', default='1,4,16')
  parser.add_argument('--batches', default='64,256')
  parser.add_argument('--steps', type=int, default=10, help='steps per call')
  parser.add_argument('--rounds', type=int, default=2,
                      help='concurrent: windows per side (they alternate)')
  parser.add_argument('--window', type=float, default=30.0,
                      help='concurrent: seconds per window (at least 3 warm-up calls)')
  parser.add_argument('--rounds_inprocess', type=int, default=5)
  parser.add_argument('--rounds_multiprocess', type=int, default=7)
  parser.add_argument('--train_examples', type=int, default=10_000)
  parser.add_argument('--max_processes', type=int, default=16,
                      help='concurrent: skip the separate processes for larger N (memory)')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--tiny', action='store_true', help='small layers, short windows')
  parser.add_argument('--out', default=str(HERE / 'results' / 'sweep'))
  args = parser.parse_args(argv)
  if args.worker:
    spec = json.loads(args.worker)
    (_inprocess if spec.get('mode') == 'inprocess' else _serve)(spec)
    return None
  if args.tiny:
    args.steps, args.rounds, args.window, args.train_examples = 2, 1, 0.5, 512
    args.rounds_inprocess = args.rounds_multiprocess = 2
  sections = args.sections.split(',')
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    parser.error(f'--sections: unknown {sorted(unknown)}; choose from {SECTIONS}')
  batches = [int(b) for b in args.batches.split(',')]
  start, load_start = time.time(), loadavg()
  result = {'command': 'python benchmarks/sweep_bench.py ' + ' '.join(
                sys.argv[1:] if argv is None else argv),
            'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
            'steps': args.steps, 'rounds': args.rounds,
            'rounds_inprocess': args.rounds_inprocess,
            'rounds_multiprocess': args.rounds_multiprocess, 'load_start': load_start}
  say = lambda *a: print(*a, file=sys.stderr, flush=True)
  if 'inprocess' in sections:
    result['inprocess'] = []
    for batch in batches:
      result['inprocess'].append(inprocess(batch, args))
      say(f'in-process batch {batch}:', {r['program']: round(r['over_plain'], 2)
                                         for r in result['inprocess'][-1]['rows']})
  if 'multiprocess' in sections:
    result['multiprocess'] = []
    for batch in batches:
      result['multiprocess'].append(multiprocess(batch, args))
      say(f'multi-process batch {batch}:', result['multiprocess'][-1]['steps_per_s'])
  if 'concurrent' in sections:
    result['concurrent'] = []
    for batch in batches:
      for n in [int(m) for m in args.members.split(',')]:
        for r in concurrent(n, batch, args):
          say(f'batch {batch} N {n} {r["mode"]}: {r["examples_per_s_per_member"]:.0f} ex/s per '
              f'member, {r["examples_per_s_total"]:.0f} total')
          result['concurrent'].append(r)
  backends = [w['backend'] for r in result.get('concurrent', []) for w in r['workers']]
  backends += [b['backend'] for b in result.get('inprocess', [])]
  backends += [w['backend'] for b in result.get('multiprocess', []) for g in b['workers'].values()
               for w in g]
  result.update(backend=backends[0] if backends else '?', load_end=loadavg(),
                wall_s=time.time() - start)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(result, indent=1))
  out.with_suffix('.md').write_text(to_markdown(result))
  print(to_markdown(result))
  return result


if __name__ == '__main__':
  main()
