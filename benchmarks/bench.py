#!/usr/bin/env python
"""Speed of the VMI-VAE train step and evaluation on this machine, in one run.

  python benchmarks/bench.py                      # full run (~15 min on 2 cores)
  python benchmarks/bench.py --tiny               # seconds: checks that the script works
  python benchmarks/bench.py --sections=steps --archs=mlp --devices=1 --batches=256

Measures (each group in its own subprocess, so ``ru_maxrss`` is that group's peak):

* ``steps``: examples/s of the jitted train chunk (``train_step.make_train_chunk``: a
  lax.scan over steps, Python once per chunk) for the step kinds

    - ``mi``: the MI step (lambda = 10, Q update + MI term; the joint MNIST setting),
    - ``elbo``: lambda = 0 with Q still trained (the repo's ELBO-only baseline),
    - ``elbo_noq``: no MI targets at all, Q skipped (the purest ELBO step),

  for the MLP (784-512-512, mirror decoder, Q 784-512-512) and the authors' conv
  architecture (k4 s2 convs 64/128, BatchNorm, LeakyReLU 0.2, Linear 512,
  transpose-conv decoder), batch sizes 64/128/256, on 1 device and on 8 forced host
  devices; compile time; XLA's memory estimate and the process's peak RSS; the XLA
  cost-analysis FLOPs of one step and the achieved FLOP/s as a fraction of a float32
  matmul (2048^3 and 4096^3 ``jnp.dot``) timed in the same rounds of the same process.
* ``torch``: the same networks and step written plainly in PyTorch
  (``benchmarks/torch_models.py``), eager and ``torch.compile``, threads = cores.
* ``eval``: the importance-weighted log-likelihood (``evaluation.iwae_log_likelihood``,
  k = 5000, test set) and the fresh-Q MI bound (``evaluation.fresh_q_mi_bound``) of the
  MLP model.

The machine is shared: every timing is repeated in interleaved rounds (each round
times every configuration once, and the matmul baseline) and the median over rounds
is reported (the best round too). FLOP/s fractions are medians of per-round ratios
(step / matmul of the same round), which cancels part of the background load.

Writes ``<out>.json`` (everything, including the raw per-round times) and ``<out>.md``
(the readable tables); ``--out`` defaults to ``benchmarks/results/latest``.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

ARCHS = ('mlp', 'conv')
KINDS = ('elbo_noq', 'elbo', 'mi')
KIND_LABELS = {
    'elbo_noq': 'ELBO, no Q (purest)',
    'elbo': 'ELBO, lambda=0 (Q trained)',
    'mi': 'MI step (lambda=10)',
}
ARCH_LABELS = {'mlp': 'MLP 784-512-512', 'conv': "conv (authors')"}
# Steps per timed call (one jitted chunk = one lax.scan of this many steps); the
# trainer's default chunk is 100 steps. Conv steps are ~30x dearer (so fewer per call,
# and fewer rounds: --conv-rounds).
STEPS_PER_CALL = {'mlp': 100, 'conv': 5}
MI_WEIGHT = 10.0
TRAIN_EXAMPLES = 60_000
TEST_EXAMPLES = 10_000

# Targets of the benchmark issue.
TARGET_MATMUL_FRACTION = 0.60
TARGET_MI_OVER_ELBO = 1.6
TARGET_VS_TORCH = 1.5
TARGET_IWAE_SECONDS = 300.0


# ----------------------------------------------------------------------------------
# Helpers shared by the workers.


def _maxrss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _loadavg() -> list[float] | None:
  try:
    return [float(v) for v in Path('/proc/loadavg').read_text().split()[:3]]
  except OSError:
    return None


def _median(xs):
  return float(statistics.median(xs)) if xs else float('nan')


def load_images(split: str, n: int, data_dir: str):
  """uint8 [n, 28, 28, 1] MNIST images, or random ones when no data set is found."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax import data  # pylint: disable=g-import-not-at-top
  for d in [data_dir, os.environ.get(data.DATA_DIR_ENV, ''), str(ROOT.parent / 'shared' / 'datasets')]:
    if not d or not Path(d).is_dir():
      continue
    try:
      images = data.load_split('mnist', split, data_dir=d).images
      reps = -(-n // len(images))
      return np.concatenate([images] * reps)[:n], f'mnist-{split} ({d})'
    except (data.DataError, OSError, ValueError):
      continue
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), 'random uint8 (no MNIST found)'


