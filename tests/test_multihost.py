"""Several processes, one run (jax.distributed): 2 processes x 2 CPU devices train what
1 process x 4 devices trains, on the real data (skipped if absent, or if this jaxlib has
no CPU collectives).

The two-process run is real: two train.py processes on this machine, joined through a
coordinator on a free local port, all-reducing over gloo (JAX's CPU collectives). It
trains 2 steps with the device feed (the training set replicated on every device), then
is extended to 4 steps on the same workdir with the host feed (``config.data_feed='host'``:
each process feeds only its devices' rows of every batch; every process restores the
step-2 checkpoint through Orbax's multi-host path); the reference trains 4 steps with
the device feed in this pytest process on a 4-device mesh.
"""

import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.train import trainer
from vmivae_jax.util import distributed
from tests.golden import make_golden

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get('VMIVAE_DATA_DIR') or str(ROOT.parent / 'shared' / 'datasets')
CONFIG = 'configs/mnist_joint.py:smoke'
OVERRIDES = {'num_train_steps': 4, 'steps_per_chunk': 2, 'checkpoint_every_steps': 2}
TIMEOUT = 180
# gloo's all-reduce adds the per-device partial means in another order than XLA:CPU's
# in-process all-reduce: equal up to float rounding (measured: ~1e-7 relative).
RTOL, ATOL = 2e-5, 1e-6

