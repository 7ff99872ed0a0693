"""Sweeps (issue 13): many runs in one compiled program, each member equal to its single run.

Step level (random images, no data set): members of a vmapped chunk vs the single-run
chunk of each member's config, on 1 and 8 devices; one compilation for new values.
Trainer level (MNIST smoke, skipped without the data): a member's run directory holds
what train.py writes for its config; kill/resume and train-longer continue bitwise; bad
sweeps fail before any compute with a message naming the key and value.
"""

import functools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CountingSchedule
from conftest import make_tiny_config
from conftest import random_uint8_images
from conftest import restore_latest
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.rundir import sweep
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.train import sweep_step
from vmivae_jax.train import train_step
from vmivae_jax.train import trainer
from vmivae_jax.util import parallel

N = 128
IMAGES = random_uint8_images(N)
STEPS = 6  # three epochs of two steps: the permutation is redrawn twice
REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get('VMIVAE_DATA_DIR') or REPO.parent / 'shared' / 'datasets')
needs_data = pytest.mark.skipif(not (DATA_DIR / 'mnist').is_dir(), reason='MNIST not found')


def _sweep_config(**sweep_values):
  """Tiny joint config, Adam, annealed temperature and a Gaussian capacity, plus a sweep."""
  c = make_tiny_config()
  c.vae_optimizer.name = c.q_optimizer.name = 'adam'
  c.temperature.update(initial=1.0, floor=0.5, anneal_rate=0.1)
  c.capacity.gaussian.update(gamma=2.0, max_nats=0.4, steps=3)
  for key, values in sweep_values.items():
    config_lib.override(c, {f'sweep.{key}': values})
  return c


# Three members: different seeds, a zero lambda among non-zero ones, every kind of number.
MEMBERS = {'seed': (0, 1, 2), 'mi_weight': (1.0, 0.0, 3.0), 'beta': (1.0, 0.5, 2.0),
           'vae_optimizer.learning_rate': (1e-3, 2e-3, 5e-4),
           'q_optimizer.learning_rate': (1e-3, 1e-3, 3e-3),
           'temperature.initial': (1.0, 2.0, 1.0), 'temperature.anneal_rate': (0.1, 0.0, 0.3),
           'capacity.gaussian.max_nats': (0.4, 1.0, 0.0), 'capacity.gaussian.steps': (3, 1, 5)}


@functools.cache
def _sweep_run(items=tuple(MEMBERS.items())):
  return build.build_sweep(_sweep_config(**dict(items)), num_train_examples=N)


def _assert_close(a, b, *, rtol, atol, what):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=what)


def _single(member: build.Run, mesh):
  chunk = train_step.make_train_chunk(member.step_statics, mesh, STEPS)
  return chunk(parallel.replicate(member.initial_state(), mesh),
               parallel.replicate(jnp.asarray(IMAGES), mesh), member.keys['step'],
               member.keys['data'])


@pytest.mark.parametrize('devices,members', [(1, 'vmap'), (8, 'vmap'), (1, 'loop'),
                                             (8, 'loop')])
def test_members_equal_their_single_runs(devices, members):
  """Each member after six steps (and its metrics at every step) vs the single run of the
  member's config on one device; on 8 devices the sweep runs under shard_map. Members
  vmapped (one batched program) or looped (a scan over members)."""
  run = _sweep_run()
  mesh = parallel.make_mesh(devices)
  chunk = sweep_step.make_sweep_chunk(run.step_statics, mesh, STEPS, members=members)
  state = parallel.replicate(
      sweep_step.stack_states([m.initial_state() for m in run.members]), mesh)
  state, metrics = chunk(state, parallel.replicate(jnp.asarray(IMAGES), mesh),
                         run.keys('step'), run.keys('data'), run.hparams)
  assert int(state.step) == STEPS
  for i, member in enumerate(run.members):
    single_state, single_metrics = _single(member, parallel.make_mesh(1))
    got = sweep_step.member_state(state, i)
    # Float tolerance: the members' matmuls are batched (a different XLA kernel) and a
    # member with lambda = 0 still computes the MI term, times 0. Adam turns a rounding
    # difference in a near-zero gradient into up to a few % of one step (lr <= 3e-3),
    # hence atol = 5e-5 on parameters that moved by ~1e-2.
    _assert_close(got.vae_params, single_state.vae_params, rtol=1e-4, atol=5e-5,
                  what=f'member {i} VAE parameters')
    _assert_close(got.q_params, single_state.q_params, rtol=1e-4, atol=5e-5,
                  what=f'member {i} Q parameters')
    _assert_close(got.vae_opt_state, single_state.vae_opt_state, rtol=1e-2, atol=1e-8,
                  what=f'member {i} optimizer state')
    assert sorted(metrics) == sorted(single_metrics)
    _assert_close({k: v[i] for k, v in metrics.items()}, single_metrics, rtol=1e-4, atol=1e-5,
                  what=f'member {i} metrics')
  # The members really differ (different seeds and numbers).
  a, b = (sweep_step.member_state(state, i).vae_params for i in (0, 1))
  assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])


