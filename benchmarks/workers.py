"""The benchmark's workers, each run in its own process by bench.py (so that the peak RSS
is that group's): the JAX train step, the PyTorch step, the evaluation cost."""

import json
import os
import sys
import tempfile
import time

from benchmarks.shared import HERE, MI_WEIGHT, TEST_EXAMPLES, TRAIN_EXAMPLES, Rounds
from benchmarks.shared import jax_matmul, load_images, loadavg, make_config, maxrss_mib, median
from benchmarks.shared import tiny_config

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
  from vmivae_jax.util import parallel  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax.config import validation  # pylint: disable=g-import-not-at-top

  tiny = spec['tiny']
  arch = spec['arch']
  num_examples = spec['train_examples']
  images_np, source = load_images('train', num_examples, spec['data_dir'])
  mesh = parallel.make_mesh(devices)
  mesh1 = parallel.make_mesh(1)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  out = {'arch': arch, 'devices': devices, 'data': source, 'jax': jax.__version__,
         'backend_devices': len(jax.devices()), 'configs': [],
         'load_before': loadavg(), 'rss_after_data_mib': maxrss_mib()}
  rounds = Rounds()
  entries = {}
  num_steps = spec['steps_per_call']
  # Smallest batch first, so each config's cumulative peak RSS is ~its own peak.
  for batch in spec['batches']:
    for kind in spec['kinds']:
      config = make_config(arch, kind, batch)
      if tiny:
        config = tiny_config(config)
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
          'peak_rss_mib_cumulative': maxrss_mib(),
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
  out['rss_after_compile_mib'] = maxrss_mib()
  samples = rounds.run(spec['rounds'])
  mm_gflops = {n: [out['matmul_flops'][str(n)] / s / 1e9 for s in samples[f'matmul/{n}']]
               for n in spec['matmul_sizes']}
  out['matmul_gflops'] = {str(n): {'median': median(v), 'best': max(v), 'rounds': v}
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
        'step_ms': 1e3 * median(per_step),
        'examples_per_s': b / median(per_step),
        'examples_per_s_best': b / min(per_step),
        'gflops': median(gflops),
        'matmul_fraction': median([g / p for g, p in zip(gflops, peak_per_round)]),
    })
    out['configs'].append(entry)
  out['dispatch'] = _dispatch_check(spec, jax, train_step_lib, parallel, build, images, mesh,
                                    num_examples) if spec.get('dispatch') else None
  out['load_after'] = loadavg()
  out['peak_rss_mib'] = maxrss_mib()
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
  from vmivae_jax.config import validation  # pylint: disable=g-import-not-at-top
  arch, batch, kind = spec['arch'], min(spec['batches']), 'mi'
  config = make_config(arch, kind, batch)
  if spec['tiny']:
    config = tiny_config(config)
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
          'python_loop_step_ms': 1e3 * median(loop), 'scan_chunk_step_ms': 1e3 * median(scan),
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
         'configs': [], 'load_before': loadavg()}
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
                         'peak_rss_mib_cumulative': maxrss_mib()}
        rounds.add(name, lambda tr=tr, n=steps_here: tr.run(n))
  a = torch.randn(spec['matmul_sizes'][0], spec['matmul_sizes'][0])
  a @ a
  rounds.add('matmul', lambda: a @ a)
  samples = rounds.run(spec['rounds'])
  n = spec['matmul_sizes'][0]
  mm = [2.0 * n ** 3 / s / 1e9 for s in samples['matmul']]
  out['matmul_gflops'] = {str(n): {'median': median(mm), 'best': max(mm), 'rounds': mm}}
  for name, entry in entries.items():
    if 'error' not in entry:
      per_step = [s / entry['steps_per_call'] for s in samples[name]]
      entry.update(step_ms_rounds=[1e3 * s for s in per_step], step_ms=1e3 * median(per_step),
                   examples_per_s=entry['batch'] / median(per_step),
                   examples_per_s_best=entry['batch'] / min(per_step))
    out['configs'].append(entry)
  out['load_after'] = loadavg()
  out['peak_rss_mib'] = maxrss_mib()
  return out


# ----------------------------------------------------------------------------------
# Worker: evaluation cost.


def eval_worker(spec: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  out = {'load_before': loadavg()}
  try:
    from vmivae_jax import evaluation  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {'error': f'vmivae_jax.evaluation not importable: {e}'}
  config = make_config('mlp', 'mi', 256)
  if spec['tiny']:
    config = tiny_config(config)
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
  iwae['matmul_2048_gflops_same_process'] = median(mm_rates)
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
  out['load_after'] = loadavg()
  out['peak_rss_mib'] = maxrss_mib()
  return out


def _decoder_flops_per_sample(config) -> float:
  """Matmul FLOPs of one MLP decoder pass (code -> hidden -> 784 logits)."""
  widths = [int(config.latent.gaussian_dims) + sum(config.latent.categorical_sizes)]
  widths += list(config.model.decoder_hidden) + [784]
  return float(sum(2 * a * b for a, b in zip(widths[:-1], widths[1:])))



WORKERS = {'jax': jax_steps_worker, 'torch': torch_worker, 'eval': eval_worker}