_PROBE = '''
import sys, jax, numpy as np
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
mesh = jax.sharding.Mesh(np.array(jax.devices()), ('d',))
s = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
x = jax.make_array_from_callback((2,), s, lambda i: np.ones(2, np.float32)[i])
f = jax.shard_map(lambda x: jax.lax.psum(x, 'd'), mesh=mesh, in_specs=s.spec, out_specs=s.spec)
print('sum', float(jax.jit(f)(x)[0]))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_CACHE = tempfile.mkdtemp(prefix='vmivae_multihost_jit_')


def _env():
  # A compilation cache shared by the launches: the second launch (the extension to 4
  # steps) reuses the first one's programs instead of compiling them again.
  return dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(ROOT),
              VMIVAE_DATA_DIR=DATA_DIR, XLA_FLAGS='--xla_force_host_platform_device_count=2',
              JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _launch_pair(args_for, timeout=TIMEOUT):
  """Starts processes 0 and 1 (``args_for(process_id)``); returns their CompletedProcess."""
  procs = [subprocess.Popen([sys.executable, *args_for(i)], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
  done = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return done


def _train_args(workdir, overrides):
  port = _free_port()
  flags = [f'--config.{k}={v}' for k, v in overrides.items()]
  return lambda i: ['train.py', f'--config={CONFIG}', f'--workdir={workdir}', *flags,
                    f'--coordinator_address=localhost:{port}', '--num_processes=2',
                    f'--process_id={i}']


@functools.cache
def _collectives_missing() -> str:
  """'' when two processes can all-reduce over CPU collectives here, else why not."""
  port = _free_port()
  try:
    results = _launch_pair(lambda i: ['-c', _PROBE, f'localhost:{port}', str(i)], timeout=90)
  except subprocess.TimeoutExpired:
    return 'two processes did not connect within 90 s'
  if any(r.returncode or 'sum 4.0' not in r.stdout for r in results):
    tail = ' | '.join(r.stderr.strip().splitlines()[-1] for r in results if r.stderr.strip())
    return tail[-300:] or 'no output'
  return ''


def _require_collectives():
  why = _collectives_missing()
  if why:
    pytest.skip(f'CPU collectives across processes unavailable here: {why}')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  if not os.path.isdir(os.path.join(DATA_DIR, 'mnist')):
    pytest.skip(f'real datasets not found at {DATA_DIR}')
  _require_collectives()
  base = tmp_path_factory.mktemp('multihost')
  multi = base / 'two_processes'
  first = _launch_pair(_train_args(multi, dict(OVERRIDES, num_train_steps=2)))
  for r in first:
    assert r.returncode == 0, r.stderr[-3000:]
  ref = base / 'one_process'
  config = make_golden.load_config(CONFIG)
  for key, value in OVERRIDES.items():
    config[key] = value
  # Extended to 4 steps by both processes, fed from the host, while the reference trains here.
  args_for = _train_args(multi, dict(OVERRIDES, data_feed='host'))   # one port for both
  second = [subprocess.Popen([sys.executable, *args_for(i)], cwd=ROOT,
                             env=_env(), text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for i in (0, 1)]
  try:
    trainer.train(config, ref, num_devices=4)
    results = [p.communicate(timeout=TIMEOUT) + (p.returncode,) for p in second]
  finally:
    for p in second:
      if p.poll() is None:
        p.kill()
  for _, err, code in results:
    assert code == 0, err[-3000:]
  return {'ref': ref, 'multi': multi, 'config': config, 'logs': [r[1] for r in results]}


def _final_params(workdir: Path, config):
  run = build.build_run(config, num_train_examples=config.train_limit)
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    return jax.device_get(workdir_lib.restore_checkpoint(manager, run.abstract_state()))
  finally:
    workdir_lib.close(manager)


def test_two_processes_train_what_one_process_trains(runs):
  ref, multi = runs['ref'], runs['multi']
  got_config, want_config = (json.loads((d / 'config.json').read_text()) for d in (multi, ref))
  assert (got_config.pop('data_feed'), want_config.pop('data_feed')) == ('host', 'device')
  assert got_config == want_config
  assert workdir_lib.checkpoint_steps(multi) == workdir_lib.checkpoint_steps(ref) == [2, 4]
  assert any('Resuming' in log and 'from step 2' in log for log in runs['logs'])
  got, want = _final_params(multi, runs['config']), _final_params(ref, runs['config'])
  assert int(got.step) == int(want.step) == 4
  paths_got = jax.tree_util.tree_flatten_with_path(got)[0]
  for (path, a), b in zip(paths_got, jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL,
                               err_msg=jax.tree_util.keystr(path))
  # The parameters moved: the comparison is not between two initial states.
  init = jax.tree.leaves(got.vae_params)[0]
  assert not np.allclose(init, jax.tree.leaves(
      workdir_lib.load_initial_state(ref, jax.eval_shape(lambda: got)).vae_params)[0])


def test_with_the_host_feed_each_process_feeds_only_its_rows(runs):
  """Batch 64 over 2 x 2 devices: process 0 gathers and places rows 0..31 of every batch,
  process 1 rows 32..63 (the rows parallel.feed_batches passed to
  make_array_from_process_local_data); neither places the training set on a device."""
  for process, (log, rows) in enumerate(zip(runs['logs'], ('0..31', '32..63'))):
    assert (f'Host feed: process {process} of 2 feeds batch rows {rows} of 64 (its 2 devices '
            'of 4 devices over 2 processes); the 512 training examples stay on the host') in log, (
                log[-3000:])


def test_only_process_zero_writes_the_run_files(runs):
  ref, multi = runs['ref'], runs['multi']
  lines = workdir_lib.read_metrics(multi)
  want = workdir_lib.read_metrics(ref)
  assert [r['step'] for r in lines] == [r['step'] for r in want] == [2, 4]   # no duplicates
  for got, exp in zip(lines, want):
    assert set(got) == set(exp)
    np.testing.assert_allclose([got[k] for k in sorted(exp)], [exp[k] for k in sorted(exp)],
                               rtol=RTOL, atol=ATOL)
  assert len(list(multi.glob('events.out.tfevents.*'))) == 2   # two launches, process 0 each
  assert (multi / 'initial_state').is_dir()
  assert json.loads((multi / 'config.json').read_text())['num_train_steps'] == 4


def test_batch_not_divisible_by_every_device_fails_before_compute(tmp_path):
  if not os.path.isdir(os.path.join(DATA_DIR, 'mnist')):
    pytest.skip(f'real datasets not found at {DATA_DIR}')
  _require_collectives()
  results = _launch_pair(_train_args(tmp_path / 'w', dict(OVERRIDES, batch_size=6)))
  for r in results:
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'config.batch_size=6' in r.stderr and '(4)' in r.stderr, r.stderr[-2000:]
  assert not (tmp_path / 'w' / 'checkpoints').exists()


@pytest.mark.parametrize('flags, message', [
    (dict(coordinator_address='localhost:1234', num_processes=2, process_id=2),
     '--process_id=2: must be in [0, 2)'),
    (dict(coordinator_address='localhost:1234', num_processes=2, process_id=-1),
     '--process_id=-1'),
    (dict(coordinator_address='localhost:1234', num_processes=0, process_id=0),
     '--num_processes=0'),
    (dict(coordinator_address='localhost', num_processes=2, process_id=0),
     "--coordinator_address='localhost': expected host:port"),
    (dict(coordinator_address=None, num_processes=2, process_id=0), 'without --coordinator_address'),
])
def test_bad_settings_name_the_flag(flags, message):
  with pytest.raises(distributed.DistributedError) as e:
    distributed.check_settings(**flags)
  assert message in str(e.value)


def test_no_flags_is_one_process():
  assert not distributed.check_settings(coordinator_address=None, num_processes=None,
                                        process_id=None)
  assert distributed.any_process(True) and not distributed.any_process(False)
  assert int(distributed.broadcast_from_main(7)) == 7


def test_bad_process_id_exits_2_before_connecting(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', f'--config={CONFIG}',
                         f'--workdir={tmp_path / "w"}', '--coordinator_address=localhost:1',
                         '--num_processes=2', '--process_id=2'], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'error: --process_id=2: must be in [0, 2)' in proc.stderr
  assert not (tmp_path / 'w').exists()
