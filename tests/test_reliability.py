"""Failure behaviour of train.py / eval.py and the trainer (docs/reliability.md).

Two kinds of tests:

* in-process, with a fake (pure numpy) train chunk: the trainer's control flow
  (SIGTERM stop, chunk alignment on resume, NaN detection, no NaN checkpoint),
  the workdir's safety (lock, claim, overwrite, damaged checkpoints) in milliseconds;
* subprocesses of the real train.py / eval.py on the real data (mnist_joint smoke
  config, 60 steps): kill (SIGTERM, SIGKILL, SIGKILL inside a checkpoint write) and
  resume to bitwise-identical parameters and metrics.jsonl, divergence, workdir
  safety, determinism, and every command-line error's exit code and message.

Subprocess runs cost ~10 s each (JAX/TensorFlow imports and compilation): they share
a persistent JAX compilation cache, are reused across assertions through
module-scoped fixtures, and at most two run at a time.

Kills land at a random moment; the seed is printed in failure messages and can be
fixed with VMIVAE_TEST_KILL_SEED. Slow-downs for the kill tests come from a launcher
script written by this module (a per-chunk sleep, a hang inside Orbax's checkpoint
finalisation); the library has no test hooks.
"""

import concurrent.futures
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vmivae_jax.config import config_lib
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.train import loop
from vmivae_jax.train import trainer

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get('VMIVAE_DATA_DIR') or REPO.parent / 'shared' / 'datasets')
HAVE_DATA = (DATA_DIR / 'mnist').is_dir()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f'real datasets not found at {DATA_DIR}')
HAVE_EVALUATE = (REPO / 'vmivae_jax' / 'evaluation').is_dir()

KILL_SEED = int(os.environ.get('VMIVAE_TEST_KILL_SEED', time.time_ns() % 2**32))
STEPS, CHUNK, EVERY = 60, 4, 10   # chunks of 4 that never cross a multiple of 10
RUN_FLAGS = ['--config=configs/mnist_joint.py:smoke', f'--config.data_dir={DATA_DIR}',
             f'--config.num_train_steps={STEPS}', f'--config.steps_per_chunk={CHUNK}',
             f'--config.checkpoint_every_steps={EVERY}']


