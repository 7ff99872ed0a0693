"""Tests for vmivae_jax.train.train_step: the jitted, data-parallel VMI-VAE train step.

Each distinct (StepStatics, mesh, num_steps) is compiled once per module (``_chunk``);
the state argument is donated, so every run starts from a host (numpy) copy of the
initial state that is placed on the mesh afresh.
"""

import dataclasses
import functools
import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import CountingSchedule
from conftest import make_tiny_config
from conftest import numpy_variables
from conftest import random_uint8_images
from conftest import TINY_Q_LR
from conftest import TINY_VAE_LR
from vmivae_jax import latents
from vmivae_jax.data import preprocess
from vmivae_jax.model import objectives
from vmivae_jax.train import build
from vmivae_jax.train import train_state
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel

N = 128                      # on-device training set: 2 steps per epoch at batch 64
IMAGES = random_uint8_images(N)
SEED = 0


# ----------------------------------------------------------------------------------
# Configs, states and compiled chunks, built once per module.


def _build(c, *, vae_tx=None, q_tx=None) -> train_step.StepStatics:
  """build.step_statics, with a trace-counting temperature schedule and optional optimizers."""
  model = build.build_model(c, batch_norm_axis=parallel.DATA_AXIS)
  statics = build.step_statics(c, model, num_train_examples=N)
  t = statics.temperature
  return dataclasses.replace(
      statics, vae_tx=vae_tx or statics.vae_tx, q_tx=q_tx or statics.q_tx,
      temperature=CountingSchedule(initial=t.initial, floor=t.floor, anneal_rate=t.anneal_rate,
                                   hard=t.hard))


def _config_elbo():
  """MLP, lambda = 0 (a plain ELBO step for the VAE; Q still trains for monitoring),
  annealed temperature (floored at 0.5 from step 7 on)."""
  c = make_tiny_config()
  c.mi_weight = 0.0
  c.temperature.update(initial=1.0, floor=0.5, anneal_rate=0.1)
  return c


def _config_mi():
  """As _config_elbo with lambda = 1 (MI on Gaussian dim 0 and the 10-way code) and a
  capacity on the Gaussian KL: every batch-level reduction of the objective is used."""
  c = _config_elbo()
  c.mi_weight = 1.0
  # C(t) = 0, 0.4, 0.4, ...: near the Gaussian KL (~0.3-0.4 nats) from step 1 on. (Whether
  # |KL - C| uses the global-batch KL is checked directly in test_objectives.py.)
  c.capacity.gaussian.update(gamma=2.0, max_nats=0.4, steps=1)
  return c


def _config_conv():
  c = make_tiny_config()
  c.latent.gaussian_dims = 2
  c.latent.categorical_sizes = (3,)
  c.batch_size = 16
  c.binarize = True
  c.model.update(family='conv', norm='batch', activation='leaky_relu', encoder_hidden=(16,),
                 decoder_hidden=(16,), q_hidden=(16,), encoder_channels=(4, 8),
                 decoder_channels=(8, 4), q_channels=(4, 8))
  return c


def _sgd_with_rate_in_state(learning_rate):
  """SGD whose learning rate lives in the optimizer state, so a test can freeze one
  network (rate 0) without compiling another step function."""
  return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)


CONFIGS = {
    'mi': lambda: _build(_config_mi(), vae_tx=_sgd_with_rate_in_state(TINY_VAE_LR),
                         q_tx=_sgd_with_rate_in_state(TINY_Q_LR)),
    'elbo': lambda: _build(_config_elbo()),
    'conv': lambda: _build(_config_conv()),
}


@functools.cache
def _cfg(name: str) -> train_step.StepStatics:
  return CONFIGS[name]()


@functools.cache
def _mesh(n: int):
  return parallel.make_mesh(n)


_COMPILED = set()   # (devices, num_steps) of 'mi' chunks that have run (see the compile test)


@functools.cache
def _chunk(name: str, devices: int, num_steps: int):
  return train_step.make_train_chunk(_cfg(name), _mesh(devices), num_steps)


