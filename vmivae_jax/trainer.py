"""The training loop: data on device, chunks of jitted steps, logging, checkpoints.

Python runs once per chunk of ``config.steps_per_chunk`` steps (a lax.scan on
device): it checks the chunk's metrics for NaN/Inf, logs them and, every
``checkpoint_every_steps``, saves the state. A run restarted on the same workdir
resumes from its latest checkpoint and reproduces the uninterrupted run bitwise
(the batch order and noise are functions of the seed and the step only).
"""

import dataclasses
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vmivae_jax import config_lib
from vmivae_jax import data
from vmivae_jax import parallel
from vmivae_jax import steps
from vmivae_jax import train_state as train_state_lib
from vmivae_jax import validation
from vmivae_jax import vmi
from vmivae_jax import workdir as workdir_lib


class DivergenceError(RuntimeError):
  """A loss term became NaN/Inf; the message names the step and the term."""


@dataclasses.dataclass(frozen=True)
class Run:
  """The objects a config defines, shared by training, evaluation and benchmarks."""
  config: ml_collections.ConfigDict
  model: vmi.VMIModel
  step_config: steps.StepConfig
  keys: dict

  def initial_state(self) -> train_state_lib.TrainState:
    return train_state_lib.create(self.model, self.keys['init'], vae_tx=self.step_config.vae_tx,
                                  q_tx=self.step_config.q_tx)

  def abstract_state(self) -> train_state_lib.TrainState:
    return jax.eval_shape(self.initial_state)


def build_run(config: ml_collections.ConfigDict, *, num_train_examples: int) -> Run:
  """Model, optimizers, step configuration and keys for ``config`` (already validated)."""
  model = config_lib.build_model(config, batch_norm_axis=parallel.DATA_AXIS)
  t = config.temperature
  step_config = steps.StepConfig(
      model=model, weights=config_lib.objective_weights(config),
      vae_tx=config_lib.build_optimizer(config.vae_optimizer),
      q_tx=config_lib.build_optimizer(config.q_optimizer),
      temperature=steps.TemperatureSchedule(initial=float(t.initial), floor=float(t.floor),
                                            anneal_rate=float(t.anneal_rate), hard=bool(t.hard)),
      batch_size=int(config.batch_size), num_examples=int(num_train_examples),
      pixel_range=config_lib.PIXEL_RANGES[config.pixel_range], binarize=bool(config.binarize))
  return Run(config=config, model=model, step_config=step_config,
             keys=train_state_lib.run_keys(int(config.seed)))


def load_train_images(config) -> np.ndarray:
  split = data.load_split(config.dataset, 'train', data_dir=config.data_dir,
                          limit=config.train_limit or None)
  return split.images


def _first_non_finite(metrics: dict[str, np.ndarray], first_step: int) -> tuple[int, str] | None:
  """(step, term) of the earliest NaN/Inf in a chunk's per-step metrics, if any."""
  worst = None
  for name, values in metrics.items():
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size and (worst is None or bad[0] < worst[0]):
      worst = (int(bad[0]), name)
  return None if worst is None else (first_step + worst[0] + 1, worst[1])


class _StopRequest:
  """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next chunk boundary."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a test runner thread)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning('Signal %d: saving a checkpoint at the end of this chunk, then stopping.',
                    signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _metric_writer(workdir: Path):
  """TensorBoard event files via CLU (the console line below replaces CLU's logging writer)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.SummaryWriter(str(workdir))


def train(config: ml_collections.ConfigDict, workdir: str | Path, *, overwrite: bool = False,
          num_devices: int | None = None) -> train_state_lib.TrainState:
  """Trains (or resumes) the run ``config`` describes in ``workdir``; returns the final state.

  Raises:
    validation.ConfigError: invalid config (before any data is read or code compiled).
    data.DataError: missing or corrupt data files.
    workdir_lib.WorkdirError: ``workdir`` holds a different run and not ``overwrite``.
    DivergenceError: a metric became NaN/Inf (the last good checkpoint is kept).
  """
  workdir = Path(workdir)
  mesh = parallel.make_mesh(num_devices)
  validation.validate(config, num_devices=mesh.shape[parallel.DATA_AXIS])
  images = load_train_images(config)
  resuming = workdir_lib.claim(workdir, config, overwrite=overwrite)
  run = build_run(config, num_train_examples=len(images))

  manager = workdir_lib.checkpoint_manager(workdir, keep=config.keep_checkpoints)
  state = workdir_lib.restore_checkpoint(manager, run.abstract_state()) if resuming else None
  if state is None:
    state = run.initial_state()
    workdir_lib.save_initial_state(workdir, state)
    workdir_lib.save_checkpoint(manager, state)
    workdir_lib.truncate_metrics(workdir, 0)
  else:
    logging.info('Resuming %s from step %d.', workdir, int(state.step))
    workdir_lib.truncate_metrics(workdir, int(state.step))

  state = parallel.replicate(state, mesh)
  device_images = parallel.replicate(jnp.asarray(images), mesh)
  step_key, data_key = parallel.replicate((run.keys['step'], run.keys['data']), mesh)
  writer = _metric_writer(workdir)
  step = int(state.step)
  total = int(config.num_train_steps)
  last_saved = step
  start_time, start_step = time.time(), step
  with _StopRequest() as stop:
    while step < total:
      next_checkpoint = (step // config.checkpoint_every_steps + 1) * config.checkpoint_every_steps
      length = min(config.steps_per_chunk, total - step, next_checkpoint - step)
      chunk = steps.cached_train_chunk(run.step_config, mesh, length)
      state, metrics = chunk(state, device_images, step_key, data_key)
      metrics = jax.device_get(metrics)
      bad = _first_non_finite(metrics, step)
      if bad is not None:
        raise DivergenceError(
            f'{bad[1]} became non-finite at step {bad[0]} (in steps {step + 1}..{step + length}); '
            f'stopped. The last good checkpoint is step {last_saved} in {workdir}/checkpoints.')
      step += length
      record = {'step': step, **{k: float(np.mean(v)) for k, v in metrics.items()}}
      workdir_lib.append_metrics(workdir, record)
      writer.write_scalars(step, {k: v for k, v in record.items() if k != 'step'})
      elapsed = time.time() - start_time
      rate = (step - start_step) / max(elapsed, 1e-9)
      logging.info('step %d/%d  %.1f steps/s  ETA %s  loss %.3f  elbo %.3f  mi_bound %s',
                   step, total, rate, _format_seconds((total - step) / max(rate, 1e-9)),
                   record['loss'], record['elbo'],
                   f"{record['mi_bound']:.3f}" if 'mi_bound' in record else 'n/a')
      if step % config.checkpoint_every_steps == 0 or step == total or stop.requested:
        workdir_lib.save_checkpoint(manager, state)
        last_saved = step
      if stop.requested:
        logging.warning('Stopped at step %d on request; rerun the same command to resume.', step)
        break
  writer.flush()
  workdir_lib.close(manager)
  return state


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours:d}:{minutes:02d}:{secs:02d}'