def _chunk_ends(total=STEPS, chunk=CHUNK, every=EVERY) -> list[int]:
  """The steps at which an uninterrupted run ends its chunks (and may stop)."""
  ends, step = [], 0
  while step < total:
    step += min(chunk, total - step, (step // every + 1) * every - step)
    ends.append(step)
  return ends


# ====================================================================================
# In-process: the trainer's control flow with a fake train chunk.


class _NullWriter:
  def write_scalars(self, step, scalars):
    pass

  def flush(self):
    pass

  def close(self):
    pass


@dataclasses.dataclass
class FakeChunks:
  """Replaces train_step.cached_train_chunk: params += 1 per step, metrics = f(step); records
  the chunk lengths the trainer asks for and can inject NaN/Inf or a SIGTERM."""
  lengths: list = dataclasses.field(default_factory=list)
  feeds: list = dataclasses.field(default_factory=list)
  data: list = dataclasses.field(default_factory=list)     # each chunk's arguments after state
  nan_metric_at: int | None = None
  nan_params_at: int | None = None
  sigterm_at: int | None = None

  def __call__(self, step_statics, mesh, num_steps, feed='device'):
    del step_statics, mesh
    self.lengths.append(num_steps)
    self.feeds.append(feed)

    def chunk(state, *data):
      self.data.append(data)
      first = int(state.step) + 1
      steps = np.arange(first, first + num_steps)
      metrics = {'loss': steps * 0.5, 'elbo': -steps * 0.5, 'kl/gaussian': steps * 0.0 + 1.0}
      params = jax.tree.map(lambda p: p + jnp.float32(num_steps), state.vae_params)
      if self.nan_metric_at in steps:
        metrics['kl/gaussian'] = np.where(steps == self.nan_metric_at, np.inf, 1.0)
        metrics['loss'] = np.where(steps >= self.nan_metric_at, np.nan, metrics['loss'])
      if self.nan_params_at in steps:
        params = jax.tree.map(lambda p: p * np.nan, params)
      if self.sigterm_at in steps:
        os.kill(os.getpid(), signal.SIGTERM)
      return state.replace(step=state.step + num_steps, vae_params=params), metrics
    return chunk


def _fake_config(**overrides) -> ml_collections.ConfigDict:
  config = config_lib.smoke(config_lib.joint_config('mnist'))
  config.data_dir = str(REPO)  # exists; the fake data below is used instead
  config.update(num_train_steps=30, steps_per_chunk=CHUNK, checkpoint_every_steps=EVERY,
                **overrides)
  return config


@pytest.fixture
def fake_training(monkeypatch):
  """trainer.train with a fake chunk, fake data and no TensorBoard writer, 1 device."""
  images = np.zeros((128, 28, 28, 1), np.uint8)
  monkeypatch.setattr(trainer, 'load_train_images', lambda config: images)
  monkeypatch.setattr(trainer, '_metric_writer', lambda workdir: _NullWriter())

  def run(config, workdir, fake=None, **kwargs):
    fake = fake or FakeChunks()
    monkeypatch.setattr(trainer.train_step, 'cached_train_chunk', fake)
    return trainer.train(config, workdir, num_devices=1, **kwargs), fake
  return run


def _restore(workdir, step=None, config=None):
  config = config or workdir_lib.load_config(workdir)
  run = build.build_run(config, num_train_examples=int(config.train_limit or 512))
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    return workdir_lib.restore_checkpoint(manager, run.abstract_state(), step)
  finally:
    workdir_lib.close(manager)


def _leaves_bytes(tree) -> list[tuple[str, tuple, bytes]]:
  return [(str(np.asarray(x).dtype), np.shape(x), np.asarray(x).tobytes())
          for x in jax.tree.leaves(tree)]


def _assert_bitwise_equal(a, b, what=''):
  la, lb = _leaves_bytes(a), _leaves_bytes(b)
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  differing = [i for i, (x, y) in enumerate(zip(la, lb)) if x != y]
  assert not differing, f'{what}: {len(differing)} of {len(la)} leaves differ'


def _all_finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_sigterm_stops_at_a_chunk_boundary_and_resume_is_aligned_and_bitwise(
    fake_training, tmp_path):
  config = _fake_config()
  _, straight = fake_training(config, tmp_path / 'straight')
  assert straight.lengths == [4, 4, 2, 4, 4, 2, 4, 4, 2]

  workdir = tmp_path / 'stopped'
  with pytest.raises(trainer.TrainingInterrupted) as info:
    fake_training(config, workdir, FakeChunks(sigterm_at=12))
  assert info.value.step == 14 and info.value.signum == signal.SIGTERM
  assert str(info.value) == (
      f'stopped by SIGTERM at step 14/30; a checkpoint of step 14 is saved in '
      f'{workdir}/checkpoints. Rerun the same command to resume.')
  assert workdir_lib.checkpoint_steps(workdir) == [10, 14]
  assert [r['step'] for r in workdir_lib.read_metrics(workdir)][-1] == 14
  assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored after the run

  _, resumed = fake_training(config, workdir)
  assert resumed.lengths == [4, 2, 4, 4, 2]  # 14->18->20->...: the uninterrupted chunks
  _assert_bitwise_equal(_restore(workdir, 30, config), _restore(tmp_path / 'straight', 30,
                                                                 config), 'final state')
  assert ((workdir / 'metrics.jsonl').read_bytes() ==
          (tmp_path / 'straight' / 'metrics.jsonl').read_bytes())


def test_non_finite_metric_names_step_and_term_and_saves_nothing(fake_training, tmp_path):
  config = _fake_config()
  workdir = tmp_path / 'run'
  with pytest.raises(trainer.DivergenceError) as info:
    fake_training(config, workdir, FakeChunks(nan_metric_at=13))
  assert str(info.value) == (
      'divergence at step 13: non-finite kl/gaussian=inf, loss=nan (chunk of steps '
      f'11..14). Stopped without saving; the last good checkpoint is step 10 in '
      f'{workdir}/checkpoints.')
  assert workdir_lib.checkpoint_steps(workdir) == [0, 10]
  assert [r['step'] for r in workdir_lib.read_metrics(workdir)] == [4, 8, 10]
  assert _all_finite(_restore(workdir, 10, config))


def test_non_finite_parameters_with_finite_metrics_are_never_checkpointed(
    fake_training, tmp_path):
  """The last update of a chunk can make the params NaN while every metric (measured
  before that update) is finite: the state itself is checked before any save."""
  config = _fake_config()
  workdir = tmp_path / 'run'
  with pytest.raises(trainer.DivergenceError) as info:
    fake_training(config, workdir, FakeChunks(nan_params_at=20))
  message = str(info.value)
  assert message.startswith('divergence in steps 19..20: non-finite parameters (.vae_params[')
  assert 'the last good checkpoint is step 10' in message
  assert workdir_lib.checkpoint_steps(workdir) == [0, 10]  # no step-20 checkpoint
  assert _all_finite(_restore(workdir, None, config))


def test_first_non_finite_picks_the_earliest_step_and_every_bad_term():
  metrics = {'loss': np.array([1.0, 2.0, np.nan]), 'kl/gaussian': np.array([1.0, np.inf, 1.0]),
             'elbo': np.array([1.0, -np.inf, np.nan])}
  assert trainer._first_non_finite(metrics, 10) == (12, ['kl/gaussian=inf', 'elbo=-inf'])
  assert trainer._first_non_finite({'loss': np.ones(3)}, 0) is None


def test_a_finished_run_rerun_does_nothing(fake_training, tmp_path):
  config = _fake_config()
  fake_training(config, tmp_path / 'run')
  before = (tmp_path / 'run' / 'metrics.jsonl').read_bytes()
  _, again = fake_training(config, tmp_path / 'run')
  assert again.lengths == []
  assert (tmp_path / 'run' / 'metrics.jsonl').read_bytes() == before


def test_without_tensorflow_a_run_trains_and_logs_metrics_without_event_files(
    monkeypatch, tmp_path):
  """Accelerator images often lack TensorFlow (CLU's writer imports it): the run must not
  fail for want of TensorBoard files."""
  images = np.zeros((128, 28, 28, 1), np.uint8)
  monkeypatch.setattr(trainer, 'load_train_images', lambda config: images)
  monkeypatch.setattr(trainer.train_step, 'cached_train_chunk', FakeChunks())
  monkeypatch.setitem(sys.modules, 'clu', None)  # `from clu import ...` raises ImportError
  warnings = []
  monkeypatch.setattr(loop.logging, 'warning', lambda msg, *a: warnings.append(msg % a))
  trainer.train(_fake_config(), tmp_path / 'run', num_devices=1)
  lines = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  assert json.loads(lines[-1])['step'] == 30
  assert not list((tmp_path / 'run').glob('events.out.tfevents*'))
  assert any('No TensorBoard event files' in w and 'metrics.jsonl' in w for w in warnings)


def test_host_feed_feeds_every_chunk_its_batches_and_leaves_the_data_on_the_host(
    fake_training, tmp_path, monkeypatch):
  """config.data_feed='host': each chunk gets images[preprocess.batch_indices(...)] of its
  steps (the device feed's batch order), the training set is never placed on a device,
  and a run may switch feeds on its workdir (same batches: data_feed is extendable)."""
  from vmivae_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  images = np.broadcast_to(np.arange(128, dtype=np.uint8)[:, None, None, None],
                           (128, 28, 28, 1)).copy()          # row i holds the value i
  monkeypatch.setattr(trainer, 'load_train_images', lambda config: images)
  placed = []
  replicate = trainer.parallel.replicate
  monkeypatch.setattr(trainer.parallel, 'replicate',
                      lambda tree, mesh: placed.append(tree) or replicate(tree, mesh))
  workdir = tmp_path / 'run'
  first = _fake_config()
  first.num_train_steps = 20
  _, device_fed = fake_training(first, workdir)
  assert set(device_fed.feeds) == {'device'}
  assert device_fed.data[0][0].images.shape == (128, 28, 28, 1)   # train_step.TrainingSet
  placed.clear()
  config = _fake_config(data_feed='host')
  _, host_fed = fake_training(config, workdir)   # resumes at step 20 with the other feed
  assert sum(host_fed.lengths) == 10 and set(host_fed.feeds) == {'host'}
  assert not [x.shape for x in jax.tree.leaves(placed) if np.ndim(x) and len(x) == 128]
  data_key, step = build.build_run(config, num_train_examples=128).keys['data'], 20
  for length, (batches, _) in zip(host_fed.lengths, host_fed.data):
    want = preprocess.batch_indices(data_key, step, length, batch_size=64, num_examples=128)
    assert batches.shape == (length, 64, 28, 28, 1)
    np.testing.assert_array_equal(np.asarray(batches)[..., 0, 0, 0], want)
    step += length


# --- Workdir safety, in-process.


def test_claim_same_config_resumes_different_refuses_overwrite_deletes(tmp_path):
  config = _fake_config()
  workdir = tmp_path / 'run'
  assert workdir_lib.claim(workdir, config, overwrite=False) is False
  assert workdir_lib.claim(workdir, config, overwrite=False) is True
  (workdir / 'checkpoints' / '10').mkdir(parents=True)
  (workdir / 'metrics.jsonl').write_text('{"step": 10}\n')
  (workdir / 'events.out.tfevents.1.host.2.v2').write_text('x')
  (workdir / 'eval').mkdir()
  (workdir / 'notes.txt').write_text('mine')

  other = _fake_config(seed=1, beta=2.0)
  with pytest.raises(workdir_lib.WorkdirError) as info:
    workdir_lib.claim(workdir, other, overwrite=False)
  assert str(info.value) == (
      f'{workdir} holds a run with a different config (differs in: beta, seed). Use '
      'another --workdir, or pass --overwrite to delete that run.')
  assert (workdir / 'checkpoints' / '10').exists()

  assert workdir_lib.claim(workdir, other, overwrite=True) is False
  assert sorted(p.name for p in workdir.iterdir()) == ['config.json', 'notes.txt']
  assert workdir_lib.load_config(workdir).seed == 1


@pytest.mark.parametrize('content', ['not json', '[1, 2]', '{"hello": 1}'])
def test_claim_refuses_a_foreign_config_json(tmp_path, content):
  (tmp_path / 'config.json').write_text(content)
  with pytest.raises(workdir_lib.WorkdirError, match='pass --overwrite to delete'):
    workdir_lib.claim(tmp_path, _fake_config(), overwrite=False)
  assert workdir_lib.claim(tmp_path, _fake_config(), overwrite=True) is False


def test_claim_refuses_checkpoints_without_config(tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match='has checkpoints but no config.json'):
    workdir_lib.claim(tmp_path, _fake_config(), overwrite=False)


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='exists and is not a directory'):
    workdir_lib.claim(tmp_path / 'file', _fake_config(), overwrite=False)
  with pytest.raises(workdir_lib.WorkdirError, match='exists and is not a directory'):
    with workdir_lib.lock(tmp_path / 'file'):
      pass


def test_two_runs_never_share_a_workdir(fake_training, tmp_path):
  workdir = tmp_path / 'run'
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirError) as info:
      fake_training(_fake_config(), workdir)
    assert str(info.value) == (f'{workdir} is in use by another process (pid {os.getpid()});'
                               ' a workdir holds one run at a time')
  fake_training(_fake_config(), workdir)  # released: the run proceeds


