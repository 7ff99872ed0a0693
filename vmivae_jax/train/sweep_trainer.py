"""The training loop of a sweep (sweep.py): every member in one compiled program.

The loop is the trainer's (chunks aligned to checkpoint steps, a NaN/Inf check per chunk,
SIGTERM/SIGINT honoured between chunks), run on the stacked members; each member's
metrics line, event files and checkpoints go to its own run directory, as train.py
writes them for the member's config alone.

Checkpoints: at a checkpoint step every member saves, then each prunes to its
``keep_checkpoints`` (the managers keep everything until then), so a kill at any point
leaves a step that every member has. A resumed sweep restores the latest such step;
checkpoints a member saved past it (a kill between members' saves) are deleted and
metrics lines past it dropped, so the resumed sweep repeats exactly what was lost.
"""

import contextlib
import json
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
from vmivae_jax.train import loop
from vmivae_jax.train import sweep_step
from vmivae_jax.train import train_step
from vmivae_jax.train import train_state as train_state_lib
from vmivae_jax.util import distributed
from vmivae_jax.util import fileio
from vmivae_jax.util import parallel


def train(config: ml_collections.ConfigDict, workdir: str | Path, *, overwrite: bool = False,
          num_devices: int | None = None, member_dirs: list | None = None
          ) -> train_state_lib.TrainState:
  """Trains (or resumes) every member of the sweep ``config``; returns the stacked state.

  Args:
    config: a config whose ``sweep`` section lists members (``sweep.is_sweep``).
    workdir: the sweep's directory: its config.json (with the sweep), members.json, a
      lock, and by default the members' run directories ``members/<i>``.
    overwrite: as train.py's --overwrite, for the sweep's and every member's directory.
    num_devices: data-parallel devices (default: all local ones).
    member_dirs: the members' run directories instead of ``workdir/members/<i>``.

  Raises:
    As ``trainer.train`` (which dispatches a sweep here); a ConfigError (exit 2) for an
    invalid sweep before any data is read; a DivergenceError names the member (its
    directory) that diverged.
  """
  workdir = Path(workdir)
  if distributed.is_multiprocess():
    raise validation.ConfigError(
        'config.sweep: a sweep trains in one process (its devices may be several); '
        'multi-process runs (jax.distributed) train one run at a time')
  mesh = parallel.make_mesh(num_devices)
  sweep_lib.validate(config, num_devices=mesh.shape[parallel.DATA_AXIS])
  members = sweep_lib.member_configs(config)
  dirs = [Path(d) for d in (member_dirs or sweep_lib.default_member_dirs(workdir, len(members)))]
  if len(dirs) != len(members):
    raise validation.ConfigError(f'{len(dirs)} member directories for {len(members)} members')
  images = loop.load_train_images(members[0])
  validation.check_train_examples(members[0], len(images))
  with loop.StopRequest() as stop, contextlib.ExitStack() as stack:
    stack.enter_context(workdir_lib.lock(workdir))
    for d in dirs:
      if d.resolve() != workdir.resolve():
        stack.enter_context(workdir_lib.lock(d))
    workdir_lib.claim(workdir, config, overwrite=overwrite)
    fileio.atomic_write(workdir / sweep_lib.MEMBERS_FILE, sweep_lib.describe_members(config, dirs))
    resuming = [workdir_lib.claim(d, m, overwrite=overwrite) for d, m in zip(dirs, members)]
    run = build.build_sweep(config, num_train_examples=len(images))
    # No automatic pruning: members prune together after each save (module docstring).
    managers = [workdir_lib.checkpoint_manager(d, keep=None) for d in dirs]
    for manager in managers:
      stack.callback(workdir_lib.close, manager)
    return _train_loop(run, workdir, dirs, managers, images, mesh, stop, resuming=resuming)


def _restore(run: build.SweepRun, dirs, managers, resuming) -> train_state_lib.TrainState | None:
  """The members' states at the latest step that every member has, or None (fresh)."""
  steps = [set(workdir_lib.checkpoint_steps(d)) if r else set() for d, r in zip(dirs, resuming)]
  if not any(steps):
    return None
  common = set.intersection(*steps)
  if not common:
    have = ', '.join(f'{d}: {sorted(s) or "none"}' for d, s in zip(dirs, steps))
    raise workdir_lib.WorkdirError(
        f'the members have no checkpoint step in common ({have}); a sweep trains its members '
        'in lockstep. Resume those runs separately, or pass --overwrite.')
  step = max(common)
  for d, manager, member_steps in zip(dirs, managers, steps):
    for later in sorted(s for s in member_steps if s > step):
      logging.warning('%s: deleting checkpoint %d (the sweep resumes from step %d, the last '
                      'one every member saved)', d, later, step)
      manager.delete(later)
    workdir_lib.truncate_metrics(d, step)
  states = [workdir_lib.restore_checkpoint(manager, member.abstract_state(), step)
            for manager, member in zip(managers, run.members)]
  return sweep_step.stack_states(states)


