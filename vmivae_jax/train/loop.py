"""What the training loops share: the single run's (trainer.py) and the sweep's
(sweep_trainer.py). Their errors, the SIGTERM/SIGINT stop request, the chunk grid, the
NaN/Inf check of a chunk's metrics, the TensorBoard writer and the training images.

Neither loop imports the other; ``trainer.train`` dispatches a sweep config to
``sweep_trainer.train``.
"""

import math
import os
import signal
from pathlib import Path

import jax
import numpy as np
from absl import logging

from vmivae_jax.data import datasets as data
from vmivae_jax.util import console


class DivergenceError(RuntimeError):
  """A loss term became NaN/Inf; the message names the step and the term."""


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT stopped the run early, after saving a checkpoint of its last step."""

  def __init__(self, *, signum: int, step: int, total: int, workdir: Path):
    self.signum, self.step = signum, step
    super().__init__(
        f'stopped by {signal.Signals(signum).name} at step {step}/{total}; a checkpoint of '
        f'step {step} is saved in {workdir}/checkpoints. Rerun the same command to resume.')


def load_train_images(config) -> np.ndarray:
  """uint8 [N, H, W, 1], or dsprites' bit-packed rows [N, 512] (data/datasets.py)."""
  return data.load_config_split(config, 'train').images


def first_non_finite(metrics: dict[str, np.ndarray], first_step: int
                      ) -> tuple[int, list[str]] | None:
  """(step, terms) of the earliest step of a chunk with a NaN/Inf metric, if any.

  ``metrics[name][i]`` is measured by step ``first_step + i + 1`` (steps are counted
  from 1, as in the logs: "step 5" is the state after five updates).
  """
  first = None
  for values in metrics.values():
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size and (first is None or bad[0] < first):
      first = int(bad[0])
  if first is None:
    return None
  terms = [f'{name}={float(values[first])}' for name, values in metrics.items()
           if not np.isfinite(values[first])]
  return first_step + first + 1, terms


class StopRequest:
  """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next chunk boundary.

  A second signal while the first is pending ends the process at once, with the
  signal's default action (the checkpoints on disk are never partial, so this is
  safe; the run resumes from the last one saved).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self):
    for sig in self.SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a test runner thread)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      logging.warning('Second signal %d: stopping now.', signum)
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    logging.warning('Signal %d: saving a checkpoint at the end of this chunk, then stopping '
                    '(send it again to stop at once).', signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class NoEventsWriter:
  """The writer interface with nothing behind it: where CLU's TensorBoard writer cannot be
  imported (no TensorFlow, as on accelerator images that ship without it), a run still
  trains and logs metrics.jsonl; only the event files are missing."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def metric_writer(workdir: Path):
  """TensorBoard event files via CLU (the console line below replaces CLU's logging writer);
  a NoEventsWriter, with a warning, when CLU or TensorFlow is not installed."""
  try:
    with console.silenced_native_stderr():  # TensorFlow's import notices
      from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  except ImportError as e:
    logging.warning('No TensorBoard event files in %s: %s (CLU\'s writer needs TensorFlow); '
                    'metrics.jsonl is written as usual.', workdir, e)
    return NoEventsWriter()
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.SummaryWriter(str(workdir))


def already_trained(workdir, step: int, config) -> bool:
  """True (and says so) when the run has reached config.num_train_steps."""
  if step >= int(config.num_train_steps):
    logging.info('%s: already trained to step %d; nothing to do.', workdir, step)
    return True
  return False


def chunk_length(step: int, config) -> int:
  """Steps of the chunk that starts at ``step``: at most steps_per_chunk, never past the
  run's end or the next multiple of checkpoint_every_steps (the chunk grid that makes a
  resumed run bitwise equal to an uninterrupted one; see ``trainer.train``)."""
  every = int(config.checkpoint_every_steps)
  next_checkpoint = (step // every + 1) * every
  return min(int(config.steps_per_chunk), int(config.num_train_steps) - step,
             next_checkpoint - step)


def format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours:d}:{minutes:02d}:{secs:02d}'
