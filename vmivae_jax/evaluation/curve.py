"""Classification accuracy over training: the cheap code metrics at every kept checkpoint.

``checkpoint_curve(workdir)`` restores each checkpoint in WORKDIR/checkpoints (oldest
first) and measures, with the encoder only (argmax q(c|x); no sampling, no IWAE, no
fresh Q):

* ``accuracy_hungarian``, ``accuracy_majority``, ``nmi``: the test split, as eval.py;
* ``accuracy_majority_train``: the thesis's protocol (many-to-one map fitted and scored
  on all training images).

It writes ``WORKDIR/eval/curve.json`` atomically: ``{'points': [{step, examples_seen,
...metrics}], 'batch_size', 'num_train_steps', 'partial', ...}``. Points already in a
previous curve.json are reused (a checkpoint never changes), so rerunning while a
run trains only measures the new checkpoints, and points of checkpoints that Orbax
has since deleted (``keep_checkpoints``) are kept; step 0 is measured from
``initial_state/`` when its checkpoint is gone.

  python -m vmivae_jax.experiments.curve --workdir=runs/mnist_joint
"""

import json
import time
from pathlib import Path

import numpy as np
from absl import logging

from vmivae_jax.config import validation
from vmivae_jax.data import preprocess
from vmivae_jax.data import sources as data
from vmivae_jax.evaluation import classifier
from vmivae_jax.evaluation import clustering
from vmivae_jax.evaluation import common
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.util import fileio

CURVE_JSON = 'curve.json'
METRICS = ('accuracy_hungarian', 'accuracy_majority', 'nmi', 'accuracy_majority_train')


def point_metrics(test_labels, test_codes, train_labels, train_codes) -> dict:
  """The curve's metrics of one checkpoint from its code assignments."""
  return {
      'accuracy_hungarian': clustering.accuracy_hungarian(test_labels, test_codes),
      'accuracy_majority': clustering.accuracy_majority(test_labels, test_codes),
      'nmi': clustering.normalized_mutual_information(test_labels, test_codes),
      'accuracy_majority_train': classifier.accuracy_majority_train(train_labels, train_codes),
  }


def read_curve(workdir: Path | str) -> dict | None:
  path = Path(workdir) / workdir_lib.EVAL_DIR / CURVE_JSON
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:
    return None


def checkpoint_curve(workdir: Path | str, *, reuse: bool = True) -> dict:
  """Measures every kept checkpoint of ``workdir``; writes and returns eval/curve.json.

  Raises:
    workdir.WorkdirError: not a train.py workdir, or no checkpoint.
    ValueError: the run's model has no categorical code.
  """
  start = time.time()
  workdir = Path(workdir)
  config = workdir_lib.check_evaluable(workdir)
  if not config.latent.categorical_sizes:
    raise ValueError(f'{workdir}: the model has no categorical code; no accuracy curve')
  validation.check_data_dir(config)
  test = data.load_split(config.dataset, 'test', data_dir=config.data_dir,
                         limit=config.test_limit or None)
  train = data.load_split(config.dataset, 'train', data_dir=config.data_dir,
                          limit=config.train_limit or None)
  run = build.build_run(config, num_train_examples=len(train.images))
  model = common.local_model(run.model)
  keys = common.eval_keys(int(config.seed))
  test_x = (preprocess.binarize_uint8(test.images, keys['binarize']) if config.binarize
            else test.images)
  train_x = classifier.train_inputs(config, train.images, keys['binarize'])
  code_index = run.model.mi_categorical_indices[0] if run.model.mi_categorical_indices else 0
  batch_size = int(config.eval.batch_size)

  previous = read_curve(workdir) if reuse else None
  points = {}
  if previous and previous.get('config_seed') == int(config.seed):
    points = {int(p['step']): p for p in previous.get('points', [])}
  steps = workdir_lib.checkpoint_steps(workdir)
  # Step 0 is also kept in initial_state/ after Orbax deletes its checkpoint.
  from_initial = 0 not in steps and (workdir / 'initial_state').is_dir()
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    for step in [0] * from_initial + steps:
      if step in points:
        continue
      try:
        if step == 0 and from_initial:
          state = workdir_lib.load_initial_state(workdir, run.abstract_state())
        else:
          state = workdir_lib.restore_checkpoint(manager, run.abstract_state(), step)
      except workdir_lib.WorkdirError:
        if step in workdir_lib.checkpoint_steps(workdir):
          raise
        continue  # deleted meanwhile by the training run (keep_checkpoints)
      vae_vars = {'params': state.vae_params, **state.vae_state}
      test_codes = classifier.code_assignments(model, vae_vars, test_x, code_index=code_index,
                                               batch_size=batch_size)
      train_codes = classifier.code_assignments(model, vae_vars, train_x,
                                                code_index=code_index, batch_size=batch_size)
      points[step] = {'step': step, 'examples_seen': step * int(config.batch_size),
                      **point_metrics(test.labels, test_codes, train.labels, train_codes)}
      logging.info('%s step %d: %s', workdir, step,
                   '  '.join(f'{k} {points[step][k]:.4f}' for k in METRICS))
  finally:
    workdir_lib.close(manager)
  last = max(points) if points else 0
  curve = {
      'points': [points[s] for s in sorted(points)],
      'metrics': list(METRICS), 'batch_size': int(config.batch_size),
      'num_train_steps': int(config.num_train_steps), 'last_step': last,
      'partial': last < int(config.num_train_steps), 'config_seed': int(config.seed),
      'dataset': config.dataset, 'num_test_examples': len(test.labels),
      'num_train_examples': len(train.labels), 'categorical_code_index': code_index,
      'protocol': ('code = argmax q(c|x); accuracy_hungarian/accuracy_majority/nmi on the '
                   'test split; accuracy_majority_train: many-to-one map fitted and scored '
                   'on the training split (the thesis\'s protocol)'),
      'seconds': time.time() - start,
  }
  fileio.write_json(workdir / workdir_lib.EVAL_DIR / CURVE_JSON, curve)
  return fileio.to_jsonable(curve)
