"""Training the IMSAT classifier: several seeds as one program, resumable by epoch.

``python -m vmivae_jax.experiments.imsat --workdir=runs/imsat --seeds=0,1,2,3,4`` trains one
classifier per seed (their states stacked on a leading axis and vmapped, one jitted
epoch per call), writes ``checkpoint.msgpack`` after every epoch (atomically) and
``results.json`` (per-seed test accuracy by Hungarian matching, the training set's, NMI,
the per-epoch curve). Rerunning the command resumes from the last finished epoch; a
different setting on the same workdir is refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vmivae_jax import consistency
from vmivae_jax.data import preprocess
from vmivae_jax.data import sources as data_lib
from vmivae_jax.evaluation import clustering
from vmivae_jax.model import classifier
from vmivae_jax.util import fileio

EPSILON_CHUNK = 500


class State(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array


def neighbour_radii(images: np.ndarray, *, k: int, scale: float) -> np.ndarray:
  """[N] IMSAT radii of every example against the whole set, in chunks of queries."""
  flat = jnp.asarray(images.reshape(images.shape[0], -1))
  radii = jax.jit(lambda q: consistency.knn_epsilon(q, flat, k=k, scale=scale))
  return np.concatenate([np.asarray(radii(flat[i:i + EPSILON_CHUNK]))
                         for i in range(0, flat.shape[0], EPSILON_CHUNK)])


def _optimizer(settings: classifier.ImsatSettings) -> optax.GradientTransformation:
  return optax.adam(settings.learning_rate, b1=0.9)


def init_state(seed: int, model: classifier.Classifier, settings: classifier.ImsatSettings,
               input_dim: int) -> State:
  key = jax.random.fold_in(jax.random.key(seed), 0)
  variables = model.init(key, jnp.zeros((1, input_dim)), train=False)
  opt_state = _optimizer(settings).init(variables['params'])
  return State(variables['params'], variables['batch_stats'], opt_state,
               jnp.zeros((), jnp.int32))


def make_epoch_fn(model: classifier.Classifier, settings: classifier.ImsatSettings, num_examples: int):
  """jit(vmap over seeds) of one epoch: [S]-stacked state -> state, [S, steps] metrics."""
  tx = _optimizer(settings)
  steps = num_examples // settings.batch_size
  grad_fn = jax.value_and_grad(classifier.imsat_objective, has_aux=True)

  def one_seed(state: State, images, radii, data_key, run_key):
    indices = preprocess.batch_indices(data_key, state.step, steps, batch_size=settings.batch_size,
                                       num_examples=num_examples)

    def body(state: State, batch):
      key = jax.random.fold_in(run_key, state.step)
      (loss, aux), grads = grad_fn(state.params, state.batch_stats, images[batch], radii[batch],
                                   key, model=model, settings=settings)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      metrics = {'loss': loss, **{k: v for k, v in aux.items() if k != 'batch_stats'}}
      return State(params, aux['batch_stats'], opt_state, state.step + 1), metrics

    return jax.lax.scan(body, state, indices)

  return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None, 0, 0)), donate_argnums=(0,))


def make_predict_fn(model: classifier.Classifier, chunk: int = 2000):
  """jit(vmap over seeds): [S]-stacked state, images [N, D] -> [S, N] predicted classes."""
  def one_seed(state: State, images):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    batches = images.reshape(-1, chunk, images.shape[-1])
    logits = jax.lax.map(lambda x: model.apply(variables, x, train=False), batches)
    return jnp.argmax(logits, -1).reshape(-1)
  return jax.jit(jax.vmap(one_seed, in_axes=(0, None)))


def _scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
  return {'accuracy_hungarian': clustering.accuracy_hungarian(labels, predictions),
          'nmi': clustering.normalized_mutual_information(labels, predictions),
          'codes_used': int(len(np.unique(predictions)))}


def _load_images(dataset: str, split: str, data_dir: str, settings, limit=None):
  source = data_lib.load_split(dataset, split, data_dir=data_dir, limit=limit)
  images = preprocess.scale_images(source.images, settings.pixel_range)
  return images.reshape(images.shape[0], -1), np.asarray(source.labels)


def train(workdir: str, *, seeds: list[int], settings: classifier.ImsatSettings,
          dataset: str = 'mnist', data_dir: str = '', limit: int | None = None,
          log=print) -> dict:
  """Trains (or resumes) one classifier per seed; returns and writes the results."""
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds must be distinct and non-empty, got {seeds}')
  workdir = Path(workdir)
  spec = {'settings': dataclasses.asdict(settings), 'seeds': list(seeds), 'dataset': dataset,
          'limit': limit}
  spec = json.loads(fileio.dumps(spec))
  spec_path = workdir / 'settings.json'
  if spec_path.exists() and not _same_run(json.loads(spec_path.read_text()), spec):
    raise ValueError(f'{workdir} holds a run with other settings ({spec_path}); use another '
                     'workdir (only --epochs may grow)')
  fileio.write_json(spec_path, spec)

  train_x, train_y = _load_images(dataset, 'train', data_dir, settings, limit)
  test_x, test_y = _load_images(dataset, 'test', data_dir, settings, limit)
  radii_path = workdir / 'radii.npz'
  if radii_path.exists():
    radii = np.load(radii_path)['radii']
  else:
    started = time.time()
    radii = neighbour_radii(train_x, k=settings.eps_neighbour, scale=settings.eps_scale)
    fileio.atomic_save_npz(radii_path, radii=radii)
    log(f'kNN radii of {len(radii)} examples in {time.time() - started:.0f} s '
        f'(median {np.median(radii):.3f})')

  model = classifier.Classifier(hidden=tuple(settings.hidden), num_classes=settings.num_classes,
                           head_init_scale=settings.head_init_scale)
  init = [init_state(s, model, settings, train_x.shape[1]) for s in seeds]
  state = jax.tree.map(lambda *xs: jnp.stack(xs), *init)
  data_keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
  run_keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 2) for s in seeds])

  checkpoint = workdir / 'checkpoint.msgpack'
  history_path = workdir / 'history.json'
  history = []
  if checkpoint.exists():
    state = flax.serialization.from_bytes(state, checkpoint.read_bytes())
    history = json.loads(history_path.read_text())
  epoch_fn = make_epoch_fn(model, settings, train_x.shape[0])
  predict = make_predict_fn(model, chunk=_divisor_chunk(test_x.shape[0]))
  train_images, train_radii = jnp.asarray(train_x), jnp.asarray(radii)

  for epoch in range(len(history), settings.epochs):
    started = time.time()
    state, metrics = epoch_fn(state, train_images, train_radii, data_keys, run_keys)
    predictions = np.asarray(predict(state, jnp.asarray(test_x)))
    row = {'epoch': epoch + 1, 'seconds': time.time() - started,
           'test_accuracy': [clustering.accuracy_hungarian(test_y, p) for p in predictions],
           **{k: np.asarray(v).mean(axis=1).tolist() for k, v in metrics.items()}}
    history.append(json.loads(fileio.dumps(row)))
    # Checkpoint first, then the history that says it exists: a kill between the two
    # repeats one epoch, never skips one.
    fileio.atomic_write(checkpoint, flax.serialization.to_bytes(state))
    fileio.write_json(history_path, history)
    log(f"epoch {epoch + 1}/{settings.epochs} ({row['seconds']:.0f} s): test accuracy "
        + ' '.join(f'{a:.3f}' for a in row['test_accuracy']))

  test_pred = np.asarray(predict(state, jnp.asarray(test_x)))
  train_pred = np.asarray(make_predict_fn(model, chunk=_divisor_chunk(train_x.shape[0]))(
      state, jnp.asarray(train_x)))
  per_seed = [{'seed': s, 'test': _scores(test_y, tp), 'train': _scores(train_y, rp)}
              for s, tp, rp in zip(seeds, test_pred, train_pred)]
  accuracies = np.array([r['test']['accuracy_hungarian'] for r in per_seed])
  results = {'settings': spec, 'per_seed': per_seed,
             'test_accuracy_mean': float(accuracies.mean()),
             'test_accuracy_std': float(accuracies.std(ddof=1)) if len(seeds) > 1 else None,
             'train_seconds': float(sum(r['seconds'] for r in history))}
  fileio.write_json(workdir / 'results.json', results)
  return results


def report(workdir: str) -> str:
  """Markdown of a run so far (finished or not): per-seed test accuracy (Hungarian) at
  the last finished epoch, mean +- std, and the mean over seeds every few epochs."""
  workdir = Path(workdir)
  spec = json.loads((workdir / 'settings.json').read_text())
  history = json.loads((workdir / 'history.json').read_text())
  if not history:
    raise ValueError(f'{workdir} has no finished epoch yet')
  seeds, last = spec['seeds'], history[-1]
  accuracy = np.array(last['test_accuracy'])
  planned = spec['settings']['epochs']
  status = 'finished' if last['epoch'] >= planned else f'partial: {last["epoch"]} of {planned} epochs'
  std = f' ± {100 * accuracy.std(ddof=1):.1f}' if len(seeds) > 1 else ''
  lines = [f'Seeds {", ".join(map(str, seeds))} ({status}; '
           f'{sum(r["seconds"] for r in history) / 60:.0f} min of training, all seeds as one '
           f'program): test accuracy (Hungarian) **{100 * accuracy.mean():.1f}{std}%**.', '',
           '| seed | ' + ' | '.join(map(str, seeds)) + ' |',
           '|---|' + '---:|' * len(seeds),
           f'| test accuracy, epoch {last["epoch"]} | '
           + ' | '.join(f'{100 * a:.1f}%' for a in accuracy) + ' |', '',
           '| epoch | mean test accuracy | min | max | H(Y) | H(Y\\|X) | R_vat |',
           '|---:|---:|---:|---:|---:|---:|---:|']
  every = max(1, len(history) // 10)
  rows = history[every - 1::every]
  if rows[-1] is not history[-1]:
    rows.append(history[-1])
  for row in rows:
    a = np.array(row['test_accuracy'])
    lines.append(f'| {row["epoch"]} | {100 * a.mean():.1f}% | {100 * a.min():.1f}% | '
                 f'{100 * a.max():.1f}% | {np.mean(row["marginal_entropy"]):.3f} | '
                 f'{np.mean(row["conditional_entropy"]):.3f} | {np.mean(row["vat"]):.4f} |')
  return '\n'.join(lines) + '\n'


def _same_run(stored: dict, spec: dict) -> bool:
  """Equal but for the number of epochs, which may grow (the run continues)."""
  def without_epochs(s):
    return {**s, 'settings': {k: v for k, v in s['settings'].items() if k != 'epochs'}}
  return (without_epochs(stored) == without_epochs(spec)
          and spec['settings']['epochs'] >= stored['settings']['epochs'])


def _divisor_chunk(n: int, largest: int = 2000) -> int:
  return max(c for c in range(1, min(n, largest) + 1) if n % c == 0)


def main(argv=None):
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--seeds', default='0', help='comma-separated seeds, trained as one program')
  parser.add_argument('--dataset', default='mnist', choices=data_lib.DATASETS)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--limit', type=int, default=None, help='first N examples of each split')
  parser.add_argument('--report', action='store_true',
                      help='print the markdown of the run so far and exit (no training)')
  for field in dataclasses.fields(classifier.ImsatSettings):
    default = field.default
    kind = type(default) if not isinstance(default, (tuple, list)) else None
    if kind is None:
      parser.add_argument(f'--{field.name}', default=','.join(map(str, default)))
    else:
      parser.add_argument(f'--{field.name}', type=kind, default=default)
  args = parser.parse_args(argv)
  if args.report:
    print(report(args.workdir), end='')
    return
  overrides = {}
  for field in dataclasses.fields(classifier.ImsatSettings):
    value = getattr(args, field.name)
    if isinstance(field.default, (tuple, list)):
      cast = float if isinstance(field.default[0], float) else int
      value = tuple(cast(v) for v in str(value).split(','))
    overrides[field.name] = value
  settings = classifier.ImsatSettings(**overrides)
  seeds = [int(s) for s in args.seeds.split(',')]
  results = train(args.workdir, seeds=seeds, settings=settings, dataset=args.dataset,
                  data_dir=args.data_dir, limit=args.limit)
  print(json.dumps({k: results[k] for k in ('test_accuracy_mean', 'test_accuracy_std',
                                            'train_seconds')}))


if __name__ == '__main__':
  main()
