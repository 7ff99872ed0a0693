"""The disentanglement baselines in the objective and the step (model/disentangle.py):
beta-TCVAE, DIP-VAE-I/II, FactorVAE's discriminator and its third update, the config."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import make_tiny_config
from conftest import random_uint8_images
from vmivae_jax import decompositions
from vmivae_jax import latents
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.config.validation import ConfigError
from vmivae_jax.data import preprocess
from vmivae_jax.model import disentangle
from vmivae_jax.model import objectives
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.train import train_state
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel

N = 128
IMAGES = random_uint8_images(N)


def _config(method, **overrides):
  c = make_tiny_config(**{'disentangle.method': method, **overrides})
  if method == 'factor_vae':
    c.disentangle.discriminator_hidden = (16, 16)
  return c


def test_methods_agree_between_config_and_model():
  assert config_lib.DISENTANGLE_METHODS == disentangle.METHODS


# ----------------------------------------------------------------------------------
# The terms in the VAE loss.


def _forward_and_losses(settings, **kwargs):
  """(forward, (loss, metrics) without the term, (loss, metrics) with it); no MI term."""
  model = build.build_model(make_tiny_config(**{'mi_weight': 0.0, 'mi.gaussian_indices': (),
                                                'mi.categorical_indices': ()}))
  vae_vars, _ = model.init(jax.random.key(0), batch_size=16)
  images = preprocess.scale_images(random_uint8_images(16, seed=3), model.pixel_range)
  noise = latents.draw_noise(jax.random.key(1), model.latent, 16)
  forward, _ = model.forward(vae_vars, images, noise, temperature=1.0)
  loss = lambda s: objectives.vae_loss_from_forward(
      forward, images, model=model, q_vars={}, step=jnp.asarray(0),
      settings=objectives.ObjectiveSettings(disentangle=s), **kwargs)
  return forward, loss(disentangle.DisentangleSettings()), loss(settings)


def test_beta_tcvae_replaces_the_gaussian_kl_by_its_weighted_terms():
  settings = disentangle.DisentangleSettings(method='beta_tcvae', index_code_mi_weight=2.0,
                                             tc_weight=5.0, dimwise_kl_weight=0.5)
  forward, (base, base_metrics), (loss, metrics) = _forward_and_losses(settings)
  terms = decompositions.kl_decomposition(forward.sample.gaussian, mean=forward.posterior.mean,
                                          logvar=forward.posterior.logvar)
  expected = (2.0 * jnp.mean(terms.index_code_mi) + 5.0 * jnp.mean(terms.total_correlation)
              + 0.5 * jnp.mean(terms.dimwise_kl))
  np.testing.assert_allclose(metrics['tc'], jnp.mean(terms.total_correlation), rtol=1e-5)
  np.testing.assert_allclose(loss - base, expected - base_metrics['kl/gaussian'], atol=2e-4)
  assert metrics['elbo'] == base_metrics['elbo']   # the reported ELBO keeps the analytic KL


@pytest.mark.parametrize('method', ['dip_vae_i', 'dip_vae_ii'])
def test_dip_penalty_is_added_on_the_right_covariance(method):
  settings = disentangle.DisentangleSettings(method=method, lambda_od=3.0, lambda_d=7.0)
  forward, (base, _), (loss, metrics) = _forward_and_losses(settings)
  mean = np.asarray(forward.posterior.mean, np.float64)
  cov = np.cov(mean, rowvar=False, bias=True)
  if method == 'dip_vae_ii':
    cov += np.diag(np.exp(np.asarray(forward.posterior.logvar, np.float64)).mean(0))
  off = cov - np.diag(np.diag(cov))
  expected = 3.0 * np.sum(off ** 2) + 7.0 * np.sum((np.diag(cov) - 1) ** 2)
  np.testing.assert_allclose(metrics['dip_penalty'], expected, rtol=1e-4)
  np.testing.assert_allclose(loss - base, expected, rtol=1e-4, atol=2e-4)


def test_factor_vae_term_is_gamma_times_the_discriminators_log_ratio():
  settings = disentangle.DisentangleSettings(method='factor_vae', tc_weight=4.0,
                                             discriminator_hidden=(8,))
  params = disentangle.init_discriminator(settings, jax.random.key(5), 4)
  forward, (base, _), (loss, metrics) = _forward_and_losses(settings,
                                                            discriminator_params=params)
  logits = disentangle.discriminator(settings).apply({'params': params}, forward.sample.gaussian)
  tc = float(jnp.mean(logits[:, 0] - logits[:, 1]))
  np.testing.assert_allclose(metrics['tc'], tc, rtol=1e-5)
  np.testing.assert_allclose(loss - base, 4.0 * tc, atol=2e-4)


def test_discriminator_loss_is_the_cross_entropy():
  settings = disentangle.DisentangleSettings(method='factor_vae', discriminator_hidden=(8, 8))
  params = disentangle.init_discriminator(settings, jax.random.key(0), 3)
  z = jax.random.normal(jax.random.key(1), (32, 3))
  z_perm = decompositions.permute_dims(jax.random.key(2), z)
  loss, metrics = disentangle.discriminator_objective(params, settings=settings, z=z,
                                                      z_permuted=z_perm)
  net = disentangle.discriminator(settings)
  def softmax(l):
    l = np.asarray(l, np.float64)
    e = np.exp(l - l.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
  p_real = softmax(net.apply({'params': params}, z))
  p_perm = softmax(net.apply({'params': params}, z_perm))
  brute = -0.5 * (np.log(p_real[:, 0]).mean() + np.log(p_perm[:, 1]).mean())
  np.testing.assert_allclose(loss, brute, rtol=1e-5)
  accuracy = 0.5 * ((p_real[:, 0] > 0.5).mean() + (p_perm[:, 1] > 0.5).mean())
  np.testing.assert_allclose(metrics['discriminator_accuracy'], accuracy, rtol=1e-6)
  # z is a constant: no gradient reaches it.
  grad = jax.grad(lambda x: disentangle.discriminator_objective(
      params, settings=settings, z=x, z_permuted=z_perm)[0])(z)
  assert float(jnp.abs(grad).max()) == 0.0


@functools.partial(jax.jit, static_argnames=('settings', 'tx'))
def _discriminator_steps(params, opt_state, key, chol, *, settings, tx):
  def body(carry, k):
    params, opt_state = carry
    k1, k2 = jax.random.split(k)
    z = jax.random.normal(k1, (256, 2)) @ chol.T
    grads = jax.grad(lambda p: disentangle.discriminator_objective(
        p, settings=settings, z=z, z_permuted=decompositions.permute_dims(k2, z))[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None
  (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), jax.random.split(key, 400))
  return params


@pytest.mark.parametrize('rho', [0.0, 0.9])
def test_a_trained_discriminator_estimates_the_total_correlation(rho):
  """On z ~ N(0, [[1, rho], [rho, 1]]) the true TC is -log(1 - rho^2) / 2 (0.83 at 0.9)."""
  settings = disentangle.DisentangleSettings(method='factor_vae', discriminator_hidden=(64, 64))
  tx = optax.adam(3e-3, b1=0.5, b2=0.9)
  params = disentangle.init_discriminator(settings, jax.random.key(0), 2)
  chol = jnp.linalg.cholesky(jnp.array([[1.0, rho], [rho, 1.0]]))
  params = _discriminator_steps(params, tx.init(params), jax.random.key(1), chol,
                                settings=settings, tx=tx)
  z = jax.random.normal(jax.random.key(9), (4096, 2)) @ chol.T
  logits = disentangle.discriminator(settings).apply({'params': params}, z)
  tc = float(jnp.mean(disentangle.discriminator_tc(logits)))
  if rho:
    assert 0.4 < tc < 1.2, tc
  else:
    assert abs(tc) < 0.1, tc


# ----------------------------------------------------------------------------------
# The step: three updates, one program, any device count, checkpoints.


@functools.cache
def _run_chunk(method, devices, num_steps=2, calls=1):
  run = build.build_run(_config(method), num_train_examples=N)
  mesh = parallel.make_mesh(devices)
  fn = train_step.make_train_chunk(run.step_statics, mesh, num_steps)
  state = parallel.replicate(run.initial_state(), mesh)
  images = parallel.replicate(IMAGES, mesh)
  for _ in range(calls):
    state, metrics = fn(state, images, run.keys['step'], run.keys['data'])
  return run, fn, jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, metrics)


@pytest.mark.parametrize('method', ['beta_tcvae', 'dip_vae_ii', 'factor_vae'])
def test_one_and_eight_devices_agree(method):
  """The aggregate posterior, the covariance and the permutation are the global batch's."""
  _, _, s1, m1 = _run_chunk(method, 1)
  _, _, s8, m8 = _run_chunk(method, 8)
  chex.assert_trees_all_close(s8, s1, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(m8, m1, atol=1e-5, rtol=1e-4)
  assert {'beta_tcvae': 'index_code_mi', 'dip_vae_ii': 'dip_penalty',
          'factor_vae': 'discriminator_loss'}[method] in m1


def test_factor_vae_step_updates_the_discriminator_and_compiles_once():
  run = build.build_run(_config('factor_vae'), num_train_examples=N)
  mesh = parallel.make_mesh(1)
  fn = train_step.make_train_chunk(run.step_statics, mesh, 2)
  state = parallel.replicate(run.initial_state(), mesh)
  images = parallel.replicate(IMAGES, mesh)
  calls = []
  for _ in range(5):
    state, metrics = fn(state, images, run.keys['step'], run.keys['data'])
    calls.append(fn._cache_size())   # pylint: disable=protected-access
  # The host-placed first state and the chunk's own outputs may differ in placement (as
  # for the plain step); after that, no call compiles.
  assert calls[1] <= 2 and calls[1:] == [calls[1]] * 4, calls
  state = jax.tree.map(np.asarray, state)
  assert isinstance(state, train_state.DiscriminatorTrainState)
  initial = run.initial_state()
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state.discriminator_params,
                       jax.tree.map(np.asarray, initial.discriminator_params))
  assert max(jax.tree.leaves(moved)) > 1e-5
  assert set(metrics) >= {'tc', 'discriminator_loss', 'discriminator_accuracy'}
  # The VAE and Q draws are those of the plain run: the discriminator has its own key.
  plain = build.build_run(_config('none'), num_train_examples=N).initial_state()
  chex.assert_trees_all_equal(initial.vae_params, plain.vae_params)
  assert type(plain) is train_state.TrainState


