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
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


if __package__ in (None, ''):  # run as a script: make the repository importable
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402  pylint: disable=g-import-not-at-top
from benchmarks import workers as workers_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from benchmarks.shared import HERE, KINDS, ROOT, STEPS_PER_CALL, TRAIN_EXAMPLES, loadavg  # noqa: E402


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
    fn = workers_lib.WORKERS[args.worker]
    out = fn(spec)
    out['worker'] = args.worker
    Path(args.result).write_text(json.dumps(out))
    return 0

  if args.render:
    path = Path(args.render)
    results = json.loads(path.read_text())
    results['summary'] = report.summarise(results)
    path.write_text(json.dumps(results, indent=1))
    md = report.to_markdown(results)
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
      'cpu': report.cpu_name(), 'cores': os.cpu_count(), 'python': platform.python_version(),
      'jax': jax.__version__, 'rounds': rounds, 'conv_rounds': conv_rounds, 'tiny': args.tiny,
      'torch_threads_main': args.torch_threads,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_start': None, 'load_end': loadavg(), 'wall_s': time.perf_counter() - start,
  }
  loads = [w.get('load_before') for w in workers if w.get('load_before')]
  meta['load_start'] = loads[0] if loads else None
  try:
    import torch  # pylint: disable=g-import-not-at-top
    meta['torch'] = torch.__version__
  except ImportError:
    meta['torch'] = None
  results = {'meta': meta, 'workers': workers}
  results['summary'] = report.summarise(results)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(results, indent=1))
  md = report.to_markdown(results)
  out.with_suffix('.md').write_text(md)
  print(md)
  return 1 if any(w.get('error') for w in workers) else 0


if __name__ == '__main__':
  sys.exit(main())