def make_config(arch: str, kind: str, batch_size: int):
  """The benchmarked config: the joint MNIST setting (16 Gaussian + one 10-way code)."""
  from vmivae_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.joint_config('mnist')
  c.batch_size = batch_size
  c.mi_weight = MI_WEIGHT if kind == 'mi' else 0.0
  if kind == 'elbo_noq':
    c.mi.gaussian_indices = ()
    c.mi.categorical_indices = ()
  if arch == 'conv':
    # The authors' architecture (config_lib.authors_config), with our objective.
    c.model.update(family='conv', encoder_hidden=(512,), decoder_hidden=(512,),
                   q_hidden=(512,), encoder_channels=(64, 128), decoder_channels=(128, 64),
                   q_channels=(64, 128), norm='batch', activation='leaky_relu')
  elif arch != 'mlp':
    raise ValueError(arch)
  return c


def _tiny_config(c):
  """--tiny: the same code paths with small layers (the run only checks the script)."""
  m = c.model
  m.encoder_hidden = m.decoder_hidden = m.q_hidden = (32,) if m.family == 'mlp' else (16,)
  m.encoder_channels = m.q_channels = (4, 8)
  m.decoder_channels = (8, 4)
  return c


class Rounds:
  """Interleaved timing: each round times every registered callable once."""

  def __init__(self):
    self.items = {}   # name -> (fn, samples)

  def add(self, name, fn):
    self.items[name] = (fn, [])

  def run(self, rounds: int):
    names = list(self.items)
    for r in range(rounds):
      # Rotate the order so that no configuration always follows the same one.
      order = names[r % len(names):] + names[:r % len(names)] if names else []
      for name in order:
        fn, samples = self.items[name]
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return {name: samples for name, (_, samples) in self.items.items()}