def test_member_strategy_loops_conv_families_on_cpu_only():
  mlp = _sweep_run().step_statics
  conv_config = _sweep_config(**{k: v for k, v in MEMBERS.items() if k == 'seed'})
  config_lib.override(conv_config, {'model.family': 'conv'})
  config_lib.smoke_widths(conv_config.model)
  conv = build.build_sweep(conv_config, num_train_examples=N).step_statics
  assert jax.default_backend() == 'cpu'
  assert sweep_step.member_strategy(mlp) == 'vmap'
  assert sweep_step.member_strategy(conv) == 'loop'
  assert sweep_step.member_strategy(conv, 'vmap') == 'vmap'
  with pytest.raises(ValueError, match="'grouped'"):
    sweep_step.member_strategy(conv, 'grouped')
  # The looped program has no batched convolution: each member runs the plain one.
  mesh = parallel.make_mesh(1)
  run = build.build_sweep(conv_config, num_train_examples=N)
  state = sweep_step.stack_states([m.initial_state() for m in run.members])
  args = (state, jnp.asarray(IMAGES), run.keys('step'), run.keys('data'), run.hparams)
  for members, grouped in (('loop', False), ('vmap', True)):
    jaxpr = jax.make_jaxpr(sweep_step.make_sweep_chunk(conv, mesh, 2, members=members))(*args)
    groups = _conv_group_counts(jaxpr.jaxpr)
    assert groups and any(g > 1 for g in groups) == grouped, (members, groups)