def test_a_damaged_latest_checkpoint_is_a_clear_error(fake_training, tmp_path):
  config = _fake_config()
  workdir = tmp_path / 'run'
  fake_training(config, workdir)
  assert workdir_lib.checkpoint_steps(workdir) == [20, 30]
  for path in (workdir / 'checkpoints' / '30').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      path.write_bytes(b'garbage')
  with pytest.raises(workdir_lib.WorkdirError) as info:
    _restore(workdir, None, config)
  message = str(info.value)
  assert message.startswith(f'{workdir.absolute()}/checkpoints/30: unreadable checkpoint (')
  assert message.endswith('; delete it to resume from step 20')
  shutil.rmtree(workdir / 'checkpoints' / '30')
  assert int(_restore(workdir, None, config).step) == 20
  with pytest.raises(workdir_lib.WorkdirError, match=r'no checkpoint for step 7 \(available'):
    _restore(workdir, 7, config)


def test_truncate_metrics_drops_lines_after_the_checkpoint_and_a_torn_line(tmp_path):
  lines = [json.dumps({'step': s, 'loss': 1.0}) for s in (4, 8, 10, 14)]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 18, "lo')
  workdir_lib.truncate_metrics(tmp_path, 10)
  assert (tmp_path / 'metrics.jsonl').read_text() == '\n'.join(lines[:3]) + '\n'
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 18, "lo')
  workdir_lib.truncate_metrics(tmp_path, 14)
  assert (tmp_path / 'metrics.jsonl').read_text() == '\n'.join(lines) + '\n'


