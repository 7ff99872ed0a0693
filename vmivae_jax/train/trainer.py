"""train.py's entry to training: ``train`` runs a sweep config in sweep_trainer.py and
any other config in this module's loop (the pieces both loops share are in loop.py).

The single-run loop: data on device (or fed from the host per chunk, ``config.data_feed``),
chunks of jitted steps, logging, checkpoints.

Python runs once per chunk of ``config.steps_per_chunk`` steps (a lax.scan on
device): it checks the chunk's metrics and the new state for NaN/Inf, logs the
metrics and, every ``checkpoint_every_steps``, saves the state. A run restarted on
the same workdir resumes from its latest checkpoint and reproduces the uninterrupted
run bitwise (the batch order and noise are functions of the seed and the step only,
and chunks are aligned to checkpoint steps). See docs/reliability.md for every
failure mode and what the user sees.
"""

import contextlib
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vmivae_jax.config import validation
from vmivae_jax.rundir import sweep as sweep_lib
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.train import sweep_trainer
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.train import train_step
from vmivae_jax.train.loop import DivergenceError
from vmivae_jax.train.loop import TrainingInterrupted
from vmivae_jax.train.loop import already_trained
from vmivae_jax.train.loop import chunk_length
from vmivae_jax.train.loop import format_seconds
# Bound here under the names this loop calls, so that a test can replace them for the
# single-run loop (monkeypatch.setattr(trainer, ...)).
from vmivae_jax.train.loop import StopRequest as _StopRequest
from vmivae_jax.train.loop import first_non_finite as _first_non_finite
from vmivae_jax.train.loop import load_train_images
from vmivae_jax.train.loop import metric_writer as _metric_writer
from vmivae_jax.util import distributed
from vmivae_jax.util import parallel

# A disentanglement baseline's terms (model/disentangle.py), shown on the console line too.
_BASELINE_TERMS = ('tc', 'dip_penalty', 'discriminator_loss')


@jax.jit
def _finite_leaves(state) -> list[jax.Array]:
  return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)]


def _first_non_finite_leaf(state) -> str | None:
  """The path of the first parameter/optimizer leaf holding a NaN/Inf, if any."""
  finite = jax.device_get(_finite_leaves(state))
  if all(finite):
    return None
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  return next(p for p, ok in zip(paths, finite) if not ok)


def train(config: ml_collections.ConfigDict, workdir: str | Path, *, overwrite: bool = False,
          num_devices: int | None = None) -> train_state_lib.TrainState:
  """Trains (or resumes) the run ``config`` describes in ``workdir``; returns the final state.

  Order of checks, so that a mistake costs seconds, not a compilation: the config
  (``validation.validate``), then the data, then the workdir (lock and config), then
  the latest checkpoint; only then is anything compiled.

  Raises:
    validation.ConfigError: invalid config (before any data is read or code compiled),
      or a batch larger than the training set.
    data.DataError: missing or corrupt data files (before the workdir is touched).
    workdir_lib.WorkdirError: ``workdir`` holds a different run and not ``overwrite``,
      is used by another process, or its latest checkpoint is unreadable.
    DivergenceError: a metric or a parameter became NaN/Inf; nothing from the bad chunk
      is saved, so the latest checkpoint is the last good state.
    TrainingInterrupted: SIGTERM/SIGINT; a checkpoint of the current step was saved.
  """
  if sweep_lib.is_sweep(config):  # many runs in one program: sweep_trainer.py
    return sweep_trainer.train(config, workdir, overwrite=overwrite, num_devices=num_devices)
  workdir = Path(workdir)
  mesh = parallel.make_mesh(num_devices)
  validation.validate(config, num_devices=mesh.shape[parallel.DATA_AXIS])
  images = load_train_images(config)
  validation.check_train_examples(config, len(images))
  with _StopRequest() as stop, _hold_workdir(workdir, config, overwrite=overwrite) as resuming:
    run = build.build_run(config, num_train_examples=len(images))
    manager = workdir_lib.checkpoint_manager(workdir, keep=config.keep_checkpoints)
    try:
      return _train_loop(run, workdir, manager, images, mesh, stop, resuming=resuming)
    finally:
      workdir_lib.close(manager)


@contextlib.contextmanager
def _hold_workdir(workdir: Path, config, *, overwrite: bool):
  """Locks and claims ``workdir`` (``workdir_lib.lock``, ``claim``); yields ``resuming``.

  With several processes only process 0 locks and writes config.json; the others
  follow its decision (or fail with it), so every process resumes or starts alike.
  """
  if not distributed.is_multiprocess():
    with workdir_lib.lock(workdir):
      yield workdir_lib.claim(workdir, config, overwrite=overwrite)
    return
  with contextlib.ExitStack() as stack:
    outcome, error = -1, None
    if distributed.is_main_process():
      try:
        stack.enter_context(workdir_lib.lock(workdir))
        outcome = int(workdir_lib.claim(workdir, config, overwrite=overwrite))
      except workdir_lib.WorkdirError as e:
        error = e
    outcome = int(distributed.broadcast_from_main(outcome))
    if error is not None:
      raise error
    if outcome < 0:
      raise workdir_lib.WorkdirError(f'{workdir}: process 0 refused the workdir (its error '
                                     'message says why)')
    yield bool(outcome)