def _all_eqns(jaxpr):
  """Every equation of ``jaxpr``, nested ones (scan, cond, pjit bodies) too."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          yield from _all_eqns(sub)


def _conv_group_counts(jaxpr) -> list[int]:
  """feature_group_count * batch_group_count of every convolution in ``jaxpr``."""
  return [e.params['feature_group_count'] * e.params['batch_group_count']
          for e in _all_eqns(jaxpr) if e.primitive.name == 'conv_general_dilated']


def _dot_batch_dims(jaxpr) -> list[int]:
  """The number of batch dimensions of every dot_general in ``jaxpr`` (nested ones too)."""
  return [len(e.params['dimension_numbers'][1][0])
          for e in _all_eqns(jaxpr) if e.primitive.name == 'dot_general']


def test_one_member_runs_the_single_runs_program():
  """A 1-member sweep skips the vmap (whose batched matmul gradients cost XLA:CPU extra
  transposes): no batched dot in its program, and the member is its single run."""
  items = {k: v[2:] for k, v in MEMBERS.items()}
  run = build.build_sweep(_sweep_config(**items), num_train_examples=N)
  mesh = parallel.make_mesh(1)
  chunk = sweep_step.make_sweep_chunk(run.step_statics, mesh, STEPS)
  state = sweep_step.stack_states([run.members[0].initial_state()])
  args = (jnp.asarray(IMAGES), run.keys('step'), run.keys('data'), run.hparams)
  batch_dims = _dot_batch_dims(jax.make_jaxpr(chunk)(state, *args).jaxpr)
  assert batch_dims and not any(batch_dims), batch_dims
  state, metrics = chunk(state, *args)
  single_state, single_metrics = _single(run.members[0], mesh)
  assert int(state.step) == STEPS and all(v.shape == (1, STEPS) for v in metrics.values())
  _assert_close(sweep_step.member_state(state, 0), single_state, rtol=1e-5, atol=1e-7,
                what='the one member')
  # Not bitwise: the member's numbers are traced arrays, not constants folded by XLA (one
  # metric near zero differs by 2e-7).
  _assert_close({k: v[0] for k, v in metrics.items()}, single_metrics, rtol=1e-5, atol=1e-6,
                what='its metrics')


def test_new_values_reuse_the_compiled_program():
  """Sweeps that differ only in swept values build equal static statics: one program,
  traced once (the trace-counting schedule is inherited by the members' schedules)."""
  other = dict(MEMBERS, seed=(5, 6, 7), mi_weight=(0.0, 0.0, 10.0),
               **{'vae_optimizer.learning_rate': (1e-4, 1e-4, 1e-4)})
  run_a, run_b = _sweep_run(), _sweep_run(tuple(other.items()))
  assert run_a.step_statics == run_b.step_statics
  assert hash(run_a.step_statics) == hash(run_b.step_statics)
  assert sweep_step.cached_sweep_chunk(run_a.step_statics, parallel.make_mesh(1), 2) is (
      sweep_step.cached_sweep_chunk(run_b.step_statics, parallel.make_mesh(1), 2))
  schedule = CountingSchedule(**{k: getattr(run_a.step_statics.temperature, k)
                                 for k in ('initial', 'floor', 'anneal_rate', 'hard')})
  import dataclasses  # pylint: disable=g-import-not-at-top
  statics = dataclasses.replace(run_a.step_statics, temperature=schedule)
  mesh = parallel.make_mesh(1)
  chunk = sweep_step.make_sweep_chunk(statics, mesh, 2)
  images = jnp.asarray(IMAGES)
  for run in (run_a, run_b, run_a):
    state = sweep_step.stack_states([m.initial_state() for m in run.members])
    chunk(state, images, run.keys('step'), run.keys('data'), run.hparams)
  assert len(schedule.traces) == 1


def test_member_configs_take_the_keys_types_and_leave_no_sweep():
  config = _sweep_config(seed=(3, 4), mi_weight=(0, 10))
  members = sweep.member_configs(config)
  assert [m.seed for m in members] == [3, 4]
  assert [m.mi_weight for m in members] == [0.0, 10.0]
  assert all(isinstance(m.mi_weight, float) for m in members)
  assert not any(sweep.is_sweep(m) for m in members)
  single = make_tiny_config(seed=4, mi_weight=10.0)
  single.vae_optimizer.name = single.q_optimizer.name = 'adam'
  single.temperature.update(initial=1.0, floor=0.5, anneal_rate=0.1)
  single.capacity.gaussian.update(gamma=2.0, max_nats=0.4, steps=3)
  # A member's config.json is the single run's, which has no sweep section at all.
  assert workdir_lib.config_to_json(members[1]) == workdir_lib.config_to_json(single)
  assert 'sweep' not in json.loads(workdir_lib.config_to_json(single))
  assert 'sweep' in json.loads(workdir_lib.config_to_json(config))


@pytest.mark.parametrize('sweep_values, message', [
    ({'seed': (0, 1), 'mi_weight': (1.0, 2.0, 3.0)},
     r'config.sweep.seed has 2 values \(0, 1\) but config.sweep.mi_weight has 3'),
    ({'seed': (0, 1), 'beta': (1.0, -0.5)},
     r'config.sweep member 1 \(.*beta=-0.5.*\): config.beta=-0.5: .*>= 0'),
    ({'seed': (0, 1.5)}, r'config.sweep.seed=\(0, 1.5\): item 1 \(1.5\) is not an integer'),
    ({'invariance.consistency_weight': (0.0, 10.0)},
     r'config.sweep.invariance.consistency_weight=\(0.0, 10.0\): members mix 0'),
    ({'vae_optimizer.learning_rate': (1e-3, 0.0)},
     r'config.vae_optimizer.learning_rate=0.0: must be > 0'),
])
def test_invalid_sweeps_name_the_key_and_value(sweep_values, message):
  with pytest.raises(validation.ConfigError, match=message):
    sweep.validate(_sweep_config(**sweep_values), check_paths=False)


def test_a_sweep_refuses_the_host_feed(tmp_path):
  """Members read their own data orders from the on-device set: config.data_feed='host'
  is refused (before any data is read or anything written), 'device' is the sweep's."""
  config = _sweep_config(seed=(0, 1))
  config.data_feed = 'host'
  with pytest.raises(sweep.SweepError, match=r"config.data_feed='host': a sweep uses the "
                                              r"device feed only .* single runs"):
    trainer.train(config, tmp_path / 'run', num_devices=1)
  assert not (tmp_path / 'run').exists()
  config.data_feed = 'device'
  sweep.validate(config, check_paths=False)


def test_structural_keys_cannot_vary(tmp_path):
  config = _sweep_config(seed=(0, 1)).to_dict()
  config['sweep']['latent'] = {'gaussian_dims': (4, 8)}
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config)
  with pytest.raises(validation.ConfigError,
                     match=r'config.sweep.latent.gaussian_dims=\(4, 8\): latent.gaussian_dims '
                           r'cannot vary across the members .* shapes'):
    trainer.train(config, tmp_path / 'run', num_devices=1)
  assert not (tmp_path / 'run').exists()  # refused before anything was written