def test_discriminator_state_is_checkpointed_and_restored(tmp_path):
  run, _, state, _ = _run_chunk('factor_vae', 1)
  manager = workdir_lib.checkpoint_manager(tmp_path)
  workdir_lib.save_checkpoint(manager, state)
  restored = workdir_lib.restore_checkpoint(manager, run.abstract_state())
  workdir_lib.close(manager)
  assert isinstance(restored, train_state.DiscriminatorTrainState)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, restored), state)


# ----------------------------------------------------------------------------------
# Config.


def test_default_and_older_configs_are_off():
  assert build.objective_settings(make_tiny_config()).disentangle == (
      disentangle.DisentangleSettings())
  old = config_lib.get_base_config().to_dict()
  del old['disentangle']
  config = config_lib.with_later_keys(ml_collections.ConfigDict(old))
  validation.validate(config, check_paths=False)
  assert build.disentangle_settings(config).method == 'none'


def test_config_becomes_settings_with_disentanglement_libs_lambda_d():
  dip_i = build.disentangle_settings(_config('dip_vae_i', **{'disentangle.dip_lambda_od': 2.0}))
  dip_ii = build.disentangle_settings(_config('dip_vae_ii', **{'disentangle.dip_lambda_od': 2.0}))
  assert (dip_i.lambda_od, dip_i.lambda_d) == (2.0, 20.0)
  assert (dip_ii.lambda_od, dip_ii.lambda_d) == (2.0, 2.0)
  tcvae = build.disentangle_settings(_config('beta_tcvae'), num_train_examples=60000)
  assert (tcvae.index_code_mi_weight, tcvae.tc_weight, tcvae.dimwise_kl_weight) == (1.0, 6.0, 1.0)
  assert tcvae.dataset_size == 60000
  statics = build.step_statics(_config('factor_vae'), build.build_model(make_tiny_config()),
                               num_train_examples=N)
  assert statics.discriminator_tx is not None
  assert build.step_statics(make_tiny_config(), build.build_model(make_tiny_config()),
                            num_train_examples=N).discriminator_tx is None


