"""Seconds per train step of the 64x64 dlib_conv model at batch 64, against the MNIST conv
step in the same process, a 2-member sweep's step against a plain one (members looped,
as the trainer runs them on CPU, and vmapped), and the steps with the networks' 1-channel
ends as XLA convolutions against conv_ops' patch matrices (the CPU default).

  PYTHONPATH=. python benchmarks/dlib_conv_step.py [--rounds 5] [--steps 5] [--out FILE]

Random data (no dataset needed): bit-packed 64x64 images for dSprites, uint8 28x28 for
MNIST. One device; each setting is compiled once, then timed in interleaved rounds of
``--steps`` steps (one jitted chunk, as the trainer runs), so a load change on a shared
machine hits every setting alike. Prints a table and, with --out, writes JSON.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from vmivae_jax.model import conv_ops  # noqa: E402

conv_ops.apply_cpu_xla_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vmivae_jax.config import config_lib  # noqa: E402
from vmivae_jax.train import build  # noqa: E402
from vmivae_jax.train import sweep_step  # noqa: E402
from vmivae_jax.train import train_step  # noqa: E402
from vmivae_jax.util import parallel  # noqa: E402

BATCH = 64
NUM_EXAMPLES = 4096


def _config(name: str, overrides=None):
  sys.path.insert(0, str(ROOT / 'configs'))
  if name == 'mnist_conv':   # the authors' conv architecture, as configs/authors_mnist_gauss.py
    config = config_lib.authors_config('mnist', 'gauss')
  else:
    module = __import__(name)
    config = module.get_config()
  config.batch_size = BATCH
  return config_lib.override(config, overrides or {})


PREVIOUS_CONVS = {'model.conv_impl': 'lax_vjp', 'model.deconv_impl': 'adjoint_lax'}
SETTINGS = {   # label -> (config file, overrides); what each is:
    # MNIST, the authors' conv nets (BatchNorm, 64/128 channels), MI on 2 dims (lambda 5e-4)
    'mnist_conv': ('mnist_conv', {}),
    # dSprites dlib_conv, ELBO only and no Q at all (the purest VAE step)
    'dlib_elbo_noq': ('dsprites_beta_vae', {'mi.gaussian_indices': ()}),
    # dSprites dlib_conv beta-VAE config: lambda 0, Q trained on dims 0, 1 for monitoring
    'dlib_beta_vae': ('dsprites_beta_vae', {}),
    # dSprites dlib_conv VMI: lambda 1 on dims 0, 1
    'dlib_vmi': ('dsprites_vmi', {}),
    # The same two steps with the 1-channel image ends (encoder's and Q's first conv, the
    # decoder's last transpose conv) as XLA convolutions: the formulation before
    # conv_ops' patch matrices ('auto' picks those below 4 channels).
    'dlib_elbo_noq_convs': ('dsprites_beta_vae', {'mi.gaussian_indices': (), **PREVIOUS_CONVS}),
    'dlib_vmi_convs': ('dsprites_vmi', PREVIOUS_CONVS),
    'mnist_conv_convs': ('mnist_conv', PREVIOUS_CONVS),
}


def _images(config, rng):
  if config.dataset == 'dsprites':
    return rng.integers(0, 256, (NUM_EXAMPLES, 512), dtype=np.uint8)
  return rng.integers(0, 256, (NUM_EXAMPLES, 28, 28, 1), dtype=np.uint8)


def _plain(config, steps, mesh, rng):
  run = build.build_run(config, num_train_examples=NUM_EXAMPLES)
  chunk = train_step.make_train_chunk(run.step_statics, mesh, steps)
  images = jax.device_put(_images(config, rng))
  state = [run.initial_state()]

  def call():
    state[0], metrics = chunk(state[0], images, run.keys['step'], run.keys['data'])
    jax.block_until_ready(metrics)
    return metrics
  return call


def sweep_call(config, steps, mesh, rng, seeds=(0, 1), members='auto'):
  """A function running one ``steps``-step sweep chunk of ``config`` over ``seeds`` on
  random data (compiled at its first call); returns the chunk's metrics."""
  config.sweep.seed = tuple(seeds)
  run = build.build_sweep(config, num_train_examples=NUM_EXAMPLES)
  chunk = sweep_step.make_sweep_chunk(run.step_statics, mesh, steps, members=members)
  images = jax.device_put(_images(config, rng))
  state = [sweep_step.stack_states([m.initial_state() for m in run.members])]

  def call():
    state[0], metrics = chunk(state[0], images, run.keys('step'), run.keys('data'),
                              run.hparams)
    jax.block_until_ready(metrics)
    return metrics
  return call


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5, help='steps per timed call')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  mesh = parallel.make_mesh(1)
  rng = np.random.default_rng(0)
  calls, compile_s = {}, {}
  for label, (name, overrides) in SETTINGS.items():
    calls[label] = _plain(_config(name, overrides), args.steps, mesh, rng)
  # The trainer's program (members looped on CPU: sweep_step.member_strategy), and the
  # vmapped one it replaced (grouped convolutions).
  calls['dlib_vmi_sweep2'] = sweep_call(_config('dsprites_vmi'), args.steps, mesh, rng)
  calls['dlib_vmi_sweep2_vmap'] = sweep_call(_config('dsprites_vmi'), args.steps, mesh, rng,
                                         members='vmap')
  for label, call in calls.items():
    t0 = time.perf_counter()
    metrics = call()
    compile_s[label] = time.perf_counter() - t0
    assert all(np.all(np.isfinite(v)) for v in jax.device_get(metrics).values()), label
  times = {label: [] for label in calls}
  for _ in range(args.rounds):
    for label, call in calls.items():
      t0 = time.perf_counter()
      call()
      times[label].append((time.perf_counter() - t0) / args.steps)
  step_s = {label: float(np.median(t)) for label, t in times.items()}
  base = step_s['mnist_conv']
  results = {
      'meta': {'batch': BATCH, 'steps_per_call': args.steps, 'rounds': args.rounds,
               'cpu_count': os.cpu_count(), 'loadavg': os.getloadavg(),
               'jax': jax.__version__, 'backend': jax.default_backend(),
               'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
      'step_s': step_s, 'step_s_rounds': times, 'compile_s': compile_s,
      'ratio_to_mnist_conv': {k: v / base for k, v in step_s.items()},
      'sweep2_over_two_plain': step_s['dlib_vmi_sweep2'] / (2 * step_s['dlib_vmi']),
      'sweep2_vmap_over_two_plain': step_s['dlib_vmi_sweep2_vmap'] / (2 * step_s['dlib_vmi']),
      'patches_speedup': {'elbo_noq': step_s['dlib_elbo_noq_convs'] / step_s['dlib_elbo_noq'],
                          'vmi': step_s['dlib_vmi_convs'] / step_s['dlib_vmi'],
                          'mnist_conv': step_s['mnist_conv_convs'] / step_s['mnist_conv']},
  }
  print(f"{'setting':<18} {'s/step':>8} {'x mnist_conv':>13} {'compile s':>10}")
  for label in calls:
    print(f'{label:<18} {step_s[label]:8.4f} {step_s[label] / base:13.2f} '
          f'{compile_s[label]:10.1f}')
  print(f"2-member sweep step / (2 x plain step): {results['sweep2_over_two_plain']:.2f} "
        f"(members looped; vmapped: {results['sweep2_vmap_over_two_plain']:.2f})")
  print('1-channel ends as XLA convolutions / as patch matrices: '
        f"ELBO-only {results['patches_speedup']['elbo_noq']:.2f}x, "
        f"VMI {results['patches_speedup']['vmi']:.2f}x, "
        f"MNIST conv {results['patches_speedup']['mnist_conv']:.2f}x")
  if args.out:
    Path(args.out).write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
  main()