def test_check_evaluable(fake_training, tmp_path):
  with pytest.raises(workdir_lib.WorkdirError, match='does not exist'):
    workdir_lib.check_evaluable(tmp_path / 'nope')
  with pytest.raises(workdir_lib.WorkdirError, match=r'no config.json \(it is empty\)'):
    workdir_lib.check_evaluable(tmp_path)
  (tmp_path / 'config.json').write_text('{"hello": 1}')
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'is not a valid train.py config: config.hello=1: unknown key'):
    workdir_lib.check_evaluable(tmp_path)
  workdir = tmp_path / 'run'
  workdir_lib.claim(workdir, _fake_config(), overwrite=False)
  with pytest.raises(workdir_lib.WorkdirError, match='has no checkpoint yet'):
    workdir_lib.check_evaluable(workdir)
  fake_training(_fake_config(), workdir)
  assert workdir_lib.check_evaluable(workdir).seed == 0
  with pytest.raises(workdir_lib.WorkdirError, match=r'no checkpoint for step 7 \(available: '
                                                     r'\[20, 30\]\)'):
    workdir_lib.check_evaluable(workdir, 7)


# ====================================================================================
# Subprocesses: the real train.py and eval.py.

LAUNCHER = '''\
"""Runs train.py with test-only slow-downs (written by tests/test_reliability.py)."""
import os, runpy, sys, time

sleep = float(os.environ.get('VMIVAE_TEST_CHUNK_SLEEP', '0'))
hang_step = os.environ.get('VMIVAE_TEST_HANG_SAVE_STEP', '')
if sleep:  # a slower chunk, so that a kill lands mid-run
  from vmivae_jax.train import train_step
  _make = train_step.cached_train_chunk

  def slow_chunk(*args, **kwargs):
    fn = _make(*args, **kwargs)

    def run(*a):
      out = fn(*a)
      time.sleep(sleep)
      return out
    return run
  train_step.cached_train_chunk = slow_chunk
if hang_step:  # hang inside the checkpoint write of step hang_step, before its rename
  from orbax.checkpoint._src.path import atomicity
  _finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self, *args, **kwargs):
    if self.get_final().name == hang_step:
      with open(os.environ['VMIVAE_TEST_HANG_MARKER'], 'w') as f:
        f.write(str(self.get()))
      time.sleep(3600)
    return await _finalize(self, *args, **kwargs)
  atomicity.AtomicRenameTemporaryPath.finalize = finalize

sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')
'''


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  def describe(self) -> str:
    tail = '\n'.join(self.stderr.strip().splitlines()[-15:])
    return f'exit {self.returncode} after {self.seconds:.1f}s; stderr tail:\n{tail}'


class Proc:
  """One subprocess (of this test module only), its output in files."""

  live: set = set()

  def __init__(self, logs: Path, name: str, args: list[str], env: dict):
    self.name, self.logs = name, logs
    self._out = open(logs / f'{name}.out', 'w')  # pylint: disable=consider-using-with
    self._err = open(logs / f'{name}.err', 'w')  # pylint: disable=consider-using-with
    self.start = time.time()
    self.popen = subprocess.Popen([sys.executable] + args, cwd=REPO, env=env,
                                  stdout=self._out, stderr=self._err,
                                  stdin=subprocess.DEVNULL)
    Proc.live.add(self)

  def running(self) -> bool:
    return self.popen.poll() is None

  def stderr(self) -> str:
    self._err.flush()
    return (self.logs / f'{self.name}.err').read_text()

  def signal(self, signum: int) -> None:
    if self.running():
      self.popen.send_signal(signum)

  def wait(self, timeout: float = 600) -> Result:
    try:
      code = self.popen.wait(timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise
    finally:
      self._out.close()
      self._err.close()
      Proc.live.discard(self)
    return Result(code, (self.logs / f'{self.name}.out').read_text(),
                  (self.logs / f'{self.name}.err').read_text(), time.time() - self.start)

  def kill(self) -> None:
    if self.running():
      self.popen.kill()
      self.popen.wait()


class Runner:
  """Starts train.py / eval.py subprocesses with a shared compilation cache."""

  def __init__(self, base: Path):
    self.base = base
    self.logs = base / 'logs'
    self.logs.mkdir(parents=True)
    (base / 'launch.py').write_text(LAUNCHER)
    env = dict(os.environ)
    env.pop('XLA_FLAGS', None)  # one CPU device, as a user's plain run
    env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(base / 'jax_cache'),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', TF_CPP_MIN_LOG_LEVEL='2',
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [
                   os.environ.get('PYTHONPATH')] if p]))
    self.env = env
    self.count = 0
    self.timings = []

  def start(self, script: str, *args: str, env: dict | None = None, name: str = '') -> Proc:
    self.count += 1
    name = f'{self.count:02d}_{name or Path(script).stem}'
    if script == 'launch':
      argv = [str(self.base / 'launch.py'), *args]
    else:
      argv = [script, *args]
    return Proc(self.logs, name, argv, {**self.env, **(env or {})})

  def run(self, script: str, *args: str, env: dict | None = None, timeout: float = 600,
          name: str = '') -> Result:
    proc = self.start(script, *args, env=env, name=name)
    result = proc.wait(timeout)
    self.timings.append((proc.name, result.seconds))
    return result