def _save(state, managers, dirs, keep: int) -> None:
  for i, manager in enumerate(managers):
    workdir_lib.save_checkpoint(manager, sweep_step.member_state(state, i))
  for manager in managers:  # only once every member has the new step
    for old in sorted(manager.all_steps())[:-keep]:
      manager.delete(old)


@jax.jit
def _finite_members(state) -> list[jax.Array]:
  """Per leaf, [M] whether each member's values are finite (the step is shared)."""
  leaves = jax.tree.leaves(state.replace(step=None))
  return [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1) for x in leaves]


def _train_loop(run: build.SweepRun, workdir: Path, dirs, managers, images, mesh, stop,
                *, resuming) -> train_state_lib.TrainState:
  config = run.members[0].config
  state = _restore(run, dirs, managers, resuming)
  if state is None:
    states = [member.initial_state() for member in run.members]
    for d, manager, s in zip(dirs, managers, states):
      workdir_lib.save_initial_state(d, s)
      workdir_lib.save_checkpoint(manager, s)
      workdir_lib.truncate_metrics(d, 0)
    state = sweep_step.stack_states(states)
  else:
    logging.info('Resuming the sweep %s (%d members) from step %d.', workdir, len(dirs),
                 int(state.step))
  step = int(state.step)
  total = int(config.num_train_steps)
  every = int(config.checkpoint_every_steps)
  keep = int(config.keep_checkpoints)
  if loop.already_trained(workdir, step, config):
    return state
  state = parallel.replicate(state, mesh)
  device_images = parallel.replicate(
      train_step.device_training_set(images, run.step_statics.objective.invariance), mesh)
  step_keys, data_keys, hparams = parallel.replicate(
      (run.keys('step'), run.keys('data'), run.hparams), mesh)
  writers = [loop.metric_writer(d) for d in dirs]
  last_saved = step
  start_time, start_step = time.time(), step
  try:
    while step < total and not stop.requested:
      length = loop.chunk_length(step, config)
      chunk = sweep_step.cached_sweep_chunk(run.step_statics, mesh, length)
      state, metrics = chunk(state, device_images, step_keys, data_keys, hparams)
      metrics = jax.device_get(metrics)
      for i, d in enumerate(dirs):
        bad = loop.first_non_finite({k: v[i] for k, v in metrics.items()}, step)
        if bad is not None:
          raise loop.DivergenceError(
              f'divergence at step {bad[0]} of sweep member {i} ({d}): non-finite '
              f'{", ".join(bad[1])} (chunk of steps {step + 1}..{step + length}). Stopped '
              f'without saving; the last good checkpoint of every member is step '
              f'{last_saved}.')
      finite = np.stack(jax.device_get(_finite_members(state)))  # [leaves, M]
      if not finite.all():
        i = int(np.flatnonzero(~finite.all(axis=0))[0])
        raise loop.DivergenceError(
            f'divergence in steps {step + 1}..{step + length} of sweep member {i} ({dirs[i]}): '
            'non-finite parameters though every loss term was finite. Stopped without '
            f'saving; the last good checkpoint of every member is step {last_saved}.')
      step += length
      losses = []
      for i, (d, writer) in enumerate(zip(dirs, writers)):
        record = {'step': step, **{k: float(np.mean(np.ascontiguousarray(v[i])))
                                   for k, v in metrics.items()}}
        workdir_lib.append_metrics(d, record)
        writer.write_scalars(step, {k: v for k, v in record.items() if k != 'step'})
        losses.append(record['loss'])
      rate = (step - start_step) / max(time.time() - start_time, 1e-9)
      logging.info('step %d/%d  %.1f steps/s x %d members  ETA %s  loss %s', step, total, rate,
                   len(dirs), loop.format_seconds((total - step) / max(rate, 1e-9)),
                   ' '.join(f'{l:.3f}' for l in losses))
      if step % every == 0 or step == total:
        _save(state, managers, dirs, keep)
        last_saved = step
    if step < total and last_saved != step:
      _save(state, managers, dirs, keep)
      last_saved = step
  finally:
    for writer in writers:
      writer.flush()
      writer.close()
  if step < total:
    error = loop.TrainingInterrupted(signum=stop.signum, step=step, total=total,
                                        workdir=workdir)
    error.args = (str(error).replace(f'in {workdir}/checkpoints', 'for every member'),)
    raise error
  logging.info('Sweep complete: %d members at step %d in %s.', len(dirs), step, workdir)
  return state

