"""The authors' conv MI train step: JAX conv formulations / XLA flags vs PyTorch, interleaved.

    PYTHONPATH=$PWD python benchmarks/conv_step.py                     # the default trial
    PYTHONPATH=$PWD python benchmarks/conv_step.py --batches=128 --rounds=9 \
        --variants='before=im2col/phases;new=lax_vjp/auto' --torch-modes=eager,compiled
    PYTHONPATH=$PWD python benchmarks/conv_step.py --cpus=0 --threads=1   # one core each

Each variant (JAX: conv impl / deconv impl / XLA_FLAGS; PyTorch: eager or compiled) lives
in its own persistent worker process, built and warmed up once; the coordinator then
asks the workers in turn (the order rotating each round) for one timed call each, so
every variant sees the same background load within a round (the machine is shared).
Reported: per-variant median ms/step and examples/s, and the median over rounds of the
per-round ratio to the best PyTorch variant of the same round (> 1 = faster than torch).

The JAX side is the repo's own step: ``config_lib.authors_config('mnist', 'joint')`` at
the given batch size, ``build.build_run`` and ``train_step.make_train_chunk`` (a jitted
``lax.scan`` of ``--steps-per-call`` steps over the on-device uint8 data set), with
``networks.conv_impls`` (the library's per-backend choice, 'models') replaced by the
``vmivae_jax.model.conv_ops`` formulation named in the variant ('models' = leave the repo's
own). The PyTorch side is ``benchmarks/torch_models.py`` (conv, kind 'mi', the
authors' MI weight 0.01). Likelihoods differ (JAX: the authors' MSE on [-1, 1] pixels;
torch_models: Bernoulli), an elementwise difference that costs nothing measurable.

Variant spec (';'-separated): ``name=CONV/DECONV[/XLA_FLAGS]``, e.g.
``fm=s2d/vjp:s2d/--xla_cpu_enable_fast_math=true`` (flags space-separated inside).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# 'before' = the pre-issue-14 formulations; 'default' = conv_ops' defaults (what the
# networks use on CPU); the flag is what `cli` adds before training on CPU.
DEFAULT_VARIANTS = ('before=im2col/phases;new=default/default;'
                    'new_flag=default/default/--xla_cpu_experimental_ynn_fusion_type='
                    '-individual_convolution')
TRAIN_EXAMPLES = 60_000


def _median(xs):
  s = sorted(xs)
  n = len(s)
  return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _images(n):
  import numpy as np
  sys.path.insert(0, str(HERE))
  try:
    import shared
    return shared.load_images('train', n, str(ROOT.parent / 'shared' / 'datasets'))[0]
  except Exception:  # pylint: disable=broad-except
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


# ----------------------------------------------------------------------------------
# Workers: read 'run' lines on stdin, answer one JSON line per request on stdout.


def _jax_worker(spec):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vmivae_jax.train import build
  from vmivae_jax.config import config_lib
  from vmivae_jax.model import conv_ops
  from vmivae_jax.model import networks
  from vmivae_jax.util import parallel
  from vmivae_jax.train import train_step as steps_lib
  conv_impl, deconv_impl = spec['conv'], spec['deconv']
  default_conv, default_deconv = networks.conv_impls()
  chosen = (default_conv if conv_impl in ('models', 'default') else conv_impl,
            default_deconv if deconv_impl in ('models', 'default') else deconv_impl)
  conv_ops.make_conv(chosen[0])  # validates the names before any compute
  conv_ops.make_conv_transpose(chosen[1])
  networks.conv_impls = lambda backend=None: chosen
  config = config_lib.authors_config('mnist', 'joint')
  config.batch_size = spec['batch']
  images_np = _images(TRAIN_EXAMPLES)
  mesh = parallel.make_mesh(1)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  run = build.build_run(config, num_train_examples=TRAIN_EXAMPLES)
  state = parallel.replicate(run.initial_state(), mesh)
  keys = parallel.replicate((run.keys['step'], run.keys['data']), mesh)
  n = spec['steps_per_call']
  fn = steps_lib.make_train_chunk(run.step_statics, mesh, n)
  t = time.perf_counter()
  compiled = fn.lower(state, images, *keys).compile()
  compile_s = time.perf_counter() - t
  cost = steps_lib.make_train_chunk(run.step_statics, mesh, 1).lower(
      state, images, *keys).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  holder = {'state': state}

  def call():
    holder['state'], m = compiled(holder['state'], images, *keys)
    jax.block_until_ready((holder['state'], m))
    return m

  m = call()
  info = {'compile_s': compile_s, 'flops_per_step': float(cost.get('flops', float('nan'))),
          'finite': bool(all(np.isfinite(np.asarray(v)).all() for v in m.values())),
          'steps_per_call': n}
  if spec.get('profile'):
    sys.path.insert(0, str(HERE))
    import tempfile
    import workers
    info['profile'] = workers._profile_chunk(compiled, call, n, tempfile.mkdtemp())  # pylint: disable=protected-access
    if spec.get('hlo_out'):
      Path(spec['hlo_out']).write_text(compiled.as_text())

  # Matmul peak of this process (float32 2048^3), timed in the same rounds.
  a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float32)
  mm = jax.jit(jnp.dot)
  mm(a, a).block_until_ready()
  fns = {'step': call, 'matmul': lambda: mm(a, a).block_until_ready()}
  return info, fns


def _torch_worker(spec):
  import torch
  sys.path.insert(0, str(HERE))
  import torch_models
  torch.set_num_threads(spec['threads'])
  tr = torch_models.Trainer('conv', 'mi', spec['batch'], _images(TRAIN_EXAMPLES),
                            compiled=spec['mode'] == 'compiled', mi_weight=0.01)
  t = time.perf_counter()
  tr.run(2)
  info = {'first_two_steps_s': time.perf_counter() - t, 'steps_per_call': spec['steps_per_call']}
  a = torch.randn(2048, 2048)
  fns = {'step': lambda: tr.run(spec['steps_per_call']), 'matmul': lambda: a @ a}
  return info, fns


def worker_main(spec_json):
  spec = json.loads(spec_json)
  if spec['kind'] == 'jax':
    if spec.get('xla_flags'):
      os.environ['XLA_FLAGS'] = spec['xla_flags']
    sys.path.insert(0, str(ROOT))
    info, fns = _jax_worker(spec)
  else:
    info, fns = _torch_worker(spec)
  print(json.dumps({'ready': info}), flush=True)
  for line in sys.stdin:
    what = line.strip()
    if what == 'quit':
      break
    t = time.perf_counter()
    fns[what]()
    print(json.dumps({what: time.perf_counter() - t}), flush=True)


# ----------------------------------------------------------------------------------
# Coordinator.


class Worker:

  def __init__(self, name, spec):
    self.name, self.spec = name, spec
    env = dict(os.environ)
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    pin = ['taskset', '-c', spec['cpus']] if spec.get('cpus') else []
    self.proc = subprocess.Popen(pin + [sys.executable, __file__, '--worker', json.dumps(spec)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
    self.info = None

  def wait_ready(self):
    for line in self.proc.stdout:
      if line.startswith('{'):
        msg = json.loads(line)
        if 'ready' in msg:
          self.info = msg['ready']
          return self.info
    raise RuntimeError(f'worker {self.name} died (rc {self.proc.wait()})')

  def ask(self, what):
    self.proc.stdin.write(what + '\n')
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith('{'):
        return json.loads(line)[what]
    raise RuntimeError(f'worker {self.name} died')

  def close(self):
    try:
      self.proc.stdin.write('quit\n')
      self.proc.stdin.flush()
    except (BrokenPipeError, ValueError):
      pass
    self.proc.wait(timeout=60)


def parse_variants(text):
  out = []
  for item in text.split(';'):
    name, rest = item.split('=', 1)
    parts = rest.split('/', 2)
    conv, deconv = parts[0], parts[1]
    flags = parts[2] if len(parts) > 2 else ''
    out.append((name, conv, deconv, flags))
  return out


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument('--batches', default='64,128,256')
  p.add_argument('--variants', default=DEFAULT_VARIANTS)
  p.add_argument('--torch-modes', default='eager,compiled')
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--steps-per-call', type=int, default=5)
  p.add_argument('--cpus', default='', help='taskset CPU list for every worker (e.g. 0)')
  p.add_argument('--profile', action='store_true', help='jax.profiler op breakdown per variant')
  p.add_argument('--json', default='')
  p.add_argument('--worker', default='')
  args = p.parse_args(argv)
  if args.worker:
    return worker_main(args.worker)

  variants = parse_variants(args.variants)
  report = {'argv': sys.argv, 'load_start': os.getloadavg(), 'batches': {}}
  print(f'load {os.getloadavg()}', flush=True)
  for batch in [int(b) for b in args.batches.split(',')]:
    workers = []
    for name, conv, deconv, flags in variants:
      workers.append(Worker(name, {'kind': 'jax', 'batch': batch, 'conv': conv,
                                   'deconv': deconv, 'xla_flags': flags,
                                   'steps_per_call': args.steps_per_call,
                                   'profile': args.profile, 'cpus': args.cpus}))
    for mode in [m for m in args.torch_modes.split(',') if m]:
      workers.append(Worker(f'torch_{mode}', {'kind': 'torch', 'batch': batch, 'mode': mode,
                                              'threads': args.threads, 'cpus': args.cpus,
                                              'steps_per_call': args.steps_per_call}))
    # Build one at a time would be fairer for compile times; they are not what we time.
    for w in workers:
      w.wait_ready()
    samples = {w.name: [] for w in workers}
    mm = {w.name: [] for w in workers}
    loads = []
    for r in range(args.rounds):
      order = workers[r % len(workers):] + workers[:r % len(workers)]
      for w in order:
        samples[w.name].append(w.ask('step') / w.spec['steps_per_call'])
        if w.spec['kind'] == 'jax':
          mm[w.name].append(2 * 2048 ** 3 / w.ask('matmul') / 1e9)
      loads.append(os.getloadavg()[0])
    for w in workers:
      w.close()
    torch_names = [w.name for w in workers if w.spec['kind'] == 'torch']
    best_torch = [min(samples[n][r] for n in torch_names) for r in range(args.rounds)] \
        if torch_names else None
    today = samples.get('before')
    rows = {}
    print(f'\nbatch {batch}: median load {_median(loads):.2f} (1-min avg per round)', flush=True)
    for w in workers:
      s = samples[w.name]
      row = {'ms_per_step': 1e3 * _median(s), 'examples_per_s': batch / _median(s),
             'rounds_ms': [1e3 * x for x in s], **(w.info or {})}
      if best_torch:
        row['vs_best_torch'] = _median([b / x for b, x in zip(best_torch, s)])
      if today:
        row['vs_before'] = _median([t / x for t, x in zip(today, s)])
      if w.spec['kind'] == 'jax':
        gf = [row['flops_per_step'] / x / 1e9 for x in s]
        row['gflops'] = _median(gf)
        row['matmul_gflops'] = _median(mm[w.name])
        row['matmul_fraction'] = _median([g / m for g, m in zip(gf, mm[w.name])])
      rows[w.name] = row
      prof = row.get('profile', {}).get('categories_fraction')
      print(f'  {w.name:14s} {row["ms_per_step"]:8.1f} ms/step {row["examples_per_s"]:7.0f} ex/s'
            f'  vs best torch x{row.get("vs_best_torch", float("nan")):.2f}'
            f'  vs before x{row.get("vs_before", float("nan")):.2f}'
            + (f'  {100 * row["matmul_fraction"]:.0f}% of matmul ({row["matmul_gflops"]:.0f} GF/s)'
               if 'matmul_fraction' in row else '')
            + (f'  compile {row["compile_s"]:.1f}s' if 'compile_s' in row else '')
            + ('' if row.get('finite', True) else '  NON-FINITE'), flush=True)
      if prof:
        print('      profile: ' + ', '.join(f'{k} {100 * v:.0f}%' for k, v in prof.items()))
        print('      top ops: ' + ', '.join(f'{k} {v:.1f}ms' for k, v in
                                           row['profile']['top_ops_ms_per_step'][:10]))
    report['batches'][str(batch)] = {'rows': rows, 'loads': loads}
  report['load_end'] = os.getloadavg()
  if args.json:
    Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()