@pytest.fixture(scope='module')
def runner(tmp_path_factory):
  runner = Runner(tmp_path_factory.mktemp('reliability'))
  yield runner
  for proc in list(Proc.live):  # only processes this module started
    proc.kill()
  print('\nsubprocess wall times: ' + ', '.join(f'{n} {t:.0f}s' for n, t in runner.timings))


def _assert_user_error(result: Result, *fragments: str, code: int = 2) -> None:
  assert result.returncode == code, result.describe()
  assert 'Traceback' not in result.stderr, result.describe()
  error_lines = [l for l in result.stderr.splitlines() if l.startswith(('error: ', 'stopped: '))]
  assert len(error_lines) == 1, result.describe()
  for fragment in fragments:
    assert fragment in error_lines[0], f'{fragment!r} not in {error_lines[0]!r}'


def _metric_steps(workdir: Path) -> list[int]:
  steps = []
  path = workdir / 'metrics.jsonl'
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        steps.append(json.loads(line)['step'])
      except (ValueError, KeyError):
        pass
  return steps


def _wait_for(predicate, what: str, proc: Proc | None = None, timeout: float = 300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc is not None and not proc.running():
      raise AssertionError(f'{what}: the process ended first: {proc.wait().describe()}')
    time.sleep(0.05)
  raise AssertionError(f'timed out waiting for {what}')


# --- Scheduling: the foreground runs the reference run, then the kill chain (timing
# sensitive); one background worker runs everything else meanwhile, so that at most
# two processes of this module run at a time.


def _corrupt_data_dir(base: Path) -> Path:
  mnist = base / 'corrupt_data' / 'mnist'
  mnist.mkdir(parents=True)
  real = (DATA_DIR / 'mnist' / 'train-images-idx3-ubyte.gz').read_bytes()
  (mnist / 'train-images-idx3-ubyte.gz').write_bytes(real[:len(real) // 3])  # truncated
  shutil.copy(DATA_DIR / 'mnist' / 'train-labels-idx1-ubyte.gz', mnist)
  return mnist.parent


def _quick_commands(base: Path) -> dict:
  """Commands that must fail fast, before any training: name -> (script, args, env)."""
  (base / 'empty').mkdir()
  (base / 'random_files').mkdir()
  (base / 'random_files' / 'notes.txt').write_text('hello')
  (base / 'foreign').mkdir()
  (base / 'foreign' / 'config.json').write_text('{"model": "resnet"}')
  corrupt = _corrupt_data_dir(base)
  smoke = ['--config=configs/mnist_joint.py:smoke', f'--config.data_dir={DATA_DIR}',
           f'--workdir={base / "wd" / "a"}']
  no_data = ['--config=configs/mnist_joint.py:smoke', f'--workdir={base / "wd" / "a"}']
  return {
      'unknown_key': ('train.py', [*smoke, '--config.nonexistent=1'], {}),
      'misspelt_key': ('train.py', [*smoke, '--config.mi_wieght=1'], {}),
      'not_an_int': ('train.py', [*smoke, '--config.batch_size=abc'], {}),
      'negative_lr': ('train.py', [*smoke, '--config.vae_optimizer.learning_rate=-1'], {}),
      'missing_data_dir': ('train.py', [*no_data, f'--config.data_dir={base / "no_such_dir"}'],
                           {}),
      'batch_vs_8_devices': ('train.py', [*smoke, '--config.batch_size=60'],
                             {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}),
      'corrupt_data': ('train.py', [*no_data, f'--config.data_dir={corrupt}'], {}),
      'missing_config_file': ('train.py', ['--config=configs/nope.py', smoke[-1]], {}),
      'eval_nonexistent': ('eval.py', [f'--workdir={base / "nonexistent"}'], {}),
      'eval_empty': ('eval.py', [f'--workdir={base / "empty"}'], {}),
      'eval_random_files': ('eval.py', [f'--workdir={base / "random_files"}'], {}),
      'eval_foreign': ('eval.py', [f'--workdir={base / "foreign"}'], {}),
      'second_sigterm': ('-c', [
          'import os, signal, time\n'
          'from vmivae_jax.train import trainer\n'
          'with trainer._StopRequest() as stop:\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  assert stop.requested\n'
          '  print("first signal: stop requested", flush=True)\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  time.sleep(30)\n'
          'print("not reached")\n'], {}),
  }


@pytest.fixture(scope='module')
def background(runner):
  """name -> future of every run that does not need the reference run."""
  if not HAVE_DATA:
    pytest.skip(f'real datasets not found at {DATA_DIR}')
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  base = runner.base
  jobs = {}

  def divergence():
    workdir = base / 'diverged'
    trained = runner.run(
        'train.py', *RUN_FLAGS, '--config.vae_optimizer.learning_rate=1e8',
        '--config.eval.q_train_steps=5', '--config.eval.iwae_samples=2',
        '--config.eval.iwae_chunk=2', '--config.test_limit=100', '--config.eval.batch_size=50',
        '--config.eval.num_figure_examples=2', f'--workdir={workdir}', name='diverged')
    evaluated = (runner.run('eval.py', f'--workdir={workdir}', name='eval_diverged')
                 if HAVE_EVALUATE else None)
    return trained, evaluated

  jobs['divergence'] = pool.submit(divergence)
  for name, (script, args, env) in _quick_commands(base).items():
    jobs[name] = pool.submit(runner.run, script, *args, env=env, timeout=300, name=name)
  jobs['elbo_only'] = pool.submit(
      runner.run, 'train.py', *RUN_FLAGS, '--config.mi_weight=0', '--config.num_train_steps=4',
      f'--workdir={base / "elbo_only"}', name='elbo_only')
  jobs['reference_again'] = pool.submit(
      runner.run, 'train.py', *RUN_FLAGS, f'--workdir={base / "reference_again"}',
      name='reference_again')
  yield pool, jobs
  pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope='module')
def reference(runner, background):
  """The uninterrupted run every other run is compared with (foreground)."""
  pool, jobs = background
  base = runner.base
  workdir = base / 'reference'
  result = runner.run('train.py', *RUN_FLAGS, f'--workdir={workdir}', name='reference')
  assert result.returncode == 0, result.describe()

  def other_seed():
    copy = base / 'other_seed'
    shutil.copytree(workdir, copy)
    refused = runner.run('train.py', *RUN_FLAGS, '--config.seed=1', f'--workdir={copy}',
                         name='other_seed_refused')
    files_after_refusal = sorted(str(p.relative_to(copy)) for p in copy.rglob('*'))
    overwritten = runner.run('train.py', *RUN_FLAGS, '--config.seed=1', '--overwrite',
                             f'--workdir={copy}', name='other_seed_overwrite')
    return refused, files_after_refusal, overwritten

  def rerun_finished():
    jobs['reference_again'].result()  # queued before: finished when this one starts
    return runner.run('train.py', *RUN_FLAGS, f'--workdir={base / "reference_again"}',
                      name='rerun_finished')

  jobs['other_seed'] = pool.submit(other_seed)
  jobs['rerun_finished'] = pool.submit(rerun_finished)
  return workdir


class _Results:
  """name -> Result, waiting for each background job when first asked."""

  def __init__(self, jobs):
    self._jobs = jobs

  def __getitem__(self, name) -> Result:
    return self._jobs[name].result()


@pytest.fixture(scope='module')
def quick(background):
  return _Results(background[1])


@pytest.fixture(scope='module')
def kill_chain(runner, reference):
  """One workdir, killed three ways in turn, then run to the end:

  1. SIGTERM at a random moment: clean stop at a chunk boundary, exit 143;
  2. SIGKILL at a random moment after it resumed;
  3. SIGKILL while it writes a checkpoint (hung before Orbax's final rename);
  4. run to completion: must equal the uninterrupted reference bitwise.
  """
  del reference  # the comparison run: first, so that the compilation cache is warm
  rng = random.Random(KILL_SEED)
  workdir = runner.base / 'killed'
  seen = {'seed': KILL_SEED}
  slow = {'VMIVAE_TEST_CHUNK_SLEEP': '0.3'}

  # 1. SIGTERM.
  proc = runner.start('launch', *RUN_FLAGS, f'--workdir={workdir}', env=slow, name='sigterm')
  _wait_for(lambda: _metric_steps(workdir), 'first metrics', proc)
  time.sleep(rng.uniform(0.0, 0.8))
  proc.signal(signal.SIGTERM)
  seen['sigterm'] = proc.wait(120)
  match = re.search(r'stopped by SIGTERM at step (\d+)/60', seen['sigterm'].stderr)
  seen['stop_step'] = int(match.group(1)) if match else None
  seen['after_sigterm'] = (workdir_lib.checkpoint_steps(workdir), _metric_steps(workdir))

  # 2. SIGKILL at a random moment after resuming.
  stop_step = seen['stop_step'] or 0
  proc = runner.start('launch', *RUN_FLAGS, f'--workdir={workdir}', env=slow, name='sigkill')
  _wait_for(lambda: max(_metric_steps(workdir) or [0]) > stop_step, 'progress after resume',
            proc)
  time.sleep(rng.uniform(0.0, 0.6))
  proc.signal(signal.SIGKILL)
  seen['sigkill'] = proc.wait(60)
  seen['after_sigkill'] = (workdir_lib.checkpoint_steps(workdir), _metric_steps(workdir))
  seen['state_after_sigkill'] = _restore(workdir)

  # 3. SIGKILL inside the next checkpoint write.
  latest = workdir_lib.checkpoint_steps(workdir)[-1]
  hang = min((latest // EVERY + 1) * EVERY, STEPS)
  marker = runner.base / 'hang_marker'
  proc = runner.start('launch', *RUN_FLAGS, f'--workdir={workdir}', name='kill_in_save',
                      env={'VMIVAE_TEST_HANG_SAVE_STEP': str(hang),
                           'VMIVAE_TEST_HANG_MARKER': str(marker)})
  _wait_for(marker.exists, f'the checkpoint write of step {hang}', proc)
  seen['hang_step'] = hang
  seen['partial_dir'] = Path(marker.read_text())
  proc.signal(signal.SIGKILL)
  seen['kill_in_save'] = proc.wait(60)
  seen['partial_dir_existed'] = seen['partial_dir'].exists()
  seen['after_kill_in_save'] = (workdir_lib.checkpoint_steps(workdir), _metric_steps(workdir))
  seen['state_after_kill_in_save'] = _restore(workdir)

  # 4. To the end.
  seen['final'] = runner.run('train.py', *RUN_FLAGS, f'--workdir={workdir}', name='final')
  seen['workdir'] = workdir
  return seen


def _ctx(chain) -> str:
  return f'(VMIVAE_TEST_KILL_SEED={chain["seed"]})'


# --- Kill and resume.


@needs_data
def test_sigterm_checkpoints_and_exits_143(kill_chain):
  result, step = kill_chain['sigterm'], kill_chain['stop_step']
  _assert_user_error(result, 'stopped: stopped by SIGTERM at step',
                     'Rerun the same command to resume.', code=128 + signal.SIGTERM)
  assert step in _chunk_ends() and step < STEPS, _ctx(kill_chain)
  checkpoints, metric_steps = kill_chain['after_sigterm']
  assert checkpoints[-1] == step, _ctx(kill_chain)
  assert metric_steps == [s for s in _chunk_ends() if s <= step], _ctx(kill_chain)


@needs_data
def test_sigkill_leaves_a_readable_latest_checkpoint(kill_chain):
  assert kill_chain['sigkill'].returncode == -signal.SIGKILL, kill_chain['sigkill'].describe()
  assert f'from step {kill_chain["stop_step"]}.' in kill_chain['sigkill'].stderr
  checkpoints, _ = kill_chain['after_sigkill']
  state = kill_chain['state_after_sigkill']
  assert int(state.step) == checkpoints[-1] and _all_finite(state), _ctx(kill_chain)


@needs_data
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(kill_chain):
  assert kill_chain['kill_in_save'].returncode == -signal.SIGKILL
  hang = kill_chain['hang_step']
  assert kill_chain['partial_dir_existed'], 'the kill did not land inside the write'
  assert kill_chain['partial_dir'].name.startswith(f'{hang}.orbax-checkpoint-tmp')
  checkpoints, metric_steps = kill_chain['after_kill_in_save']
  assert hang not in checkpoints and checkpoints[-1] < hang, _ctx(kill_chain)
  assert metric_steps[-1] == hang  # logged before the save: the resumed run must drop it
  state = kill_chain['state_after_kill_in_save']
  assert int(state.step) == checkpoints[-1] and _all_finite(state)


@needs_data
def test_resumed_run_is_bitwise_identical_to_an_uninterrupted_one(kill_chain, reference):
  final = kill_chain['final']
  assert final.returncode == 0, final.describe()
  workdir = kill_chain['workdir']
  assert not kill_chain['partial_dir'].exists()  # the partial write was cleaned up
  assert (workdir / 'metrics.jsonl').read_bytes() == (
      reference / 'metrics.jsonl').read_bytes(), _ctx(kill_chain)
  _assert_bitwise_equal(_restore(workdir, STEPS), _restore(reference, STEPS),
                        f'final state {_ctx(kill_chain)}')


# --- Command-line errors.


@needs_data
def test_cli_unknown_config_key(quick):
  _assert_user_error(quick['unknown_key'],
                     "error: --config.nonexistent=1: the config has no key 'nonexistent'")
  _assert_user_error(quick['misspelt_key'],
                     "--config.mi_wieght=1: the config has no key 'mi_wieght'; did you mean "
                     '--config.mi_weight?')


@needs_data
def test_cli_value_of_the_wrong_type(quick):
  _assert_user_error(quick['not_an_int'], 'error: flag --config.batch_size=abc: invalid literal '
                     "for int() with base 10: 'abc'")


@needs_data
def test_cli_invalid_values_fail_before_touching_the_workdir(quick, runner):
  _assert_user_error(quick['negative_lr'],
                     'error: config.vae_optimizer.learning_rate=-1.0: must be > 0.0')
  _assert_user_error(quick['batch_vs_8_devices'], 'error: config.batch_size=60: must be '
                     'divisible by the number of devices (8)')
  _assert_user_error(quick['missing_config_file'], 'error: --config: cannot load the config '
                     'file', 'configs/nope.py')
  assert not (runner.base / 'wd' / 'a').exists()


@needs_data
def test_cli_missing_data_dir(quick, runner):
  missing = runner.base / 'no_such_dir'
  _assert_user_error(quick['missing_data_dir'], f"error: config.data_dir='{missing}': data "
                     f'directory {missing} does not exist or is not a directory')


@needs_data
def test_cli_corrupt_data_names_the_file(quick, runner):
  """Data errors themselves are covered in tests/test_data.py; here: the CLI's reaction."""
  path = runner.base / 'corrupt_data' / 'mnist' / 'train-images-idx3-ubyte.gz'
  _assert_user_error(quick['corrupt_data'], f'error: {path}: truncated gzip stream')
  assert not (runner.base / 'wd' / 'a').exists()


@needs_data
def test_eval_on_a_workdir_without_a_run_says_so(quick, runner):
  base = runner.base
  _assert_user_error(quick['eval_nonexistent'], f'error: {base / "nonexistent"} does not exist')
  _assert_user_error(quick['eval_empty'], f'error: {base / "empty"} is not the workdir of a '
                     'train.py run: no config.json (it is empty)')
  _assert_user_error(quick['eval_random_files'], f'error: {base / "random_files"} is not the '
                     'workdir of a train.py run: no config.json (it holds notes.txt)')
  _assert_user_error(quick['eval_foreign'], f'error: {base / "foreign" / "config.json"} is not '
                     'a valid train.py config: config.batch_size is missing')


@needs_data
def test_a_second_signal_stops_at_once(quick):
  result = quick['second_sigterm']
  assert result.returncode == -signal.SIGTERM, result.describe()
  assert 'first signal: stop requested' in result.stdout
  assert 'not reached' not in result.stdout


# --- Divergence, workdir safety, determinism.


@needs_data
def test_divergence_stops_with_step_and_term_and_the_last_checkpoint_evaluates(
    background, runner):
  trained, evaluated = background[1]['divergence'].result()
  workdir = runner.base / 'diverged'
  _assert_user_error(trained, 'error: divergence at step', 'non-finite',
                     f'the last good checkpoint is step 0 in {workdir}/checkpoints', code=3)
  line = next(l for l in trained.stderr.splitlines() if l.startswith('error: '))
  match = re.match(r'error: divergence at step (\d+): non-finite (.*) \(chunk of steps', line)
  assert match, line
  terms = [t.split('=')[0] for t in match.group(2).split(', ')]
  assert set(terms) <= {'loss', 'elbo', 'elbo_relaxed', 'reconstruction', 'kl_total',
                        'kl/gaussian', 'kl/categorical_0', 'log_q', 'mi_bound',
                        'mi_objective_prior_entropy', 'mi_entropy', 'q_loss'}, terms
  assert 1 <= int(match.group(1)) <= CHUNK
  # Nothing after the last good state was saved or logged; it restores, finite.
  assert workdir_lib.checkpoint_steps(workdir) == [0]
  assert _metric_steps(workdir) == []
  assert _all_finite(_restore(workdir))
  if evaluated is None:
    pytest.skip('vmivae_jax/evaluation/ does not exist yet: eval.py not run')
  assert evaluated.returncode == 0, evaluated.describe()
  assert json.loads((workdir / 'eval' / 'metrics.json').read_text())


@needs_data
def test_a_different_config_is_refused_then_overwritten(background, reference):
  refused, files_after_refusal, overwritten = background[1]['other_seed'].result()
  workdir = reference.parent / 'other_seed'
  _assert_user_error(refused, f'error: {workdir} holds a run with a different config (differs '
                     'in: seed). Use another --workdir, or pass --overwrite to delete that run.')
  original = sorted(str(p.relative_to(reference)) for p in reference.rglob('*'))
  assert files_after_refusal == original  # untouched
  assert overwritten.returncode == 0, overwritten.describe()
  assert workdir_lib.load_config(workdir).seed == 1
  assert workdir_lib.checkpoint_steps(workdir) == [STEPS - EVERY, STEPS]
  assert len(list(workdir.glob('events.out.tfevents.*'))) == 1  # the old run's are gone
  # Another seed: different metrics, different initial parameters.
  assert _metric_steps(workdir) == _chunk_ends()
  assert (workdir / 'metrics.jsonl').read_bytes() != (reference / 'metrics.jsonl').read_bytes()
  abstract = build.build_run(workdir_lib.load_config(workdir),
                               num_train_examples=512).abstract_state()
  seed1 = workdir_lib.load_initial_state(workdir, abstract).vae_params
  seed0 = workdir_lib.load_initial_state(reference, abstract).vae_params
  kernels = [(a, b) for a, b in zip(jax.tree.leaves(seed1), jax.tree.leaves(seed0))
             if np.ndim(a) >= 2]
  assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


@needs_data
def test_same_seed_gives_identical_metrics_and_parameters(background, reference):
  again = background[1]['reference_again'].result()
  assert again.returncode == 0, again.describe()
  second = reference.parent / 'reference_again'
  assert _metric_steps(reference) == _chunk_ends()
  assert (reference / 'metrics.jsonl').read_bytes() == (second / 'metrics.jsonl').read_bytes()
  _assert_bitwise_equal(_restore(reference, STEPS), _restore(second, STEPS), 'final state')


@needs_data
def test_the_same_config_resumes_a_finished_run_without_retraining(background, reference):
  before = (reference.parent / 'reference_again' / 'metrics.jsonl').read_bytes()
  result = background[1]['rerun_finished'].result()
  assert result.returncode == 0, result.describe()
  assert f'already trained to step {STEPS}; nothing to do' in result.stderr
  assert (reference.parent / 'reference_again' / 'metrics.jsonl').read_bytes() == before


@needs_data
def test_elbo_only_and_mi_runs_share_the_initial_vae(background, reference):
  result = background[1]['elbo_only'].result()
  assert result.returncode == 0, result.describe()
  elbo_dir = reference.parent / 'elbo_only'
  elbo_config, mi_config = (workdir_lib.load_config(d) for d in (elbo_dir, reference))
  assert elbo_config.mi_weight == 0.0 and mi_config.mi_weight > 0
  abstract = build.build_run(mi_config, num_train_examples=512).abstract_state()
  mi_init = workdir_lib.load_initial_state(reference, abstract)
  elbo_init = workdir_lib.load_initial_state(elbo_dir, abstract)
  _assert_bitwise_equal(elbo_init.vae_params, mi_init.vae_params, 'initial VAE params')
  _assert_bitwise_equal(_restore(elbo_dir, 0).vae_params, mi_init.vae_params,
                        'step-0 checkpoint of the ELBO run')
  _assert_bitwise_equal(elbo_init.q_params, mi_init.q_params, 'initial Q params')