@functools.cache
def _keys(seed: int = SEED):
  return train_state.run_keys(seed)


@functools.cache
def _initial(name: str, seed: int = SEED):
  """Host copy of the initial state (train_state.create with run_keys(seed)['init']).

  Eager create compiles each initialiser op once per shape; all MLP configs here share
  shapes, so only the first create pays for it. The conv network is initialised from
  numpy instead (conftest.numpy_variables): its initialisers would cost ~10 s to compile.
  """
  cfg = _cfg(name)
  if cfg.model.vae.encoder.trunk.family == 'conv':
    vae_vars, q_vars = numpy_variables(jax.eval_shape(cfg.model.init, _keys(seed)['init']),
                                       seed=seed)
    vae_params, vae_state = train_state.split_variables(vae_vars)
    q_params, q_state = train_state.split_variables(q_vars)
    state = train_state.TrainState(
        step=np.zeros((), np.int32), vae_params=vae_params, vae_state=vae_state,
        vae_opt_state=cfg.vae_tx.init(vae_params), q_params=q_params, q_state=q_state,
        q_opt_state=cfg.q_tx.init(q_params))
  else:
    state = train_state.create(cfg.model, _keys(seed)['init'], vae_tx=cfg.vae_tx, q_tx=cfg.q_tx)
  return jax.tree.map(np.asarray, state)


def _run(name, devices, num_steps, *, calls=1, seed=SEED, state=None, data_key=None):
  """Runs `calls` chunks of `num_steps` from the initial (or given host) state."""
  mesh = _mesh(devices)
  fn = _chunk(name, devices, num_steps)
  if name == 'mi':
    _COMPILED.add((devices, num_steps))
  keys = _keys(seed)
  state = parallel.replicate(_initial(name, seed) if state is None else state, mesh)
  images = parallel.replicate(IMAGES, mesh)
  all_metrics = []
  for _ in range(calls):
    state, metrics = fn(state, images, keys['step'], keys['data'] if data_key is None else data_key)
    all_metrics.append(metrics)
  metrics = jax.tree.map(lambda *m: np.concatenate([np.asarray(x) for x in m]), *all_metrics)
  return jax.tree.map(np.asarray, state), metrics


def _max_abs(tree) -> float:
  return max(float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(tree))


def _max_diff(a, b) -> float:
  return _max_abs(jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64),
                               a, b))


# ----------------------------------------------------------------------------------
# Compilation.


def test_chunk_traces_and_compiles_once_over_many_calls(caplog):
  cfg = _cfg('mi')
  schedule = cfg.temperature
  assert isinstance(schedule, CountingSchedule) and schedule.anneal_rate == 0.1
  traces_before = len(schedule.traces)
  compiled_before = (1, 3) in _COMPILED  # another test may have compiled this chunk already
  fn = _chunk('mi', 1, 3)
  state = parallel.replicate(_initial('mi'), _mesh(1))
  images = parallel.replicate(IMAGES, _mesh(1))
  keys = _keys()

  def chunk_compiles():
    return [r.getMessage() for r in caplog.records if 'Finished XLA compilation' in r.getMessage()
            and 'jit(chunk)' in r.getMessage()]
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    state, metrics = fn(state, images, keys['step'], keys['data'])
    traces_first = len(schedule.traces) - traces_before
    compiles_first = chunk_compiles()
    caplog.clear()
    for _ in range(4):
      state, metrics = fn(state, images, keys['step'], keys['data'])
    compiles_later = chunk_compiles()
  _COMPILED.add((1, 3))
  traces_later = len(schedule.traces) - traces_before - traces_first
  assert traces_later == 0, 'the step was re-traced on a later call'
  assert compiles_later == [], 'the chunk was recompiled on a later call'
  assert traces_first == (0 if compiled_before else 1)   # scan traces its body once
  # Exactly one compile on the first call (this also shows the log capture works), unless
  # a persistent compilation cache is configured and serves it.
  expected_first = 0 if compiled_before else 1
  if jax.config.jax_compilation_cache_dir:
    assert len(compiles_first) <= expected_first, compiles_first
  else:
    assert len(compiles_first) == expected_first, compiles_first
  assert int(state.step) == 15
  for v in metrics.values():
    chex.assert_shape(v, (3,))
  # Traced once, yet the temperature follows the step (a traced value), down to the floor.
  np.testing.assert_allclose(metrics['temperature'],
                             np.maximum(0.5, np.exp(-0.1 * np.arange(12, 15))), rtol=1e-6)
  assert metrics['temperature'][-1] == np.float32(0.5)


