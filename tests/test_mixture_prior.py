"""The mixture prior p(z | c) on the Gaussian group (config.mixture_prior, issue 12).

Its KL (latents.kl_per_group) against Monte Carlo, the IWAE against a brute-force
log p(x) (sum over codes, quadrature over z), off = unchanged, validation, and a smoke
train + eval with the prior on.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import check_iwae_against_elbo
from vmivae_jax import distributions
from vmivae_jax import evaluation
from vmivae_jax import latents
from vmivae_jax.app import cli
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import figure_data
from vmivae_jax.model import networks
from vmivae_jax.model import objectives
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build


def _config(*, gaussian_dims=4, categorical_sizes=(10,), enabled=True, learn_logvars=True,
            **overrides):
  c = config_lib.get_base_config()
  c.latent.gaussian_dims = gaussian_dims
  c.latent.categorical_sizes = categorical_sizes
  c.mi.gaussian_indices = ()
  c.mi.categorical_indices = (0,) if categorical_sizes else ()
  c.model.encoder_hidden = c.model.decoder_hidden = c.model.q_hidden = (32,)
  c.mixture_prior.update(enabled=enabled, learn_logvars=learn_logvars and enabled)
  return config_lib.override(c, overrides)


def _model(config, seed=0):
  model = build.build_model(config)
  vae_vars, q_vars = jax.jit(model.init)(jax.random.PRNGKey(seed))
  return model, vae_vars, q_vars


def _images(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((n, 28, 28, 1)) < 0.2).astype(np.float32)


# ----------------------------------------------------------------------------------
# The KL.


def test_gaussian_kl_is_the_expected_conditional_kl_by_monte_carlo():
  """sum_c q(c|x) KL(q(z|x) || p(z|c)) = E_{c ~ q(c|x), z ~ q(z|x)} [log q(z|x) - log p(z|c)]."""
  rng = np.random.default_rng(0)
  b, d, k, s = 3, 2, 4, 200_000
  spec = latents.LatentSpec(gaussian_dims=d, categorical_sizes=(3, k), mixture_code=1)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  prior = latents.MixturePrior(means=f32(rng.normal(size=(k, d)) * 2),
                               logvars=f32(rng.normal(size=(k, d)) * 0.5))
  post = latents.PosteriorParams(
      mean=f32(rng.normal(size=(b, d))), logvar=f32(rng.normal(size=(b, d)) * 0.5),
      logits=(f32(rng.normal(size=(b, 3))), f32(rng.normal(size=(b, k)) * 2)), prior=prior)
  kls = latents.kl_per_group(post, spec)
  assert set(kls) == {'gaussian', 'categorical_0', 'categorical_1'}
  key_z, key_c = jax.random.split(jax.random.PRNGKey(0))
  z = post.mean + jnp.exp(0.5 * post.logvar) * jax.random.normal(key_z, (s, b, d))
  c = jax.random.categorical(key_c, post.logits[1], shape=(s, b))
  codes = (jnp.zeros((s, b), jnp.int32), c)
  terms = (distributions.gaussian_log_density(z, mean=post.mean, logvar=post.logvar)
           - latents.gaussian_prior_log_density(z, spec, prior, codes))          # [S, B]
  mc, se = np.mean(terms, 0), np.std(terms, 0) / math.sqrt(s)
  np.testing.assert_array_less(np.abs(mc - kls['gaussian']), 4 * se + 1e-3)
  # A wrong prior (N(0, I), or the other code's draw) is far outside the noise.
  assert np.all(np.abs(kls['gaussian'] - distributions.gaussian_kl_to_standard_normal(
      mean=post.mean, logvar=post.logvar)) > 20 * se)
  # The code's own term is still the KL to uniform.
  np.testing.assert_allclose(kls['categorical_1'],
                             distributions.categorical_kl_to_uniform(logits=post.logits[1]))
  # No prior attached: a clear error rather than a silent N(0, I).
  with pytest.raises(ValueError, match='mixture_code=1'):
    latents.kl_per_group(post._replace(prior=None), spec)


def test_model_kl_uses_the_vae_parameters_and_trains_them():
  config = _config()
  model, vae_vars, q_vars = _model(config)
  params = vae_vars['params']
  assert params['prior_means'].shape == (10, 4) and params['prior_logvars'].shape == (10, 4)
  assert float(jnp.std(params['prior_means'])) > 0.5          # N(0, 1) init, spread out
  np.testing.assert_array_equal(params['prior_logvars'], 0.0)
  x = jnp.asarray(_images(8))
  noise = latents.draw_noise(jax.random.PRNGKey(1), model.latent, 8)
  # Learned log-variances away from 0, so that a unit-variance prior would be wrong.
  params = dict(params, prior_logvars=params['prior_logvars'] + jnp.linspace(-0.5, 0.5, 4))
  vae_vars = dict(vae_vars, params=params)
  fwd, _ = model.forward(vae_vars, x, noise, temperature=1.0, train=False)
  m, lv = (np.asarray(a, np.float64)[:, None] for a in (fwd.posterior.mean, fwd.posterior.logvar))
  mu, plv = (np.asarray(a, np.float64)[None] for a in (params['prior_means'],
                                                        params['prior_logvars']))
  per_c = 0.5 * np.sum(plv - lv + (np.exp(lv) + (m - mu) ** 2) / np.exp(plv) - 1, -1)
  want = np.sum(np.asarray(jax.nn.softmax(fwd.posterior.logits[0], -1)) * per_c, -1)
  np.testing.assert_allclose(model.kl_per_group(fwd.posterior)['gaussian'], want, rtol=1e-4)

  def loss(p):
    return objectives.vae_objective(
        p, vae_state={}, q_vars=q_vars, model=model, images=x, noise=noise, temperature=1.0,
        step=jnp.zeros((), jnp.int32), settings=build.objective_settings(config))[0]
  grads = jax.grad(loss)(params)
  for name in ('prior_means', 'prior_logvars'):
    assert float(jnp.max(jnp.abs(grads[name]))) > 0, name


def test_fixed_logvars_are_unit_variances_and_not_parameters():
  model, vae_vars, _ = _model(_config(learn_logvars=False))
  assert 'prior_logvars' not in vae_vars['params']
  prior = model.vae.apply(vae_vars, method=networks.VAE.prior)
  np.testing.assert_array_equal(prior.logvars, 0.0)
  np.testing.assert_array_equal(prior.means, vae_vars['params']['prior_means'])


# ----------------------------------------------------------------------------------
# Off = unchanged; validation.


def test_off_builds_the_plain_model_and_an_old_config_means_off():
  config = _config(enabled=False)
  model, vae_vars, _ = _model(config)
  assert model.latent.mixture_code is None
  assert not any(k.startswith('prior') for k in vae_vars['params'])
  assert model.vae.apply(vae_vars, method=networks.VAE.prior) is None
  posterior = model.vae.apply(vae_vars, jnp.asarray(_images(4)), train=False,
                              method=networks.VAE.encode)
  assert posterior.prior is None
  np.testing.assert_array_equal(
      model.kl_per_group(posterior)['gaussian'],
      distributions.gaussian_kl_to_standard_normal(mean=posterior.mean, logvar=posterior.logvar))
  # A config stored before the section existed builds the same (off) model.
  old = _config(enabled=False)
  del old['mixture_prior']
  assert build.build_model(old) == build.build_model(config)
  assert 'mixture_prior' in config_lib.with_later_keys(old)
  validation.validate(config_lib.with_later_keys(old), check_paths=False)


@pytest.mark.parametrize('edit, key, words', [
    (dict(gaussian_dims=0), 'mixture_prior.enabled', 'latent.gaussian_dims=0'),
    (dict(categorical_sizes=()), 'mixture_prior.enabled', 'latent.categorical_sizes=()'),
    ({'mixture_prior.code_index': 1}, 'mixture_prior.code_index', 'code 1 does not exist'),
    ({'mixture_prior.code_index': -1}, 'mixture_prior.code_index', 'must be >= 0'),
    ({'mixture_prior.init_scale': -0.5}, 'mixture_prior.init_scale', 'must be >= 0'),
    (dict(enabled=False, learn_logvars=False, **{'mixture_prior.learn_logvars': True}),
     'mixture_prior.learn_logvars', 'it would be ignored'),
])
def test_validation_names_the_bad_value(edit, key, words):
  kwargs = {k: v for k, v in edit.items() if '.' not in k}
  overrides = {k: v for k, v in edit.items() if '.' in k}
  if 'gaussian_dims' in kwargs or 'categorical_sizes' in kwargs:
    overrides['mi.categorical_indices'] = ()
  with pytest.raises(validation.ConfigError) as info:
    validation.validate(_config(**kwargs, **overrides), check_paths=False)
  message = str(info.value)
  assert message.startswith(f'config.{key}='), message
  assert words in message, message


def test_mixprior_variant_switches_it_on_and_combines_with_smoke():
  from tests.golden import make_golden  # pylint: disable=g-import-not-at-top
  plain = make_golden.load_config('configs/mnist_class.py')
  config = make_golden.load_config('configs/mnist_class.py:mixprior+smoke')
  assert config.mixture_prior.enabled and config.mixture_prior.learn_logvars
  assert not plain.mixture_prior.enabled
  assert config.train_limit == 512                               # smoke applied too
  validation.validate(config, check_paths=False)
  with pytest.raises(ValueError, match='unknown'):
    config_lib.variant(config_lib.get_base_config(), 'mixprior+nope')


# ----------------------------------------------------------------------------------
# The IWAE: log p(z | c) for the drawn code.


def _exact_model():
  """1 Gaussian dim + a 3-way code; q(z|x) = N(0.3, 2^2) and q(c|x) fixed, components
  far apart, and a decoder whose likelihood depends on z and c by a few nats."""
  config = _config(gaussian_dims=1, categorical_sizes=(3,))
  model, vae_vars, _ = _model(config)
  p = jax.tree.map(np.array, vae_vars['params'])
  head = p['encoder']['gaussian_head']
  head['kernel'][:] = 0.0
  head['bias'][:] = [0.3, math.log(4.0)]
  cat = p['encoder']['categorical_head_0']
  cat['kernel'][:] = 0.0
  cat['bias'][:] = [0.4, -0.3, 0.0]
  p['prior_means'][:] = [[-2.0], [0.5], [2.5]]
  p['prior_logvars'][:] = [[-0.5], [0.0], [0.3]]
  out = p['decoder']['output']
  out['kernel'] *= 0.15
  return model, {'params': jax.tree.map(jnp.asarray, p)}


def _brute_force_log_px(model, vae_vars, images, *, means=None, logvars=None):
  """[N] log sum_c p(c) int N(z; mu_c, sigma_c^2) p(x | z, c) dz (grid over z)."""
  prior = model.vae.apply(vae_vars, method=networks.VAE.prior)
  means = np.asarray(prior.means if means is None else means)[:, 0]
  logvars = np.asarray(prior.logvars if logvars is None else logvars)[:, 0]
  k = len(means)
  grid = np.linspace(-16.0, 16.0, 8001, dtype=np.float32)
  dz = grid[1] - grid[0]
  codes = np.concatenate([np.tile(grid[:, None], (k, 1)),
                          np.repeat(np.eye(k, dtype=np.float32), len(grid), 0)], -1)
  raw = np.asarray(common.decode_raw(model, vae_vars, jnp.asarray(codes)))      # [K*G, ...]
  x = images.reshape(len(images), -1)
  logits = raw.reshape(k, len(grid), -1).astype(np.float64)
  log_lik = (x[:, None, None] * logits[None] - np.logaddexp(0.0, logits)[None]).sum(-1)
  log_prior = (-0.5 * (np.log(2 * np.pi) + logvars[:, None]
                       + (grid[None] - means[:, None]) ** 2 * np.exp(-logvars[:, None])))
  inner = log_lik + log_prior[None] + np.log(dz)                                # [N, K, G]
  per_code = np.log(np.sum(np.exp(inner - inner.max(-1, keepdims=True)), -1)) + inner.max(-1)
  return np.log(np.mean(np.exp(per_code - per_code.max(-1, keepdims=True)), -1)) \
      + per_code.max(-1)


def test_iwae_converges_to_the_brute_force_log_likelihood():
  model, vae_vars = _exact_model()
  images = _images(4, seed=3)
  exact = _brute_force_log_px(model, vae_vars, images)
  # The test discriminates: a wrong prior for z (N(0, I)) gives another log p(x).
  wrong = _brute_force_log_px(model, vae_vars, images, means=np.zeros((3, 1)),
                              logvars=np.zeros((3, 1)))
  assert np.mean(np.abs(wrong - exact)) > 0.3, (wrong, exact)
  iwae = evaluation.iwae_log_likelihood(model, vae_vars, images, num_samples=16000,
                                        chunk=1000, key=jax.random.PRNGKey(0), batch_size=4)
  # Monte Carlo and float32 error (log p(x) ~ -544 summed over 784 pixels) ~ 0.05 nats.
  error = np.abs(iwae - exact)
  assert np.mean(error) < 0.06 and np.max(error) < 0.12, (iwae, exact)


def test_iwae_is_at_least_the_elbo_and_k1_matches_it():
  model, vae_vars, _ = _model(_config())
  check_iwae_against_elbo(model, vae_vars, _images(64), ks=(1, 64))


# ----------------------------------------------------------------------------------
# Figures: traversals and samples follow p(z | c).


def test_figures_place_z_under_the_component_of_the_code(monkeypatch):
  model, vae_vars, _ = _model(_config())
  prior = model.vae.apply(vae_vars, method=networks.VAE.prior)
  mu, sd = np.asarray(prior.means), np.exp(0.5 * np.asarray(prior.logvars))
  images = _images(3)
  stats = evaluation.vae_statistics(model, vae_vars, images, key=jax.random.PRNGKey(0),
                                    temperature=1.0, batch_size=3)
  seen = []

  def fake_decode(model, vae_vars, codes, pixel_range):
    seen.append(codes)
    return np.zeros((len(codes),) + networks.IMAGE_SHAPE, np.float32)

  monkeypatch.setattr(figure_data, '_decode_unit', fake_decode)
  steps, n = 5, 3
  arrays = figure_data.figure_arrays(model, vae_vars, stats, images, code_index=0,
                                     num_examples=n, traversal_range=2.0,
                                     traversal_steps=steps, prior_key=jax.random.PRNGKey(2))
  assert arrays['prior_samples'].shape[:2] == (10, n)
  codes = seen[0]
  own = np.argmax(stats['logits'][0][:n], -1)
  values = np.linspace(-2.0, 2.0, steps)
  a, b = figure_data.traversal_dims(model)
  grid, rest = codes[:steps ** 2], codes[steps ** 2:]
  np.testing.assert_allclose(grid[:, a], mu[own[0], a] + np.repeat(values, steps) * sd[own[0], a],
                             rtol=1e-5)
  rows = rest[:2 * n * steps].reshape(2, n, steps, -1)
  np.testing.assert_allclose(rows[0, :, :, a],
                             mu[own, a][:, None] + values[None] * sd[own, a][:, None], rtol=1e-5)
  cats = rest[2 * n * steps:2 * n * steps + n * 10].reshape(n, 10, -1)
  z, c = cats[..., :4], cats[..., 4:]
  np.testing.assert_array_equal(np.argmax(c, -1), np.tile(np.arange(10), (n, 1)))
  eps = (stats['mean'][:n] - mu[own]) / sd[own]                 # the example's own offset
  np.testing.assert_allclose(z, mu[None] + eps[:, None] * sd[None], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(z[np.arange(n), own], stats['mean'][:n], rtol=1e-4, atol=1e-5)
  samples = rest[2 * n * steps + n * 10:].reshape(10, n, -1)
  np.testing.assert_array_equal(np.argmax(samples[..., 4:], -1),
                                np.tile(np.arange(10)[:, None], (1, n)))
  assert np.all(np.abs(samples[..., :4] - mu[:, None]) < 6 * sd[:, None])


# ----------------------------------------------------------------------------------
# End to end: train (8 devices, sharded) and evaluate a smoke config with the prior on.


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  from tests.golden import make_golden  # pylint: disable=g-import-not-at-top
  config = make_golden.load_config('configs/mnist_joint.py:mixprior+smoke')
  workdir = tmp_path_factory.mktemp('mixprior') / 'run'
  cli.run_train(config, str(workdir))
  cli.run_eval(str(workdir))
  return config, workdir


@pytest.mark.skipif(not __import__('os').environ.get('VMIVAE_DATA_DIR'),
                    reason='needs $VMIVAE_DATA_DIR (MNIST)')
def test_smoke_training_is_finite_and_moves_the_prior(smoke_run):
  config, workdir = smoke_run
  records = workdir_lib.read_metrics(workdir)
  assert records and all(math.isfinite(r['loss']) and math.isfinite(r['kl/gaussian'])
                         for r in records)
  run = build.build_run(config, num_train_examples=int(config.train_limit))
  initial = run.initial_state()
  manager = workdir_lib.checkpoint_manager(workdir)
  try:
    final = workdir_lib.restore_checkpoint(manager, run.abstract_state())
  finally:
    workdir_lib.close(manager)
  assert int(final.step) == config.num_train_steps
  for name in ('prior_means', 'prior_logvars'):
    moved = np.max(np.abs(np.asarray(final.vae_params[name])
                          - np.asarray(initial.vae_params[name])))
    assert 1e-4 < moved < 10, (name, moved)


@pytest.mark.skipif(not __import__('os').environ.get('VMIVAE_DATA_DIR'),
                    reason='needs $VMIVAE_DATA_DIR (MNIST)')
def test_smoke_eval_runs_end_to_end(smoke_run):
  _, workdir = smoke_run
  metrics = json.loads((workdir / 'eval' / 'metrics.json').read_text())
  for key in ('elbo', 'iwae_log_likelihood', 'kl_total'):
    assert math.isfinite(metrics[key]), key
  assert metrics['iwae_log_likelihood'] >= metrics['elbo'] - 3 * metrics['iwae_minus_elbo_se']
  assert 'prior_samples.png' in metrics['figures']
  assert (workdir / 'eval' / 'prior_samples.png').stat().st_size > 0