# ----------------------------------------------------------------------------------
# Trainer level, on MNIST.


def _smoke(**overrides):
  config = config_lib.smoke(config_lib.joint_config('mnist'))
  config.update(data_dir=str(DATA_DIR), num_train_steps=10, steps_per_chunk=5,
                checkpoint_every_steps=5, keep_checkpoints=2)
  return config_lib.override(config, overrides)


SWEEP = {'sweep.seed': (0, 1), 'sweep.mi_weight': (10.0, 0.0)}


def _files(workdir: Path) -> list[str]:
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob('*')
                if p.is_file() and 'events.out' not in p.name and '.lock' not in p.name
                and 'checkpoints' not in p.parts and 'initial_state' not in p.parts)


def _bitwise_equal(a, b) -> bool:
  return all(np.asarray(x).tobytes() == np.asarray(y).tobytes()
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@needs_data
def test_member_directories_are_single_runs(tmp_path):
  sweep_dir = tmp_path / 'sweep'
  trainer.train(_smoke(**SWEEP), sweep_dir, num_devices=1)
  assert json.loads((sweep_dir / 'config.json').read_text())['sweep']['seed'] == [0, 1]
  with pytest.raises(workdir_lib.WorkdirError, match='sweep of 2 members.*members/0'):
    sweep.check_not_sweep(sweep_dir)
  for i, (seed, mi_weight) in enumerate([(0, 10.0), (1, 0.0)]):
    member = sweep_dir / 'members' / str(i)
    single = tmp_path / f'single{i}'
    trainer.train(_smoke(seed=seed, mi_weight=mi_weight), single, num_devices=1)
    assert _files(member) == _files(single) == ['config.json', 'metrics.jsonl']
    assert (member / 'config.json').read_bytes() == (single / 'config.json').read_bytes()
    assert workdir_lib.checkpoint_steps(member) == workdir_lib.checkpoint_steps(single) == [5, 10]
    assert list(member.glob('events.out.tfevents.*'))
    assert (member / 'initial_state').is_dir()
    workdir_lib.check_evaluable(member)  # what eval.py checks first
    lines = [json.loads(l) for l in (member / 'metrics.jsonl').read_text().splitlines()]
    expected = [json.loads(l) for l in (single / 'metrics.jsonl').read_text().splitlines()]
    assert [sorted(l) for l in lines] == [sorted(l) for l in expected]
    for got, want in zip(lines, expected):
      np.testing.assert_allclose([got[k] for k in sorted(got)], [want[k] for k in sorted(want)],
                                 rtol=1e-4, atol=1e-4)
    _assert_close(restore_latest(member).vae_params, restore_latest(single).vae_params, rtol=1e-4,
                  atol=1e-6, what=f'member {i} final parameters')


@needs_data
def test_resume_after_a_kill_between_saves_and_train_longer_are_bitwise(tmp_path):
  """A sweep stopped at step 5 with member 1's step-10 checkpoint missing (killed between
  the members' saves), resumed and extended to 15 steps, equals a fresh 15-step sweep."""
  resumed, fresh = tmp_path / 'resumed', tmp_path / 'fresh'
  trainer.train(_smoke(**SWEEP), resumed, num_devices=1)
  killed = resumed / 'members' / '1'
  manager = workdir_lib.checkpoint_manager(killed)
  manager.delete(10)
  workdir_lib.close(manager)
  trainer.train(_smoke(num_train_steps=15, **SWEEP), resumed, num_devices=1)
  trainer.train(_smoke(num_train_steps=15, **SWEEP), fresh, num_devices=1)
  for i in (0, 1):
    a, b = resumed / 'members' / str(i), fresh / 'members' / str(i)
    assert int(restore_latest(a).step) == 15
    assert _bitwise_equal(restore_latest(a), restore_latest(b))
    assert (a / 'metrics.jsonl').read_text() == (b / 'metrics.jsonl').read_text()
    assert (a / 'config.json').read_text() == (b / 'config.json').read_text()
    assert workdir_lib.checkpoint_steps(a) == workdir_lib.checkpoint_steps(b) == [10, 15]
  # A different sweep on the same directory is refused, naming what differs.
  with pytest.raises(workdir_lib.WorkdirError, match='differs in: sweep.mi_weight'):
    trainer.train(_smoke(num_train_steps=15, **{**SWEEP, 'sweep.mi_weight': (1.0, 0.0)}),
                  resumed, num_devices=1)


@needs_data
def test_a_diverging_member_stops_the_sweep_naming_it(tmp_path):
  config = _smoke(**{'sweep.seed': (0, 1), 'sweep.vae_optimizer.learning_rate': (1e-3, 1e12)})
  with pytest.raises(trainer.DivergenceError, match=r'sweep member 1 \(.*members/1\)'):
    trainer.train(config, tmp_path / 'sweep', num_devices=1)
  # Nothing from the bad chunk was saved, for any member: they stay in lockstep.
  steps = [workdir_lib.checkpoint_steps(tmp_path / 'sweep' / 'members' / str(i)) for i in (0, 1)]
  assert steps[0] == steps[1] and steps[0][-1] < 10


# ----------------------------------------------------------------------------------
# The reproduce suite's sweep path.


_SUITE_SMOKE = {
    'train_limit': 512, 'test_limit': 200, 'batch_size': 64, 'num_train_steps': 10,
    'steps_per_chunk': 5, 'checkpoint_every_steps': 5, 'model.encoder_hidden': (32,),
    'model.decoder_hidden': (32,), 'model.q_hidden': (32,), 'eval.batch_size': 100,
    'eval.q_batch_size': 50, 'eval.num_figure_examples': 4, 'eval.iwae_samples': 2,
    'eval.iwae_chunk': 2, 'eval.q_train_steps': 5, 'data_dir': str(DATA_DIR)}


def _initial_vae(workdir: Path):
  config = workdir_lib.load_config(workdir)
  abstract = build.build_run(config, num_train_examples=512).abstract_state()
  return workdir_lib.load_initial_state(workdir, abstract).vae_params


def test_suite_groups_seeds_into_one_sweep_per_variant():
  from vmivae_jax.experiments import reproduce  # pylint: disable=g-import-not-at-top
  keys = [f'e:{v}:{s}' for s in (0, 1, 2) for v in ('elbo', 'mi')]
  assert reproduce.sweep_keys(keys) == ['e:elbo:0,1,2', 'e:mi:0,1,2']


def test_suite_merges_an_experiments_variants_into_one_sweep_when_sweepable():
  from vmivae_jax.experiments import reproduce  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite_runs  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite as suite_lib  # pylint: disable=g-import-not-at-top
  keys = [f'{e}:{v}:{s}' for e in ('e', 'f') for s in (0, 1) for v in ('elbo', 'mi')]
  assert reproduce.sweep_keys(keys, merge_variants={'e'}) == [
      'e:elbo+mi:0,1', 'f:elbo:0,1', 'f:mi:0,1']
  experiments = {e.name: e for e in suite_lib.class_suite() + suite_lib.disentanglement_suite()}
  assert suite_runs.variants_sweepable(experiments['authors_budget'])   # mi_weight only
  assert suite_runs.variants_sweepable(experiments['beta_vae'])         # beta
  assert not suite_runs.variants_sweepable(experiments['factor_vae'])   # tc_weight: a shape
  assert not suite_runs.variants_sweepable(experiments['ablation_class_mnist_imsat'])
  with pytest.raises(ValueError, match='factor_vae.*cannot vary'):
    suite_runs._member_overrides(experiments['factor_vae'], [('tc_weight_10', 0)])
  # A variant that leaves a key alone takes the config's own value for its members.
  overrides = suite_runs._member_overrides(experiments['class_mnist'], [('mi', 0), ('elbo', 0)])
  mi_weight = suite_runs.load_config('configs/mnist_class.py', {}).mi_weight
  assert overrides['sweep.seed'] == (0, 0)
  assert overrides['sweep.mi_weight'] == (mi_weight, 0.0) and mi_weight > 0


@needs_data
def test_suite_sweep_of_variants_trains_the_twins_in_one_program_from_one_init(tmp_path):
  from vmivae_jax.experiments import suite_runs  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite as suite_lib  # pylint: disable=g-import-not-at-top
  exp = suite_lib.Experiment(name='e', title='E', config_file='configs/mnist_joint.py',
                             seeds=(0,), variants=(('elbo', {'mi_weight': 0.0}), ('mi', {})),
                             overrides=_SUITE_SMOKE, purpose='test')
  root = tmp_path / 'suite'
  records = suite_runs.run_sweep(exp, ['elbo', 'mi'], [0], root)
  assert [(r['variant'], r['seed']) for r in records] == [('elbo', 0), ('mi', 0)]
  for record in records:
    workdir = suite_runs.run_dir(root, 'e', record['variant'], 0)
    assert record['sweep']['variants'] == ['elbo', 'mi'] and record['step'] == 10
    config = suite_runs.load_config(exp.config_file,
                                   {'seed': 0, **exp.variant_overrides(record['variant'])})
    assert (workdir / 'config.json').read_text() == workdir_lib.config_to_json(config)
  assert (root / 'e' / 'sweep_elbo+mi_s0' / 'members.json').exists()
  elbo, mi = (json.loads((suite_runs.run_dir(root, 'e', v, 0) / 'metrics.jsonl')
                         .read_text().splitlines()[-1]) for v in ('elbo', 'mi'))
  assert elbo['loss'] != mi['loss']   # lambda differs between the members
  initial = [_initial_vae(suite_runs.run_dir(root, 'e', v, 0)) for v in ('elbo', 'mi')]
  assert _bitwise_equal(*initial)     # one seed: the same initial VAE
  assert suite_runs.run_sweep(exp, ['elbo', 'mi'], [0], root) == records   # reused
  assert all('train_time_complete' not in r for r in records)   # trained whole here
  assert records[0]['train_interval'] == records[1]['train_interval']   # one program
  start, end = records[0]['train_interval']
  assert 0 < end - start and abs((end - start) / 2 - records[0]['train_seconds']) < 0.2


def test_a_run_resumed_from_an_earlier_process_is_marked_as_not_timed_whole(tmp_path):
  from vmivae_jax.experiments import suite_runs  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  assert not suite_runs._resumed(workdir)                 # nothing there yet
  (workdir / 'checkpoints' / '0').mkdir(parents=True)
  assert not suite_runs._resumed(workdir)                 # the step-0 checkpoint only
  (workdir / 'checkpoints' / '5').mkdir()
  assert suite_runs._resumed(workdir)


@needs_data
def test_suite_sweep_writes_the_per_seed_run_directories_and_records(tmp_path):
  from vmivae_jax.experiments import suite_runs  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import report_class  # pylint: disable=g-import-not-at-top
  from vmivae_jax.experiments import suite as suite_lib  # pylint: disable=g-import-not-at-top
  exp = suite_lib.Experiment(name='e', title='E', config_file='configs/mnist_joint.py',
                             seeds=(0, 1), variants=(('mi', {'mi_weight': 10.0}),),
                             overrides=_SUITE_SMOKE, purpose='test')
  root = tmp_path / 'suite'
  records = suite_runs.run_sweep(exp, 'mi', [0, 1], root)
  for seed, record in zip((0, 1), records):
    workdir = suite_runs.run_dir(root, 'e', 'mi', seed)   # where --no_sweeps puts it
    assert record['seed'] == seed and record['step'] == 10
    assert record['sweep']['seeds'] == [0, 1]
    assert json.loads((workdir / 'suite_record.json').read_text()) == record
    assert (workdir / 'eval' / 'metrics.json').exists()
    config = suite_runs.load_config(exp.config_file, {'seed': seed, **exp.variant_overrides('mi')})
    assert (workdir / 'config.json').read_text() == workdir_lib.config_to_json(config)
  assert (root / 'e' / 'mi' / 'sweep_s0-1' / 'members.json').exists()
  # Finished runs are reused (nothing retrained), as on the per-seed path.
  assert suite_runs.run_sweep(exp, 'mi', [0, 1], root) == records
  section = report_class.write('smoke', [exp], root=root, results_dir=tmp_path / 'results',
                               docs_dir=tmp_path / 'docs')
  assert section['e']['variants']['mi']['metrics']['accuracy_hungarian']['seeds'] == [0, 1]