# ----------------------------------------------------------------------------------
# Device-count independence.


def test_one_and_eight_devices_agree_mlp():
  """3 steps on 1 device in one chunk == 3 one-step chunks on 8 devices: the result
  depends neither on the device count nor on how steps are grouped into chunks (the
  epoch order carries over; 2 steps per epoch)."""
  s1, m1 = _run('mi', 1, 3)
  s8, m8 = _run('mi', 8, 1, calls=3)
  s0 = _initial('mi')
  assert int(s1.step) == int(s8.step) == 3
  assert _max_diff(s1.vae_params, s0.vae_params) > 1e-2      # training really moved
  assert _max_diff(s1.q_params, s0.q_params) > 1e-2
  chex.assert_trees_all_close(s8.vae_params, s1.vae_params, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(s8.q_params, s1.q_params, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(m8, m1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m1['temperature'], np.exp(-0.1 * np.arange(3)), rtol=1e-6)
  np.testing.assert_allclose(m1['capacity/gaussian'], [0.0, 0.4, 0.4], rtol=1e-6)


def test_one_device_program_has_no_collectives_and_eight_devices_reduce():
  """On one device the chunk is jitted without shard_map: XLA:CPU would otherwise keep
  an all-reduce per pmean (~0.9 ms/step measured) although a size-1 pmean is the identity."""
  def hlo(devices):
    mesh = _mesh(devices)
    args = parallel.replicate((_initial('mi'), IMAGES, _keys()['step'], _keys()['data']), mesh)
    return train_step.make_train_chunk(_cfg('mi'), mesh, 1).lower(*args).as_text()

  hlo1, hlo8 = hlo(1), hlo(8)
  assert 'all_reduce' not in hlo1 and 'all-reduce' not in hlo1
  assert 'all_reduce' in hlo8 or 'all-reduce' in hlo8


def test_one_and_eight_devices_agree_conv_batchnorm():
  s1, m1 = _run('conv', 1, 2)
  s8, m8 = _run('conv', 8, 2)        # local batch 2: BatchNorm must use global statistics
  s0 = _initial('conv')
  assert s0.vae_state['batch_stats'] and s0.q_state['batch_stats']
  assert _max_diff(s1.vae_state, s0.vae_state) > 1e-3     # statistics were updated
  assert _max_diff(s1.q_state, s0.q_state) > 1e-3
  for part in ('vae_params', 'vae_state', 'q_params', 'q_state'):
    chex.assert_trees_all_close(getattr(s8, part), getattr(s1, part), atol=2e-5, rtol=1e-4)
  chex.assert_trees_all_close(m8, m1, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------
# The step equals a direct implementation of Algorithm 1.


def _reference_step(cfg: train_step.StepStatics, host_state, seed=SEED):
  """One step written directly: the Q update on q_objective, then jax.value_and_grad
  of vae_objective (which runs its own forward pass) with the updated Q."""
  model, b = cfg.model, cfg.batch_size
  keys = _keys(seed)

  @jax.jit
  def batch_and_noise(step_key, data_key):
    idx = preprocess.epoch_permutation(data_key, 0, N)[:b]
    x = preprocess.scale_images(jnp.asarray(IMAGES)[idx], cfg.model.pixel_range)
    noise = latents.draw_noise(jax.random.split(jax.random.fold_in(step_key, 0))[0],
                               model.latent, b)
    return x, noise, cfg.temperature(0)
  x, noise, temperature = batch_and_noise(keys['step'], keys['data'])
  s = host_state

  @jax.jit
  def q_update(q_params, vae_params):
    fwd, _ = model.forward({'params': vae_params, **s.vae_state}, x, noise,
                           temperature=temperature, train=True)
    (_, aux), grads = jax.value_and_grad(objectives.q_objective, has_aux=True)(
        q_params, q_state=s.q_state, model=model, x_prime=fwd.x_prime,
        targets=model.mi_targets(fwd.sample))
    updates, _ = cfg.q_tx.update(grads, s.q_opt_state, q_params)
    return optax.apply_updates(q_params, updates)

  @jax.jit
  def vae_update(vae_params, q_params):
    (loss, aux), grads = jax.value_and_grad(objectives.vae_objective, has_aux=True)(
        vae_params, vae_state=s.vae_state, q_vars={'params': q_params, **s.q_state}, model=model,
        images=x, noise=noise, temperature=temperature, step=np.int32(0), settings=cfg.objective)
    updates, _ = cfg.vae_tx.update(grads, s.vae_opt_state, vae_params)
    return optax.apply_updates(vae_params, updates), loss, aux['metrics'], grads

  new_q = q_update(s.q_params, s.vae_params)
  new_vae, loss, metrics, grads = vae_update(s.vae_params, new_q)
  return dict(vae_params=new_vae, q_params=new_q, loss=loss, metrics=metrics, grads=grads,
              vae_update=vae_update)


def test_elbo_step_equals_plain_elbo_gradient_step():
  cfg = _cfg('elbo')
  w = cfg.objective.weights
  assert w.mi_weight == 0.0 and not w.capacity and w.beta == 1.0
  s0 = _initial('elbo')
  ref = _reference_step(cfg, s0)
  s1, m1 = _run('elbo', 1, 1)
  # vae_objective with lambda = 0 is -ELBO (checked term by term in test_objectives.py);
  # the step must be exactly one SGD step on its gradient.
  expected = jax.tree.map(lambda p, g: p - TINY_VAE_LR * g, s0.vae_params, ref['grads'])
  chex.assert_trees_all_close(s1.vae_params, expected, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(s1.vae_params, ref['vae_params'], atol=1e-6, rtol=1e-5)
  # Q still trains (for monitoring), exactly as a separate Q step would.
  chex.assert_trees_all_close(s1.q_params, ref['q_params'], atol=1e-6, rtol=1e-5)
  assert float(m1['loss'][0]) == pytest.approx(float(ref['loss']), rel=1e-5)
  assert float(m1['loss'][0]) == pytest.approx(-float(ref['metrics']['elbo_relaxed']), rel=1e-5)
  assert 'elbo' not in m1 and 'elbo_relaxed' in m1   # relaxed codes: named so in the log
  assert _max_diff(s1.vae_params, s0.vae_params) > 1e-3


def test_mi_step_equals_vae_objective_with_updated_q_on_eight_devices():
  """Validates the shared-forward VJP in train_step.py: the VAE gradient is that of
  vae_objective (which runs its own forward) with the *updated* Q; on 8 devices."""
  cfg = _cfg('mi')
  s0 = _initial('mi')
  ref = _reference_step(cfg, s0)
  s1, m1 = _run('mi', 8, 1)
  chex.assert_trees_all_close(s1.q_params, ref['q_params'], atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(s1.vae_params, ref['vae_params'], atol=1e-6, rtol=1e-5)
  assert float(m1['loss'][0]) == pytest.approx(float(ref['loss']), rel=1e-5)
  for key in ('mi_objective_prior_entropy', 'log_q', 'mi_entropy', 'kl/gaussian',
              'reconstruction'):
    assert float(m1[key][0]) == pytest.approx(float(ref['metrics'][key]), rel=1e-4, abs=1e-5), key
  assert _max_diff(ref['q_params'], s0.q_params) > 1e-3
  # Using the *old* Q in the VAE objective gives a measurably different update, so the
  # comparison above does check the order of the two updates.
  stale, _, _, _ = ref['vae_update'](s0.vae_params, s0.q_params)
  assert _max_diff(stale, s1.vae_params) > 20 * _max_diff(ref['vae_params'], s1.vae_params)


# ----------------------------------------------------------------------------------
# The two updates touch only their own network.


def _freeze(host_state, part: str):
  """The state with a zero learning rate for 'vae' or 'q' (the optimizer's state)."""
  name = f'{part}_opt_state'
  opt = getattr(host_state, name)
  rate = opt.hyperparams['learning_rate']
  assert float(rate) > 0
  hyperparams = {**opt.hyperparams, 'learning_rate': np.zeros_like(rate)}
  return host_state.replace(**{name: opt._replace(hyperparams=hyperparams)})


def test_q_update_leaves_vae_unchanged():
  """With the VAE's rate at 0 the VAE parameters are bitwise unchanged while Q trains:
  the Q update writes nothing into the VAE."""
  s0 = _freeze(_initial('mi'), 'vae')
  s1, _ = _run('mi', 8, 1, state=s0)
  chex.assert_trees_all_equal(s1.vae_params, s0.vae_params)
  assert _max_diff(s1.q_params, s0.q_params) > 1e-3


def test_vae_update_leaves_q_unchanged():
  s0 = _freeze(_initial('mi'), 'q')
  s1, _ = _run('mi', 8, 1, state=s0)
  chex.assert_trees_all_equal(s1.q_params, s0.q_params)
  assert _max_diff(s1.vae_params, s0.vae_params) > 1e-3
  # The VAE update is the one computed with the (unchanged) Q: the same as a normal
  # step's VAE update would be with the old Q, i.e. different from the normal step.
  normal, _ = _run('mi', 8, 1)
  assert _max_diff(normal.vae_params, s1.vae_params) > 1e-6


def _run_host_fed(name, devices, num_steps, *, calls=1):
  """As _run, with the host feed: per chunk the host computes the batch indices and
  feeds the rows (parallel.feed_batches); also returns every chunk's (indices, batches)."""
  mesh = _mesh(devices)
  cfg, keys = _cfg(name), _keys()
  fn = train_step.make_train_chunk(cfg, mesh, num_steps, 'host')
  state = parallel.replicate(_initial(name), mesh)
  step_key = parallel.replicate(keys['step'], mesh)
  fed, all_metrics = [], []
  for i in range(calls):
    indices = train_step.host_batch_indices(cfg, keys['data'], i * num_steps, num_steps)
    batches, rows = parallel.feed_batches(IMAGES, indices, mesh)
    np.testing.assert_array_equal(rows, np.arange(cfg.batch_size))   # one process: all rows
    fed.append((indices, batches))
    state, metrics = fn(state, batches, step_key)
    all_metrics.append(metrics)
  metrics = jax.tree.map(lambda *m: np.concatenate([np.asarray(x) for x in m]), *all_metrics)
  return jax.tree.map(np.asarray, state), metrics, fed


@pytest.mark.parametrize('devices, num_steps, calls', [(1, 3, 1), (8, 1, 3)])
def test_host_feed_trains_what_the_device_feed_trains_bitwise(devices, num_steps, calls):
  """config.data_feed='host' == 'device', bitwise: the same batches (indices computed on
  the host by the same function, across the epoch boundary at step 2 and across chunks)
  in the same device slices. Each device's shard of a fed batch holds its own rows only."""
  want, want_metrics = _run('mi', devices, num_steps, calls=calls)
  got, got_metrics, fed = _run_host_fed('mi', devices, num_steps, calls=calls)
  assert int(got.step) == 3
  chex.assert_trees_all_equal(got, want)
  chex.assert_trees_all_equal(got_metrics, want_metrics)
  perms = [np.asarray(preprocess.epoch_permutation(_keys()['data'], e, N)) for e in (0, 1)]
  np.testing.assert_array_equal(np.concatenate([i for i, _ in fed]),   # 2 steps per epoch
                                np.stack([perms[0][:64], perms[0][64:], perms[1][:64]]))
  local = 64 // devices
  for index, batches in fed:
    assert batches.shape == (num_steps, 64, 28, 28, 1) and batches.dtype == np.uint8
    for shard in batches.addressable_shards:
      rows = shard.index[1]
      assert shard.data.shape == (num_steps, local, 28, 28, 1)
      np.testing.assert_array_equal(np.asarray(shard.data), IMAGES[index[:, rows]])


def test_a_bad_feed_is_a_clear_error():
  with pytest.raises(ValueError, match=r"feed='hots': choose one of \('device', 'host'\)"):
    train_step.make_train_chunk(_cfg('mi'), _mesh(1), 1, 'hots')


# ----------------------------------------------------------------------------------
# Errors.


def test_batch_not_divisible_by_devices_is_a_clear_error():
  mesh8 = _mesh(8)
  with pytest.raises(ValueError, match='batch_size=60 is not divisible by the 8 devices'):
    parallel.local_batch_size(60, mesh8)
  assert parallel.local_batch_size(64, mesh8) == 8
  cfg = dataclasses.replace(_cfg('mi'), batch_size=60)
  with pytest.raises(ValueError, match='divisible'):
    train_step.make_train_chunk(cfg, mesh8, 1)
  train_step.make_train_chunk(cfg, _mesh(1), 1)     # fine on one device (nothing compiled yet)


def test_make_mesh_rejects_too_many_devices():
  assert _mesh(8).shape[parallel.DATA_AXIS] == 8
  with pytest.raises(ValueError, match='num_devices'):
    parallel.make_mesh(9)


# ----------------------------------------------------------------------------------
# Reproducibility and data order.


def test_same_seed_gives_bitwise_identical_runs():
  a, ma = _run('mi', 1, 3)
  fresh = jax.tree.map(np.asarray, train_state.create(
      _cfg('mi').model, train_state.run_keys(SEED)['init'], vae_tx=_cfg('mi').vae_tx,
      q_tx=_cfg('mi').q_tx))
  b, mb = _run('mi', 1, 3, state=fresh)
  chex.assert_trees_all_equal(a, b)
  chex.assert_trees_all_equal(ma, mb)
  other, _ = _run('mi', 1, 3, seed=1)
  assert _max_diff(other.vae_params, a.vae_params) > 1e-3


def test_lambda_does_not_change_initialisation_or_batches():
  cfg0, cfg1 = _cfg('elbo'), _cfg('mi')
  assert cfg0.objective.weights.mi_weight == 0.0 and cfg1.objective.weights.mi_weight == 1.0
  init_key = train_state.run_keys(SEED)['init']
  s0 = train_state.create(cfg0.model, init_key, vae_tx=cfg0.vae_tx, q_tx=cfg0.q_tx)
  s1 = train_state.create(cfg1.model, init_key, vae_tx=cfg1.vae_tx, q_tx=cfg1.q_tx)
  chex.assert_trees_all_equal(s0.vae_params, s1.vae_params)
  chex.assert_trees_all_equal(s0.q_params, s1.q_params)
  # From the same parameters at step k, the lambda = 0 and lambda = 1 steps score the
  # same batch with the same noise: identical reconstruction/KL/Q-loss metrics for
  # k = 0, 1, 2 (crossing the epoch boundary at 2 steps per epoch). Which batch a step
  # uses is visible in these metrics: another data key changes them.
  host0, host1 = jax.tree.map(np.asarray, (s0, s1))   # (their optimizers differ)
  recon = []
  for k in range(3):
    _, m0 = _run('elbo', 1, 1, state=host0.replace(step=np.int32(k)))
    _, m1 = _run('mi', 8, 1, state=host1.replace(step=np.int32(k)))
    for key in ('reconstruction', 'kl_total', 'q_loss', 'log_q', 'temperature'):
      np.testing.assert_allclose(m0[key], m1[key], rtol=2e-5, err_msg=f'{key} at step {k}')
    _, m_other = _run('elbo', 1, 1, state=host0.replace(step=np.int32(k)),
                      data_key=jax.random.PRNGKey(123))
    assert abs(float(m_other['reconstruction'][0] - m0['reconstruction'][0])) > 1e-2
    recon.append(float(m0['reconstruction'][0]))
  assert len(set(np.round(recon, 2))) == 3      # and the three steps use different batches