def _train_loop(run: build.Run, workdir: Path, manager, images: np.ndarray, mesh, stop: _StopRequest,
                *, resuming: bool) -> train_state_lib.TrainState:
  config = run.config
  multiprocess = mesh.is_multi_process
  main = distributed.is_main_process()
  state = None
  if resuming:   # with several processes, restored straight onto the global mesh
    target = (parallel.replicated_shardings(run.abstract_state(), mesh) if multiprocess
              else run.abstract_state())
    state = workdir_lib.restore_checkpoint(manager, target)
  if state is None:
    state = run.initial_state()
    if multiprocess:   # Orbax's multi-host save takes arrays of the global mesh
      state = parallel.replicate(state, mesh)
    workdir_lib.save_initial_state(workdir, state)
    workdir_lib.save_checkpoint(manager, state)
    if main:
      workdir_lib.truncate_metrics(workdir, 0)
  else:
    logging.info('Resuming %s from step %d.', workdir, int(state.step))
    if main:
      workdir_lib.truncate_metrics(workdir, int(state.step))

  step = int(state.step)
  total = int(config.num_train_steps)
  every = int(config.checkpoint_every_steps)
  if already_trained(workdir, step, config):
    return state
  state = parallel.replicate(state, mesh)
  step_key = parallel.replicate(run.keys['step'], mesh)
  feed = train_step.check_feed(config.data_feed)
  chunk_data = _chunk_data(run, images, mesh, feed)
  writer = _metric_writer(workdir)
  last_saved = step
  start_time, start_step = time.time(), step

  def stop_requested() -> bool:   # every process stops at the same chunk boundary
    return distributed.any_process(stop.requested) if multiprocess else stop.requested

  try:
    while step < total and not stop_requested():  # a stop is honoured between chunks only
      # Chunks never cross a multiple of checkpoint_every_steps, and a stop request is
      # only honoured at a chunk boundary, so a run resumed from any checkpoint runs
      # the same chunk lengths (hence the same compiled programs) and logs the same
      # metrics as an uninterrupted run: both are bitwise identical.
      length = chunk_length(step, config)
      chunk = train_step.cached_train_chunk(run.step_statics, mesh, length, feed)
      state, metrics = chunk(state, *chunk_data(step, length, step_key))
      metrics = jax.device_get(metrics)
      bad = _first_non_finite(metrics, step)
      if bad is not None:
        raise DivergenceError(
            f'divergence at step {bad[0]}: non-finite {", ".join(bad[1])} (chunk of steps '
            f'{step + 1}..{step + length}). Stopped without saving; the last good '
            f'checkpoint is step {last_saved} in {workdir}/checkpoints.')
      bad_leaf = _first_non_finite_leaf(state)
      if bad_leaf is not None:
        raise DivergenceError(
            f'divergence in steps {step + 1}..{step + length}: non-finite parameters '
            f'({bad_leaf}) though every loss term was finite. Stopped without saving; the '
            f'last good checkpoint is step {last_saved} in {workdir}/checkpoints.')
      step += length
      record = {'step': step, **{k: float(np.mean(v)) for k, v in metrics.items()}}
      if main:
        workdir_lib.append_metrics(workdir, record)
      writer.write_scalars(step, {k: v for k, v in record.items() if k != 'step'})
      elapsed = time.time() - start_time
      rate = (step - start_step) / max(elapsed, 1e-9)
      elbo_key = 'elbo' if 'elbo' in record else 'elbo_relaxed'
      mi_key = 'mi_bound' if 'mi_bound' in record else 'mi_objective_prior_entropy'
      extra = ''.join(f'  {k} {record[k]:.3f}' for k in _BASELINE_TERMS if k in record)
      logging.info('step %d/%d  %.1f steps/s  ETA %s  loss %.3f  %s %.3f  %s %s%s',
                   step, total, rate, format_seconds((total - step) / max(rate, 1e-9)),
                   record['loss'], elbo_key, record[elbo_key], mi_key,
                   f"{record[mi_key]:.3f}" if mi_key in record else 'n/a', extra)
      if step % every == 0 or step == total:
        workdir_lib.save_checkpoint(manager, state)
        last_saved = step
    if step < total and last_saved != step:  # stopped on request: save where it stopped
      workdir_lib.save_checkpoint(manager, state)
      last_saved = step
  finally:
    writer.flush()
    writer.close()
  if step < total:
    # With several processes, a process that got no signal stops with its peers'.
    raise TrainingInterrupted(signum=stop.signum or signal.SIGTERM, step=step, total=total,
                              workdir=workdir)
  logging.info('Training complete: step %d in %s.', step, workdir)
  return state


def _chunk_data(run: build.Run, images: np.ndarray, mesh, feed: str):
  """``(step, length, step_key) ->`` the chunk's arguments after the state, per feed.

  'device': the training set, replicated onto every device once, the step key and the
  data key (each device gathers its rows of every batch). 'host': per chunk, the batch
  indices (the same ``preprocess.batch_indices``, on a host CPU device) and this
  process's rows of every batch, joined into the global [length, batch, ...] array
  (``parallel.feed_batches``); the training set stays on the host.
  """
  if feed == 'device':
    device_images = parallel.replicate(
        train_step.device_training_set(images, run.step_statics.objective.invariance), mesh)
    data_key = parallel.replicate(run.keys['data'], mesh)
    return lambda step, length, step_key: (device_images, step_key, data_key)
  logged = []

  def host_fed(step, length, step_key):
    indices = train_step.host_batch_indices(run.step_statics, run.keys['data'], step, length)
    batches, rows = parallel.feed_batches(images, indices, mesh)
    if not logged:
      logging.info('Host feed: process %d of %d feeds batch rows %s of %d (its %d devices of %s); '
                   'the %d training examples stay on the host.', jax.process_index(),
                   jax.process_count(), _describe_rows(rows), indices.shape[1],
                   len(mesh.local_devices), parallel.describe(mesh), len(images))
      logged.append(True)
    return batches, step_key
  return host_fed


def _describe_rows(rows: np.ndarray) -> str:
  """'2..3' for contiguous rows, else the list."""
  if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
    return f'{rows[0]}..{rows[-1]}'
  return str(rows.tolist())
