"""Per-layer micro-benchmark: forward + backward (w.r.t. input and kernel) of each strided
4x4 conv / transpose conv of the authors' architecture, every ``vmivae_jax.model.conv_ops``
formulation interleaved with PyTorch's ``conv2d`` / ``conv_transpose2d`` (autograd, NCHW)
in the same process.

    PYTHONPATH=$PWD python benchmarks/conv_layers.py --batches=64,128,256 --rounds=7
    XLA_FLAGS=... PYTHONPATH=$PWD python benchmarks/conv_layers.py ...   # flag trials

Prints one line per (layer, batch, formulation): median ms, ratio to torch's median
(>1 = slower than torch), and the load average; ``--json`` writes every round.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (name, kind, H, C, O): the authors' layers (encoder and Q share conv0/conv1).
LAYERS = (
    ('enc_conv0', 'conv', 28, 1, 64),
    ('enc_conv1', 'conv', 14, 64, 128),
    ('dec_deconv0', 'deconv', 7, 128, 64),
    ('dec_deconv1', 'deconv', 14, 64, 1),
)


def _median(xs):
  s = sorted(xs)
  n = len(s)
  return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument('--batches', default='64,128,256')
  p.add_argument('--layers', default=','.join(l[0] for l in LAYERS))
  p.add_argument('--conv-impls', default='lax,im2col,s2d,s2d_taps,im2col_nchw')
  p.add_argument('--deconv-impls', default='lax,phases,adjoint,adjoint_phases,vjp:im2col,vjp:s2d')
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--target-s', type=float, default=0.15, help='seconds per timed call')
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--no-torch', action='store_true')
  p.add_argument('--json', default='')
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np
  from vmivae_jax.model import conv_ops

  torch = None
  if not args.no_torch:
    import torch
    torch.set_num_threads(args.threads)
    import torch.nn.functional as F

  rng = np.random.default_rng(0)
  batches = [int(b) for b in args.batches.split(',')]
  layers = [l for l in LAYERS if l[0] in args.layers.split(',')]
  results = []
  print(f'jax {jax.__version__} XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r} '
        f'torch {torch.__version__ if torch else None} threads {args.threads} '
        f'load {os.getloadavg()}', flush=True)
  for batch in batches:
    for name, kind, h, c, o in layers:
      x_np = rng.standard_normal((batch, h, h, c)).astype(np.float32)
      k_np = (rng.standard_normal((4, 4, c, o)) / np.sqrt(16 * c)).astype(np.float32)
      ho = h // 2 if kind == 'conv' else 2 * h
      g_np = rng.standard_normal((batch, ho, ho, o)).astype(np.float32)
      x, k, g = jnp.asarray(x_np), jnp.asarray(k_np), jnp.asarray(g_np)
      fns = {}
      impls = (args.conv_impls if kind == 'conv' else args.deconv_impls).split(',')
      for impl in impls:
        op = conv_ops.conv4x4_stride2 if kind == 'conv' else conv_ops.conv_transpose4x4_stride2

        def fwd_bwd(x, k, g, impl=impl, op=op):
          y, vjp = jax.vjp(lambda x, k: op(x, k, impl=impl), x, k)
          return (y,) + vjp(g)

        f = jax.jit(fwd_bwd)
        t = time.perf_counter()
        jax.block_until_ready(f(x, k, g))
        first = time.perf_counter() - t
        if first > 60:
          print(f'  skip {name} {impl}: first call {first:.1f}s', flush=True)
          continue
        fns[impl] = lambda f=f: jax.block_until_ready(f(x, k, g))
      if torch is not None:
        xt = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        gt = torch.from_numpy(g_np.transpose(0, 3, 1, 2).copy())
        if kind == 'conv':
          wt = torch.from_numpy(k_np.transpose(3, 2, 0, 1).copy()).requires_grad_(True)

          def tfn(xt=xt, wt=wt, gt=gt):
            y = F.conv2d(xt, wt, stride=2, padding=1)
            torch.autograd.grad(y, (xt, wt), gt)
        else:
          wt = torch.from_numpy(k_np.transpose(2, 3, 0, 1).copy()).requires_grad_(True)

          def tfn(xt=xt, wt=wt, gt=gt):
            y = F.conv_transpose2d(xt, wt, stride=2, padding=1)
            torch.autograd.grad(y, (xt, wt), gt)
        fns['torch'] = tfn
      # Calls per timed sample: ~target_s each.
      reps = {}
      for n, fn in fns.items():
        fn()
        t = time.perf_counter()
        fn()
        reps[n] = max(1, int(args.target_s / max(time.perf_counter() - t, 1e-6)))
      names = list(fns)
      samples = {n: [] for n in names}
      for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
          t = time.perf_counter()
          for _ in range(reps[n]):
            fns[n]()
          samples[n].append((time.perf_counter() - t) / reps[n])
      ref = _median(samples['torch']) if 'torch' in samples else None
      for n in names:
        med = _median(samples[n])
        # per-round ratio to torch of the same round, then median
        ratio = (_median([a / b for a, b in zip(samples[n], samples['torch'])])
                 if ref else float('nan'))
        results.append({'layer': name, 'batch': batch, 'impl': n, 'ms': 1e3 * med,
                        'ratio_vs_torch': ratio, 'rounds_ms': [1e3 * s for s in samples[n]],
                        'load': os.getloadavg()})
        print(f'{name:12s} B={batch:3d} {n:16s} {1e3 * med:8.2f} ms  x{ratio:5.2f} torch  '
              f'load {os.getloadavg()[0]:.2f}', flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps({'xla_flags': os.environ.get('XLA_FLAGS', ''),
                                           'results': results}, indent=1))


if __name__ == '__main__':
  main()