def jax_matmul(n: int):
  """A jitted float32 [n, n] @ [n, n]; returns (fn, flops)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ka, kb = jax.random.split(jax.random.PRNGKey(n))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  return (lambda: f(a, b).block_until_ready()), 2.0 * n ** 3


def _profile_chunk(compiled, call, num_steps: int, logdir: str) -> dict:
  """Op-time breakdown of one chunk call (``call()``) from a jax.profiler (perfetto) trace."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  hlo = compiled.as_text()
  t = time.perf_counter()
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    call()
  wall = time.perf_counter() - t
  files = glob.glob(os.path.join(logdir, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    return {'error': 'no perfetto trace written'}
  with gzip.open(files[0]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for e in events:
    name = e.get('name', '')
    if e.get('ph') != 'X' or name.startswith(('$', 'Thunk', 'Pjit', 'Common', 'end:', 'Slinky')):
      continue
    per_op[name] += e.get('dur', 0.0)

  def category(name):
    line = next((l for l in hlo.split('\n') if f'%{name} =' in l), '')
    if name.startswith(('dot', 'ynn_fusion', 'xnn_fusion', 'onednn')) or ' dot(' in line:
      return 'matmul'
    if name.startswith('convolution') or 'convolution(' in line:
      return 'convolution'
    if name.startswith(('all-reduce', 'all-gather', 'reduce-scatter', 'collective')):
      return 'collectives'
    if name.startswith(('sort', 'rng', 'threefry')) or 'threefry' in line:
      return 'rng/sort'
    if name.startswith(('copy', 'transpose', 'concatenate', 'pad', 'slice', 'dynamic')):
      return 'data movement'
    if name.startswith('while') or name.startswith('conditional') or name.startswith('call'):
      return 'control'
    return 'elementwise/reduce fusions'

  categories = collections.Counter()
  for name, us in per_op.items():
    categories[category(name)] += us
  total = sum(categories.values())
  return {
      'wall_ms_per_step': 1e3 * wall / num_steps,
      'op_ms_per_step_summed_over_threads': total / 1e3 / num_steps,
      'categories_ms_per_step': {k: v / 1e3 / num_steps for k, v in categories.most_common()},
      'categories_fraction': {k: v / total for k, v in categories.most_common()} if total else {},
      'top_ops_ms_per_step': [(k, v / 1e3 / num_steps) for k, v in per_op.most_common(15)],
  }


# ----------------------------------------------------------------------------------
# Worker: JAX train step.


def jax_steps_worker(spec: dict) -> dict:
  devices = int(spec['devices'])
  import jax  # pylint: disable=g-import-not-at-top
  if devices > 1:
    jax.config.update('jax_num_cpu_devices', devices)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax import parallel  # pylint: disable=g-import-not-at-top
  from vmivae_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from vmivae_jax import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax import validation  # pylint: disable=g-import-not-at-top

  tiny = spec['tiny']
  arch = spec['arch']
  num_examples = spec['train_examples']
  images_np, source = load_images('train', num_examples, spec['data_dir'])
  mesh = parallel.make_mesh(devices)
  mesh1 = parallel.make_mesh(1)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  out = {'arch': arch, 'devices': devices, 'data': source, 'jax': jax.__version__,
         'backend_devices': len(jax.devices()), 'configs': [],
         'load_before': _loadavg(), 'rss_after_data_mib': _maxrss_mib()}
  rounds = Rounds()
  entries = {}
  num_steps = spec['steps_per_call']
  # Smallest batch first, so each config's cumulative peak RSS is ~its own peak.
  for batch in spec['batches']:
    for kind in spec['kinds']:
      config = make_config(arch, kind, batch)
      if tiny:
        config = _tiny_config(config)
      validation.validate(config, num_devices=devices, check_paths=False)
      run = build.build_run(config, num_train_examples=num_examples)
      cfg = run.step_statics
      state = parallel.replicate(run.initial_state(), mesh)
      keys = parallel.replicate((run.keys['step'], run.keys['data']), mesh)
      fn = train_step_lib.make_train_chunk(cfg, mesh, num_steps)
      t0 = time.perf_counter()
      lowered = fn.lower(state, images, *keys)
      t1 = time.perf_counter()
      compiled = lowered.compile()
      t2 = time.perf_counter()
      state, metrics = compiled(state, images, *keys)
      jax.block_until_ready((state, metrics))
      t3 = time.perf_counter()
      flops_per_step = _step_flops(train_step_lib, cfg, mesh1, run, images_np)
      mem = compiled.memory_analysis()
      name = f'{arch}/{kind}/{batch}'
      entry = {
          'arch': arch, 'kind': kind, 'batch': batch, 'devices': devices,
          'steps_per_call': num_steps,
          'lower_s': t1 - t0, 'compile_s': t2 - t1, 'first_call_s': t3 - t2,
          'flops_per_step': flops_per_step,
          'flops_per_example': flops_per_step / batch,
          'xla_memory_bytes': None if mem is None else {
              'argument': mem.argument_size_in_bytes, 'output': mem.output_size_in_bytes,
              'alias': mem.alias_size_in_bytes, 'temp': mem.temp_size_in_bytes},
          'peak_rss_mib_cumulative': _maxrss_mib(),
          'finite': bool(all(np.isfinite(np.asarray(v)).all() for v in metrics.values())),
      }
      entries[name] = entry
      holder = {'state': state}

      def call(compiled=compiled, holder=holder, keys=keys):
        holder['state'], m = compiled(holder['state'], images, *keys)
        jax.block_until_ready((holder['state'], m))

      rounds.add(name, call)
      if spec.get('profile') and kind in spec['profile_kinds'] and batch == max(spec['batches']):
        call()
        entry['profile'] = _profile_chunk(compiled, call, num_steps,
                                          tempfile.mkdtemp(prefix='vmivae_prof_'))

  for n in spec['matmul_sizes']:
    fn_mm, flops = jax_matmul(n)
    rounds.add(f'matmul/{n}', fn_mm)
    out.setdefault('matmul_flops', {})[str(n)] = flops
  out['rss_after_compile_mib'] = _maxrss_mib()
  samples = rounds.run(spec['rounds'])
  mm_gflops = {n: [out['matmul_flops'][str(n)] / s / 1e9 for s in samples[f'matmul/{n}']]
               for n in spec['matmul_sizes']}
  out['matmul_gflops'] = {str(n): {'median': _median(v), 'best': max(v), 'rounds': v}
                          for n, v in mm_gflops.items()}
  peak_per_round = [max(mm_gflops[n][r] for n in spec['matmul_sizes'])
                    for r in range(spec['rounds'])]
  for name, entry in entries.items():
    times = samples[name]
    per_step = [t / num_steps for t in times]
    b = entry['batch']
    gflops = [entry['flops_per_step'] / s / 1e9 for s in per_step]
    entry.update({
        'step_ms_rounds': [1e3 * s for s in per_step],
        'step_ms': 1e3 * _median(per_step),
        'examples_per_s': b / _median(per_step),
        'examples_per_s_best': b / min(per_step),
        'gflops': _median(gflops),
        'matmul_fraction': _median([g / p for g, p in zip(gflops, peak_per_round)]),
    })
    out['configs'].append(entry)
  out['dispatch'] = _dispatch_check(spec, jax, train_step_lib, parallel, build, images, mesh,
                                    num_examples) if spec.get('dispatch') else None
  out['load_after'] = _loadavg()
  out['peak_rss_mib'] = _maxrss_mib()
  return out


def _step_flops(train_step_lib, cfg, mesh1, run, images_np) -> float:
  """XLA cost-analysis FLOPs of one train step of the global batch (1-device program)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  fn = train_step_lib.make_train_chunk(cfg, mesh1, 1)
  abstract = jax.eval_shape(run.initial_state)
  images = jax.ShapeDtypeStruct(images_np.shape, jnp.uint8)
  key = jax.ShapeDtypeStruct(run.keys['step'].shape, run.keys['step'].dtype)
  cost = fn.lower(abstract, images, key, key).cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def _dispatch_check(spec, jax, train_step_lib, parallel, build, images, mesh, num_examples):
  """Per-step time of N one-step chunks called from Python vs one N-step chunk."""
  from vmivae_jax import validation  # pylint: disable=g-import-not-at-top
  arch, batch, kind = spec['arch'], min(spec['batches']), 'mi'
  config = make_config(arch, kind, batch)
  if spec['tiny']:
    config = _tiny_config(config)
  validation.validate(config, num_devices=mesh.shape[parallel.DATA_AXIS], check_paths=False)
  run = build.build_run(config, num_train_examples=num_examples)
  n = spec['steps_per_call']
  keys = parallel.replicate((run.keys['step'], run.keys['data']), mesh)
  one = train_step_lib.make_train_chunk(run.step_statics, mesh, 1)
  many = train_step_lib.make_train_chunk(run.step_statics, mesh, n)
  state = parallel.replicate(run.initial_state(), mesh)
  state, _ = one(state, images, *keys)
  state, _ = many(state, images, *keys)
  jax.block_until_ready(state)
  loop, scan = [], []
  for _ in range(spec['rounds']):
    t = time.perf_counter()
    for _ in range(n):
      state, m = one(state, images, *keys)
    jax.block_until_ready((state, m))
    loop.append((time.perf_counter() - t) / n)
    t = time.perf_counter()
    state, m = many(state, images, *keys)
    jax.block_until_ready((state, m))
    scan.append((time.perf_counter() - t) / n)
  return {'arch': arch, 'kind': kind, 'batch': batch, 'steps': n,
          'python_loop_step_ms': 1e3 * _median(loop), 'scan_chunk_step_ms': 1e3 * _median(scan),
          'note': ('python_loop: one jitted 1-step chunk per step called from Python; '
                   'scan_chunk: the trainer path, one call per chunk of steps (lax.scan) '
                   'on the on-device data set')}


# ----------------------------------------------------------------------------------
# Worker: PyTorch train step.


def torch_worker(spec: dict) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(HERE))
  import torch_models  # pylint: disable=g-import-not-at-top
  threads = int(spec['threads'])
  torch.set_num_threads(threads)
  arch = spec['arch']
  images_np, source = load_images('train', spec['train_examples'], spec['data_dir'])
  out = {'arch': arch, 'torch': torch.__version__, 'threads': threads, 'data': source,
         'configs': [], 'load_before': _loadavg()}
  rounds = Rounds()
  entries = {}
  num_steps = spec['steps_per_call']
  for batch in spec['batches']:
    for kind in spec['kinds']:
      for mode in spec['torch_modes']:
        name = f'{arch}/{kind}/{batch}/{mode}'
        t = time.perf_counter()
        try:
          tr = torch_models.Trainer(arch, kind, batch, images_np, compiled=(mode == 'compiled'),
                                    mi_weight=MI_WEIGHT)
          tr.run(2)  # compiles (torch.compile is lazy) and warms up
        except Exception as e:  # pylint: disable=broad-except
          entries[name] = {'arch': arch, 'kind': kind, 'batch': batch, 'mode': mode,
                           'error': f'{type(e).__name__}: {e}'[:500]}
          continue
        first = time.perf_counter() - t
        # Steps per timed call: the JAX count, fewer if a step is slow (on a loaded
        # machine multi-threaded torch can take seconds per step), so a call is ~<= 2 s.
        t = time.perf_counter()
        tr.run(1)
        one_step = time.perf_counter() - t
        steps_here = max(1, min(num_steps, int(spec.get('torch_call_seconds', 2.0) / one_step)))
        entries[name] = {'arch': arch, 'kind': kind, 'batch': batch, 'mode': mode,
                         'first_two_steps_s': first, 'steps_per_call': steps_here,
                         'peak_rss_mib_cumulative': _maxrss_mib()}
        rounds.add(name, lambda tr=tr, n=steps_here: tr.run(n))
  a = torch.randn(spec['matmul_sizes'][0], spec['matmul_sizes'][0])
  a @ a
  rounds.add('matmul', lambda: a @ a)
  samples = rounds.run(spec['rounds'])
  n = spec['matmul_sizes'][0]
  mm = [2.0 * n ** 3 / s / 1e9 for s in samples['matmul']]
  out['matmul_gflops'] = {str(n): {'median': _median(mm), 'best': max(mm), 'rounds': mm}}
  for name, entry in entries.items():
    if 'error' not in entry:
      per_step = [s / entry['steps_per_call'] for s in samples[name]]
      entry.update(step_ms_rounds=[1e3 * s for s in per_step], step_ms=1e3 * _median(per_step),
                   examples_per_s=entry['batch'] / _median(per_step),
                   examples_per_s_best=entry['batch'] / min(per_step))
    out['configs'].append(entry)
  out['load_after'] = _loadavg()
  out['peak_rss_mib'] = _maxrss_mib()
  return out


# ----------------------------------------------------------------------------------
# Worker: evaluation cost.


def eval_worker(spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax import build  # pylint: disable=g-import-not-at-top
  out = {'load_before': _loadavg()}
  try:
    from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {'error': f'vmivae_jax.evaluation not importable: {e}'}
  config = make_config('mlp', 'mi', 256)
  if spec['tiny']:
    config = _tiny_config(config)
  run = build.build_run(config, num_train_examples=TRAIN_EXAMPLES)
  state = run.initial_state()
  vae_vars = {'params': state.vae_params, **state.vae_state}
  model = run.model
  test_np, source = load_images('test', spec['iwae_images'], spec['data_dir'])
  out['data'] = source
  k, chunk, batch = spec['iwae_samples'], spec['iwae_chunk'], spec['iwae_batch']
  key = jax.random.PRNGKey(0)
  # Compile on one batch (the jitted batch function compiles once for all batches).
  t = time.perf_counter()
  evaluation.iwae_log_likelihood(model, vae_vars, test_np[:batch], num_samples=k, chunk=chunk,
                               key=key, batch_size=batch)
  first = time.perf_counter() - t
  t = time.perf_counter()
  ll = evaluation.iwae_log_likelihood(model, vae_vars, test_np, num_samples=k, chunk=chunk,
                                    key=key, batch_size=batch)
  seconds = time.perf_counter() - t
  n = len(test_np)
  decoder_flops = _decoder_flops_per_sample(config)
  iwae = {
      'model': 'mlp', 'num_samples': k, 'chunk': chunk, 'batch_size': batch,
      'images_timed': n, 'seconds': seconds, 'first_batch_with_compile_s': first,
      'seconds_for_10000': seconds * TEST_EXAMPLES / n,
      'extrapolated': n != TEST_EXAMPLES,
      'decoder_matmul_flops_per_sample': decoder_flops,
      'decoder_gflops': decoder_flops * k * n / seconds / 1e9,
      'mean_log_likelihood_untrained': float(np.mean(ll)),
      'note': ('untrained (initial) parameters: the cost does not depend on the values; '
               + ('timed on %d test images and scaled linearly to 10,000 (the work is '
                  'exactly linear in the number of images)' % n if n != TEST_EXAMPLES
                  else 'timed on all 10,000 test images')),
  }
  mm, flops = jax_matmul(2048)
  mm_rates = []
  for _ in range(3):
    t = time.perf_counter()
    mm()
    mm_rates.append(flops / (time.perf_counter() - t) / 1e9)
  iwae['matmul_2048_gflops_same_process'] = _median(mm_rates)
  iwae['matmul_fraction'] = iwae['decoder_gflops'] / iwae['matmul_2048_gflops_same_process']
  out['iwae'] = iwae

  train_np, _ = load_images('train', spec['train_examples'], spec['data_dir'])
  q_steps = spec['q_steps']
  q_kwargs = dict(batch_size=256, learning_rate=1e-3, temperature=1.0)
  t = time.perf_counter()
  q_vars, _ = evaluation.train_fresh_q(model, vae_vars, train_np, steps=q_steps,
                                     key=jax.random.PRNGKey(1), **q_kwargs)
  jax.block_until_ready(q_vars)
  first_train = time.perf_counter() - t
  t = time.perf_counter()
  q_vars, _ = evaluation.train_fresh_q(model, vae_vars, train_np, steps=q_steps,
                                     key=jax.random.PRNGKey(2), **q_kwargs)
  jax.block_until_ready(q_vars)
  train_s = time.perf_counter() - t
  bound_kwargs = dict(key=jax.random.PRNGKey(3), temperature=1.0, batch_size=500)
  evaluation.mi_bounds(model, vae_vars, {'fresh': q_vars}, test_np[:500], **bound_kwargs)
  test_all, _ = load_images('test', TEST_EXAMPLES if not spec['tiny'] else 1000, spec['data_dir'])
  t = time.perf_counter()
  evaluation.mi_bounds(model, vae_vars, {'fresh': q_vars}, test_all, **bound_kwargs)
  bound_s = time.perf_counter() - t
  full_steps = spec['q_full_steps']
  out['fresh_q'] = {
      'model': 'mlp', 'batch_size': 256, 'steps_timed': q_steps,
      'train_step_ms': 1e3 * train_s / q_steps,
      'train_first_call_with_compile_s': first_train,
      'bound_on_test_s': bound_s, 'test_images': len(test_all),
      'config_steps': full_steps,
      'seconds_for_config_steps': train_s * full_steps / q_steps + bound_s,
      'extrapolated': q_steps != full_steps,
      'note': (f'Q trained {q_steps} steps (timed after a compiling call), scaled to the '
               f'eval config\'s {full_steps} steps; plus the bound on the test set'),
  }
  out['load_after'] = _loadavg()
  out['peak_rss_mib'] = _maxrss_mib()
  return out


def _decoder_flops_per_sample(config) -> float:
  """Matmul FLOPs of one MLP decoder pass (code -> hidden -> 784 logits)."""
  widths = [int(config.latent.gaussian_dims) + sum(config.latent.categorical_sizes)]
  widths += list(config.model.decoder_hidden) + [784]
  return float(sum(2 * a * b for a, b in zip(widths[:-1], widths[1:])))


# ----------------------------------------------------------------------------------
# The parent: runs the workers, joins the results, writes JSON and Markdown.


def _run_worker(kind: str, spec: dict, log) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    result = Path(tmp) / 'result.json'
    cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', kind,
           '--spec', json.dumps(spec), '--result', str(result)]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not result.exists():
      log(f'  worker {kind} {spec.get("arch", "")} failed (exit {proc.returncode})')
      return {'error': f'exit {proc.returncode}', 'stderr_tail': proc.stderr[-3000:],
              'wall_s': wall, 'spec': spec}
    out = json.loads(result.read_text())
    out['wall_s'] = wall
    out['spec'] = spec
    return out


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


def _cpu_name() -> str:
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--tiny', action='store_true',
                 help='smoke run (checks the script works): tiny layers, MLP, batch 64, '
                      '1 device, 1 round, torch eager, a few IWAE samples')
  p.add_argument('--sections', default='steps,torch,eval', help='steps,torch,eval')
  p.add_argument('--archs', default='mlp,conv')
  p.add_argument('--kinds', default=','.join(KINDS))
  p.add_argument('--batches', default='64,128,256')
  p.add_argument('--devices', default='1,8', help='device counts for the JAX step (forced host devices)')
  p.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds (median reported)')
  p.add_argument('--conv-rounds', type=int, default=3, help='rounds for the (slow) conv model')
  p.add_argument('--torch-modes', default='eager,compiled')
  p.add_argument('--torch-threads', type=int, default=os.cpu_count() or 1,
                 help='torch threads (default: the core count)')
  p.add_argument('--torch-one-thread', default='eager',
                 help='torch modes also timed with 1 thread ("" for none): on a loaded machine '
                      'OpenMP barriers make multi-threaded torch pathologically slow, and the '
                      'comparison uses the best torch variant')
  p.add_argument('--iwae-images', type=int, default=500,
                 help='test images timed for the IWAE (scaled to 10,000 when fewer)')
  p.add_argument('--iwae-samples', type=int, default=5000)
  p.add_argument('--iwae-chunk', type=int, default=100)
  p.add_argument('--iwae-batch', type=int, default=100)
  p.add_argument('--q-steps', type=int, default=300, help='fresh-Q training steps timed')
  p.add_argument('--profile', action='store_true',
                 help='also record a jax.profiler op breakdown of the batch-256 steps')
  p.add_argument('--data-dir', default='', help='MNIST IDX directory (default: $VMIVAE_DATA_DIR)')
  p.add_argument('--out', default=str(HERE / 'results' / 'latest'),
                 help='output path without extension (.json and .md are written)')
  p.add_argument('--render', default='',
                 help='re-summarise an existing results JSON (no measurement) and rewrite its .md')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)
  p.add_argument('--spec', default='', help=argparse.SUPPRESS)
  p.add_argument('--result', default='', help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    spec = json.loads(args.spec)
    fn = {'jax': jax_steps_worker, 'torch': torch_worker, 'eval': eval_worker}[args.worker]
    out = fn(spec)
    out['worker'] = args.worker
    Path(args.result).write_text(json.dumps(out))
    return 0

  if args.render:
    path = Path(args.render)
    results = json.loads(path.read_text())
    results['summary'] = summarise(results)
    path.write_text(json.dumps(results, indent=1))
    md = to_markdown(results)
    path.with_suffix('.md').write_text(md)
    print(md)
    return 0
  start = time.perf_counter()
  sections = [s for s in args.sections.split(',') if s]
  archs = [a for a in args.archs.split(',') if a]
  kinds = [k for k in args.kinds.split(',') if k]
  batches = sorted(int(b) for b in args.batches.split(',') if b)
  devices = [int(d) for d in args.devices.split(',') if d]
  rounds = args.rounds
  matmul_sizes = [2048, 4096]
  train_examples = TRAIN_EXAMPLES
  iwae = dict(iwae_images=args.iwae_images, iwae_samples=args.iwae_samples,
              iwae_chunk=args.iwae_chunk, iwae_batch=args.iwae_batch,
              q_steps=args.q_steps, q_full_steps=3000)
  conv_rounds = args.conv_rounds
  torch_modes = [m for m in args.torch_modes.split(',') if m]
  one_thread_modes = [m for m in args.torch_one_thread.split(',') if m]
  if args.tiny:
    batches, rounds, conv_rounds, matmul_sizes = [64], 1, 1, [256]
    if args.devices == '1,8':
      devices = [1]
    train_examples = 1024
    if args.archs == 'mlp,conv':
      archs = ['mlp']
    if args.kinds == ','.join(KINDS):
      kinds = ['elbo', 'mi']
    torch_modes, one_thread_modes = ['eager'], []
    iwae = dict(iwae_images=20, iwae_samples=8, iwae_chunk=4, iwae_batch=10, q_steps=3,
                q_full_steps=3)
  log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
  common = dict(tiny=args.tiny, data_dir=args.data_dir, train_examples=train_examples,
                rounds=rounds, batches=batches, kinds=kinds, matmul_sizes=matmul_sizes)
  workers = []
  if 'steps' in sections:
    for d in devices:
      for arch in archs:
        log(f'JAX train step: {arch}, {d} device(s) ...')
        spec = dict(common, worker='jax', arch=arch, devices=d,
                    # 8 host devices on 2 cores are slow: fewer rounds there too.
                    rounds=rounds if (arch == 'mlp' and d == 1) else min(rounds, conv_rounds),
                    steps_per_call=2 if args.tiny else STEPS_PER_CALL[arch],
                    dispatch=(arch == archs[0] and d == 1), profile=args.profile,
                    profile_kinds=['elbo', 'mi', 'elbo_noq'])
        workers.append(_run_worker('jax', spec, log))
  if 'torch' in sections:
    try:
      import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      have_torch = True
    except ImportError:
      have_torch = False
      log('PyTorch not installed: skipping the torch section (pip install torch==2.13.0)')
    if have_torch:
      variants = [(args.torch_threads, torch_modes)]
      if one_thread_modes and args.torch_threads != 1:
        variants.append((1, one_thread_modes))
      for arch in archs:
        for threads, modes in variants:
          log(f'PyTorch train step: {arch}, {threads} thread(s), {"/".join(modes)} ...')
          spec = dict(common, worker='torch', arch=arch, threads=threads,
                      rounds=rounds if arch == 'mlp' else conv_rounds,
                      steps_per_call=2 if args.tiny else STEPS_PER_CALL[arch],
                      torch_modes=modes, matmul_sizes=[256] if args.tiny else [2048])
          workers.append(_run_worker('torch', spec, log))
  if 'eval' in sections:
    log('Evaluation cost (IWAE, fresh-Q MI bound) ...')
    workers.append(_run_worker('eval', dict(common, worker='eval', **iwae), log))
  for w in workers:
    w.setdefault('worker', w.get('spec', {}).get('worker'))

  import jax  # pylint: disable=g-import-not-at-top
  meta = {
      'date': time.strftime('%Y-%m-%d %H:%M:%S'),
      'command': ' '.join(['python', 'benchmarks/bench.py'] + (argv if argv is not None else sys.argv[1:])),
      'cpu': _cpu_name(), 'cores': os.cpu_count(), 'python': platform.python_version(),
      'jax': jax.__version__, 'rounds': rounds, 'conv_rounds': conv_rounds, 'tiny': args.tiny,
      'torch_threads_main': args.torch_threads,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_start': None, 'load_end': _loadavg(), 'wall_s': time.perf_counter() - start,
  }
  loads = [w.get('load_before') for w in workers if w.get('load_before')]
  meta['load_start'] = loads[0] if loads else None
  try:
    import torch  # pylint: disable=g-import-not-at-top
    meta['torch'] = torch.__version__
  except ImportError:
    meta['torch'] = None
  results = {'meta': meta, 'workers': workers}
  results['summary'] = summarise(results)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(results, indent=1))
  md = to_markdown(results)
  out.with_suffix('.md').write_text(md)
  print(md)
  return 1 if any(w.get('error') for w in workers) else 0


if __name__ == '__main__':
  sys.exit(main())