@pytest.mark.parametrize('overrides, key, message', [
    ({'disentangle.method': 'factorvae'}, 'disentangle.method', 'choose one of'),
    ({'disentangle.method': 'dip_vae_i', 'disentangle.tc_weight': 3.0},
     'disentangle.tc_weight', 'would be ignored'),
    ({'disentangle.discriminator_hidden': (8,)}, 'disentangle.discriminator_hidden',
     'would be ignored'),
    ({'disentangle.method': 'beta_tcvae', 'disentangle.estimator': 'iwae'},
     'disentangle.estimator', 'choose one of'),
    ({'disentangle.method': 'dip_vae_ii', 'disentangle.dip_lambda_od': -1.0},
     'disentangle.dip_lambda_od', 'must be >= 0'),
    ({'disentangle.method': 'factor_vae', 'latent.gaussian_dims': 0,
      'mi.gaussian_indices': ()}, 'disentangle.method', 'Gaussian latent group'),
    ({'disentangle.method': 'beta_tcvae', 'mixture_prior.enabled': True},
     'mixture_prior.enabled', 'N\\(0, I\\) prior'),
    ({'disentangle.method': 'beta_tcvae', 'capacity.gaussian.gamma': 1.0},
     'capacity.gaussian.gamma', 'replaces'),
    ({'disentangle.method': 'factor_vae', 'disentangle.discriminator_optimizer.b1': 1.0},
     'disentangle.discriminator_optimizer.b1', 'must be < 1'),
])
def test_bad_settings_are_named(overrides, key, message):
  with pytest.raises(ConfigError, match=f'config.{key}=.*{message}'):
    validation.validate(make_tiny_config(**overrides), check_paths=False)


@pytest.mark.parametrize('method', config_lib.DISENTANGLE_METHODS)
def test_each_method_validates(method):
  validation.validate(_config(method), check_paths=False)
