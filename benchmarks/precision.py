#!/usr/bin/env python
"""Train-step time with ``config.compute_dtype`` float32 vs bfloat16 (mixed precision).

  python benchmarks/precision.py                          # MLP and conv, batch 256, 1 device
  python benchmarks/precision.py --archs=mlp --batches=64,256 --rounds=5
  python benchmarks/precision.py --tiny                   # seconds: checks the script works

Times the jitted train chunk (``train_step.make_train_chunk``, the MI step of the joint
MNIST setting; ``benchmarks/shared.make_config``) for both compute dtypes in interleaved
rounds in one process (median and best round reported), on whatever backend JAX finds:
run it unchanged on a GPU or TPU machine. On CPU bfloat16 is expected to be slower
(XLA:CPU has no fast bfloat16 matmuls; it converts), so the number that matters, the
accelerator one, is measured there. Writes ``--out`` (.json and .md).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make the repository importable
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shared import HERE, Rounds, STEPS_PER_CALL, load_images, loadavg, make_config, median, tiny_config  # noqa: E402,E501

DTYPES = ('float32', 'bfloat16')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--archs', default='mlp,conv')
  p.add_argument('--batches', default='256')
  p.add_argument('--kind', default='mi', help='step kind (benchmarks/shared.KINDS)')
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--steps', type=int, default=0,
                 help='steps per timed call (default: bench.py\'s, per architecture)')
  p.add_argument('--train-examples', type=int, default=10_000)
  p.add_argument('--tiny', action='store_true', help='small layers, batch 64, 1 round')
  p.add_argument('--data-dir', default='')
  p.add_argument('--out', default=str(HERE / 'results' / 'precision'))
  return p.parse_args(argv)


def measure(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import build  # pylint: disable=g-import-not-at-top
  from vmivae_jax.model import conv_ops  # pylint: disable=g-import-not-at-top
  from vmivae_jax.util import parallel  # pylint: disable=g-import-not-at-top
  from vmivae_jax.train import train_step  # pylint: disable=g-import-not-at-top
  from vmivae_jax.config import validation  # pylint: disable=g-import-not-at-top
  conv_ops.apply_cpu_xla_flags()   # as train.py

  archs = [a for a in args.archs.split(',') if a]
  batches = [int(b) for b in args.batches.split(',') if b]
  rounds_n = args.rounds
  if args.tiny:
    archs, batches, rounds_n = ['mlp'], [64], 1
  images_np, source = load_images('train', args.train_examples, args.data_dir)
  mesh = parallel.make_mesh(1)
  images = parallel.replicate(jnp.asarray(images_np), mesh)
  rounds, entries = Rounds(), {}
  for arch in archs:
    steps = args.steps or (2 if args.tiny else STEPS_PER_CALL[arch])
    for batch in batches:
      for dtype in DTYPES:
        config = make_config(arch, args.kind, batch)
        if args.tiny:
          config = tiny_config(config)
        config.compute_dtype = dtype
        validation.validate(config, check_paths=False)
        run = build.build_run(config, num_train_examples=len(images_np))
        state = parallel.replicate(run.initial_state(), mesh)
        keys = parallel.replicate((run.keys['step'], run.keys['data']), mesh)
        t = time.perf_counter()
        compiled = train_step.make_train_chunk(run.step_statics, mesh, steps).lower(
            state, images, *keys).compile()
        compile_s = time.perf_counter() - t
        state, metrics = compiled(state, images, *keys)
        jax.block_until_ready(state)
        holder = {'state': state}

        def call(compiled=compiled, holder=holder, keys=keys):
          holder['state'], m = compiled(holder['state'], images, *keys)
          jax.block_until_ready((holder['state'], m))

        name = f'{arch}/{batch}/{dtype}'
        rounds.add(name, call)
        entries[name] = dict(arch=arch, batch=batch, dtype=dtype, steps_per_call=steps,
                             compile_s=compile_s,
                             finite=bool(all(np.isfinite(np.asarray(v)).all()
                                             for v in metrics.values())))
  samples = rounds.run(rounds_n)
  for name, entry in entries.items():
    per_step = [s / entry['steps_per_call'] for s in samples[name]]
    entry.update(step_ms=1e3 * median(per_step), step_ms_best=1e3 * min(per_step),
                 step_ms_rounds=[1e3 * s for s in per_step],
                 examples_per_s=entry['batch'] / median(per_step))
  return {'meta': {'date': time.strftime('%Y-%m-%d %H:%M:%S'),
                   'command': ' '.join(['python', 'benchmarks/precision.py'] +
                                       (sys.argv[1:])),
                   'backend': jax.default_backend(), 'device': str(jax.devices()[0]),
                   'jax': jax.__version__, 'cores': os.cpu_count(), 'data': source,
                   'rounds': rounds_n, 'load_end': loadavg(), 'kind': args.kind},
          'entries': list(entries.values())}


def to_markdown(results: dict) -> str:
  m = results['meta']
  lines = [f'# Mixed precision: train-step time ({m["backend"]}, {m["device"]})', '',
           f'`{m["command"]}`, {m["date"]}, jax {m["jax"]}, {m["cores"]} cores, '
           f'load average at the end {m["load_end"]}, {m["rounds"]} interleaved rounds '
           f'(median; best in brackets), step kind {m["kind"]!r}.', '',
           '| arch | batch | float32 ms/step | bfloat16 ms/step | bfloat16 / float32 |',
           '|---|---:|---:|---:|---:|']
  by = {(e['arch'], e['batch'], e['dtype']): e for e in results['entries']}
  for arch, batch in dict.fromkeys((e['arch'], e['batch']) for e in results['entries']):
    f, b = by[(arch, batch, 'float32')], by[(arch, batch, 'bfloat16')]
    lines.append(f'| {arch} | {batch} | {f["step_ms"]:.2f} ({f["step_ms_best"]:.2f}) | '
                 f'{b["step_ms"]:.2f} ({b["step_ms_best"]:.2f}) | '
                 f'{b["step_ms"] / f["step_ms"]:.2f}x |')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  args = parse_args(argv)
  results = measure(args)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(results, indent=1))
  md = to_markdown(results)
  out.with_suffix('.md').write_text(md)
  print(md)
  return 0 if all(e['finite'] for e in results['entries']) else 1


if __name__ == '__main__':
  sys.exit(main())
