"""Tests for vmivae_jax.model.objectives and the VMIModel operations they use.

Reference values are recomputed in float64 numpy from the model's forward pass, so
the objective's algebra (ELBO terms, beta, capacity, the MI bound) is checked
independently of the library's own loss helpers.
"""

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import make_tiny_config
from conftest import numpy_variables
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax.model import objectives
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.train import build
from vmivae_jax.util import parallel

B = 16


def W(*, mi_weight=0.0, beta=1.0, capacity=(), **options) -> objectives.ObjectiveSettings:
  """Objective settings from the weights and options as keywords."""
  return objectives.ObjectiveSettings(
      weights=objectives.ObjectiveWeights(mi_weight=mi_weight, beta=beta, capacity=capacity),
      **options)
STEP = np.int32(0)
TEMPERATURE = np.float32(0.7)


@dataclasses.dataclass
class Setup:
  model: model_lib.VMIModel
  vae_params: dict
  vae_state: dict
  q_vars: dict
  images: np.ndarray
  noise: latents.LatentNoise


@pytest.fixture(scope='module')
def setup() -> Setup:
  model = build.build_model(make_tiny_config())
  vae_vars, q_vars = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(B, 28, 28, 1)).astype(np.float32)
  noise = latents.LatentNoise(
      gaussian=rng.normal(size=(B, 4)).astype(np.float32),
      gumbel=(rng.gumbel(size=(B, 10)).astype(np.float32),))
  params = dict(vae_vars)
  vae_params = params.pop('params')
  return Setup(model, vae_params, params, q_vars, images, noise)


@functools.lru_cache(maxsize=None)
def _objective(model: model_lib.VMIModel, settings: objectives.ObjectiveSettings):
  """jit(vae_objective) for one model and weights; beta is a traced argument (it only
  enters arithmetically), so tests that vary only beta share one compilation."""
  def f(vae_params, vae_state, q_vars, images, noise, temperature, step, beta):
    return objectives.vae_objective(
        vae_params, vae_state=vae_state, q_vars=q_vars, model=model, images=images, noise=noise,
        temperature=temperature, step=step,
        settings=dataclasses.replace(
            settings, weights=dataclasses.replace(settings.weights, beta=beta)))
  return jax.jit(f)


def _run(s: Setup, settings, *, step=STEP, model=None):
  model = model or s.model
  static = dataclasses.replace(settings, weights=dataclasses.replace(settings.weights, beta=1.0))
  return _objective(model, static)(s.vae_params, s.vae_state, s.q_vars, s.images, s.noise,
                                   TEMPERATURE, step, np.float32(settings.weights.beta))


@functools.lru_cache(maxsize=None)
def _forward_and_q(model):
  @jax.jit
  def f(vae_params, q_vars, images, noise):
    fwd, _ = model.forward({'params': vae_params}, images, noise, temperature=TEMPERATURE)
    return fwd, model.q.apply(q_vars, fwd.x_prime, train=True)
  return f


def _reference_terms(s: Setup):
  """Per-example reconstruction, per-group KLs, log Q and H(z_sel), in float64 numpy."""
  fwd, (q_mean, q_logvar, q_logits) = _forward_and_q(s.model)(s.vae_params, s.q_vars, s.images,
                                                              s.noise)
  to64 = lambda a: np.asarray(a, np.float64)
  logits, x = to64(fwd.raw_output).reshape(B, -1), to64(s.images).reshape(B, -1)
  recon = np.sum(-x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits), axis=-1)
  mean, logvar = to64(fwd.posterior.mean), to64(fwd.posterior.logvar)
  kl_gauss = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=-1)
  probs = scipy.special.softmax(to64(fwd.posterior.logits[0]), axis=-1)
  kl_cat = np.sum(probs * np.log(probs * 10), axis=-1)
  # log Q(z_sel | x'): z_sel = (Gaussian dim 0, relaxed code 0).
  z0 = to64(fwd.sample.gaussian)[:, :1]
  qm, qlv = to64(q_mean), to64(q_logvar)
  log_q = -0.5 * np.sum(np.log(2 * np.pi) + qlv + (z0 - qm) ** 2 / np.exp(qlv), axis=-1)
  log_q += np.sum(to64(fwd.sample.categorical[0])
                  * scipy.special.log_softmax(to64(q_logits[0]), -1), axis=-1)
  aggregate = probs.mean(0)
  entropy = -np.sum(aggregate * np.log(aggregate)) + 0.5 * (np.log(2 * np.pi) + 1)
  return dict(recon=recon, kl_gauss=kl_gauss, kl_cat=kl_cat, log_q=log_q, entropy=entropy)


# ----------------------------------------------------------------------------------
# Values.


def test_vae_objective_aux_keys_and_finite(setup):
  loss, aux = _run(setup, W(mi_weight=0.7))
  assert set(aux) == {'metrics', 'vae_state'}
  assert set(aux['metrics']) == {'kl/gaussian', 'kl/categorical_0', 'reconstruction', 'kl_total',
                                 'elbo_relaxed', 'mi_objective_prior_entropy', 'log_q',
                                 'mi_entropy', 'mi_weight', 'loss'}
  chex.assert_tree_all_finite((loss, aux))
  for v in aux['metrics'].values():
    chex.assert_shape(v, ())
  assert float(aux['metrics']['loss']) == float(loss)
  assert aux['vae_state'] == {}           # no BatchNorm in the MLP


@pytest.mark.parametrize('beta', [1.0, 2.5])
def test_elbo_only_loss_equals_reconstruction_plus_beta_kl(setup, beta):
  ref = _reference_terms(setup)
  loss, aux = _run(setup, W(mi_weight=0.0, beta=beta))
  kl = ref['kl_gauss'] + ref['kl_cat']
  expected = -ref['recon'].mean() + beta * kl.mean()
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  m = aux['metrics']
  assert float(m['reconstruction']) == pytest.approx(ref['recon'].mean(), rel=1e-5)
  assert float(m['kl/gaussian']) == pytest.approx(ref['kl_gauss'].mean(), rel=1e-4)
  assert float(m['kl/categorical_0']) == pytest.approx(ref['kl_cat'].mean(), rel=1e-4)
  assert float(m['kl_total']) == pytest.approx(kl.mean(), rel=1e-4)
  # The ELBO metric is not beta-weighted; relaxed codes: named elbo_relaxed.
  assert float(m['elbo_relaxed']) == pytest.approx((ref['recon'] - kl).mean(), rel=1e-5)
  # MI metrics are still reported (for monitoring) but do not enter the loss.
  # Prior entropy for the Gaussian target: the thesis's objective, not named a bound.
  assert float(m['mi_objective_prior_entropy']) == pytest.approx(
      ref['log_q'].mean() + ref['entropy'], abs=1e-4)


def test_mi_weight_subtracts_lambda_times_bound(setup):
  ref = _reference_terms(setup)
  lam = 0.7
  loss, aux = _run(setup, W(mi_weight=lam, beta=1.5))
  bound = ref['log_q'].mean() + ref['entropy']
  expected = -ref['recon'].mean() + 1.5 * (ref['kl_gauss'] + ref['kl_cat']).mean() - lam * bound
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  m = aux['metrics']
  assert float(m['log_q']) == pytest.approx(ref['log_q'].mean(), rel=1e-5, abs=1e-5)
  assert float(m['mi_entropy']) == pytest.approx(ref['entropy'], rel=1e-5)
  assert float(m['mi_objective_prior_entropy']) == pytest.approx(bound, abs=1e-4)


@pytest.mark.parametrize('step,expected_fraction', [(0, 0.0), (25, 0.25), (100, 1.0), (400, 1.0)])
def test_mi_warmup_ramps_lambda_linearly(setup, step, expected_fraction):
  ref = _reference_terms(setup)
  lam = 2.0
  loss, aux = _run(setup, W(mi_weight=lam, mi_warmup_steps=100), step=step)
  bound = ref['log_q'].mean() + ref['entropy']
  expected = -ref['recon'].mean() + (ref['kl_gauss'] + ref['kl_cat']).mean()
  expected -= lam * expected_fraction * bound
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(aux['metrics']['mi_weight']) == pytest.approx(lam * expected_fraction)


def test_capacity_term_is_gamma_abs_kl_minus_target(setup):
  ref = _reference_terms(setup)
  cap = objectives.Capacity(gamma=30.0, max_nats=5.0, steps=100)
  weights = W(mi_weight=0.0, beta=2.0, capacity=(('gaussian', cap),))
  kl_g = ref['kl_gauss'].mean()
  assert 0.0 < kl_g < 5.0   # so C(t) = 0 and C(t) = 5 put the KL on opposite sides
  for step, target in ((0, 0.0), (40, 2.0), (100, 5.0), (10_000, 5.0)):
    loss, aux = _run(setup, weights, step=np.int32(step))
    expected = -ref['recon'].mean() + 30.0 * abs(kl_g - target) + 2.0 * ref['kl_cat'].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5), step
    assert float(aux['metrics']['capacity/gaussian']) == pytest.approx(target)
  assert 'capacity/categorical_0' not in aux['metrics']


def test_capacity_target_schedule():
  f = jax.jit(functools.partial(objectives.capacity_target, max_nats=5.0, steps=100))
  got = np.asarray(jax.vmap(f)(np.array([0, 1, 50, 99, 100, 101, 10**6], np.int32)))
  np.testing.assert_allclose(got, [0.0, 0.05, 2.5, 4.95, 5.0, 5.0, 5.0], rtol=1e-6)


def test_objective_without_mi_targets(setup):
  c = make_tiny_config()
  c.mi.gaussian_indices = ()
  c.mi.categorical_indices = ()
  model = build.build_model(c)
  assert not model.has_mi_targets
  # Same VAE parameter shapes; Q is unused.
  # lambda > 0 but nothing selected: the loss is the ELBO and no MI metric is reported.
  loss, aux = _run(setup, W(mi_weight=3.0), model=model)
  assert not {'mi_bound', 'mi_objective_prior_entropy'} & set(aux['metrics'])
  ref = _reference_terms(setup)
  elbo = ref['recon'].mean() - (ref['kl_gauss'] + ref['kl_cat']).mean()
  assert float(loss) == pytest.approx(-elbo, rel=1e-5)


# ----------------------------------------------------------------------------------
# Gradient flow.


@functools.lru_cache(maxsize=None)
def _grads_fn(model, weights_tuple):
  """One jitted program returning d vae_objective / d vae_params for several weights."""
  def f(vae_params, vae_state, q_vars, images, noise):
    def grad(weights):
      return jax.grad(lambda p: objectives.vae_objective(
          p, vae_state=vae_state, q_vars=q_vars, model=model, images=images, noise=noise,
          temperature=TEMPERATURE, step=STEP, settings=weights)[0])(vae_params)
    return tuple(grad(w) for w in weights_tuple)
  return jax.jit(f)


def _grads(setup, *weights):
  return _grads_fn(setup.model, weights)(setup.vae_params, setup.vae_state, setup.q_vars,
                                         setup.images, setup.noise)


def _max_abs_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_q_objective_has_no_gradient_into_the_vae(setup):
  model, q_params = setup.model, setup.q_vars['params']

  def through(vae_params, q_params, stop):
    fwd, _ = model.forward({'params': vae_params}, setup.images, setup.noise,
                           temperature=TEMPERATURE)
    targets = model.mi_targets(fwd.sample)
    if stop:
      return objectives.q_objective(q_params, q_state={}, model=model, x_prime=fwd.x_prime,
                                    targets=targets)[0]
    return -jnp.mean(model.log_q({'params': q_params}, fwd.x_prime, targets)[0])
  grad = jax.grad(through, argnums=(0, 1))
  both = jax.jit(lambda v, q: (grad(v, q, True), grad(v, q, False)))   # one compilation
  (g_vae, g_q), (g_vae_free, g_q_free) = both(setup.vae_params, q_params)
  for leaf in jax.tree.leaves(g_vae):
    np.testing.assert_array_equal(leaf, 0.0)
  assert max(float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(g_q)) > 1e-3
  # Without q_objective's stop_gradient the same loss does reach the VAE.
  assert max(float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(g_vae_free)) > 1e-4
  chex.assert_trees_all_close(g_q_free, g_q, rtol=1e-5, atol=1e-7)


def test_q_objective_value_and_state(setup):
  model = setup.model
  fwd, _ = _forward_and_q(model)(setup.vae_params, setup.q_vars, setup.images, setup.noise)
  loss, aux = jax.jit(lambda p, x, s: objectives.q_objective(
      p, q_state={}, model=model, x_prime=x, targets=model.mi_targets(s)))(
          setup.q_vars['params'], fwd.x_prime, fwd.sample)
  ref = _reference_terms(setup)
  assert float(loss) == pytest.approx(-ref['log_q'].mean(), rel=1e-5)
  assert float(aux['metrics']['q_loss']) == float(loss)
  assert aux['q_state'] == {}


def test_stop_target_gradient_changes_encoder_but_not_decoder_grads(setup):
  free, stopped, elbo = _grads(setup, W(mi_weight=1.0),
                               W(mi_weight=1.0, stop_target_gradient=True), W(mi_weight=0.0))
  scale = max(float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(free['decoder']))
  # The target z_sel is a function of the encoder only: decoder grads are unchanged.
  chex.assert_trees_all_close(stopped['decoder'], free['decoder'], atol=1e-6 * scale, rtol=1e-5)
  # ... whereas the encoder loses the path through z_sel.
  assert _max_abs_diff(stopped['encoder'], free['encoder']) > 1e-3 * max(
      float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(free['encoder']))
  # And the MI term reaches the decoder through x' (it is not only an encoder term).
  assert _max_abs_diff(free['decoder'], elbo['decoder']) > 1e-4 * scale


def test_aggregate_entropy_is_differentiated_into_the_encoder(setup):
  model = setup.model

  def entropy(vae_params):
    fwd, _ = model.forward({'params': vae_params}, setup.images, setup.noise,
                           temperature=TEMPERATURE)
    return model.mi_entropy(fwd.posterior, fwd.sample)
  g = jax.jit(jax.grad(entropy))(setup.vae_params)
  head = np.asarray(g['encoder']['categorical_head_0']['kernel'])
  assert np.abs(head).max() > 1e-5
  for leaf in jax.tree.leaves(g['decoder']):
    np.testing.assert_array_equal(leaf, 0.0)


def test_batch_level_terms_are_global_under_data_parallelism(setup):
  """On 8 devices x 2 examples, with axis_name='data' and the loss pmean-ed, value and
  gradient equal the single-device ones: the capacity term uses the global-batch KL
  mean and the aggregate entropy the global-batch q(c). C is set to the global KL mean,
  so per-device means lie on both sides of it and a per-device |KL - C| would differ."""
  ref = _reference_terms(setup)
  cap = objectives.Capacity(gamma=10.0, max_nats=float(ref['kl_gauss'].mean()), steps=1)
  weights = W(mi_weight=1.0, capacity=(('gaussian', cap),))
  local_kl = ref['kl_gauss'].reshape(8, 2).mean(-1)
  assert (local_kl > cap.max_nats).any() and (local_kl < cap.max_nats).any()
  model, mesh = setup.model, parallel.make_mesh(8)
  step = np.int32(5)   # C(t) = max_nats

  def loss_fn(vae_params, images, noise, axis_name):
    loss, aux = objectives.vae_objective(
        vae_params, vae_state={}, q_vars=setup.q_vars, model=model, images=images, noise=noise,
        temperature=TEMPERATURE, step=step, settings=weights, axis_name=axis_name)
    if axis_name:
      loss = jax.lax.pmean(loss, axis_name)
    return loss, aux['metrics']['mi_entropy']

  def grads(axis_name):
    return jax.value_and_grad(functools.partial(loss_fn, axis_name=axis_name), has_aux=True)
  single = jax.jit(grads(None))(setup.vae_params, setup.images, setup.noise)
  data = P(parallel.DATA_AXIS)
  sharded = jax.jit(jax.shard_map(grads(parallel.DATA_AXIS), mesh=mesh,
                                  in_specs=(P(), data, data), out_specs=P()))
  put = lambda tree, spec: jax.device_put(tree, NamedSharding(mesh, spec))
  multi = sharded(put(setup.vae_params, P()), put(setup.images, data), put(setup.noise, data))
  (loss1, entropy1), g1 = single
  (loss8, entropy8), g8 = multi
  assert float(loss8) == pytest.approx(float(loss1), rel=1e-5)
  assert float(entropy8) == pytest.approx(float(entropy1), rel=1e-5)
  assert float(entropy1) == pytest.approx(float(ref['entropy']), rel=1e-5)
  chex.assert_trees_all_close(g8, g1, rtol=1e-4, atol=1e-5 * _max_abs(g1))


def test_joint_entropy_is_global_under_data_parallelism(setup):
  """Two target groups with the aggregate kind: the joint entropy's mixture components
  are gathered over the devices, so value and gradient equal the single-device ones."""
  weights = W(mi_weight=1.0, gaussian_entropy_kind='gaussian_aggregate_mc')
  model, mesh = setup.model, parallel.make_mesh(8)

  def loss_fn(vae_params, images, noise, axis_name):
    loss, aux = objectives.vae_objective(
        vae_params, vae_state={}, q_vars=setup.q_vars, model=model, images=images, noise=noise,
        temperature=TEMPERATURE, step=STEP, settings=weights, axis_name=axis_name)
    if axis_name:
      loss = jax.lax.pmean(loss, axis_name)
    return loss, aux['metrics']['mi_entropy']

  def grads(axis_name):
    return jax.value_and_grad(functools.partial(loss_fn, axis_name=axis_name), has_aux=True)
  (loss1, h1), g1 = jax.jit(grads(None))(setup.vae_params, setup.images, setup.noise)
  data = P(parallel.DATA_AXIS)
  sharded = jax.jit(jax.shard_map(grads(parallel.DATA_AXIS), mesh=mesh,
                                  in_specs=(P(), data, data), out_specs=P()))
  put = lambda tree, spec: jax.device_put(tree, NamedSharding(mesh, spec))
  (loss8, h8), g8 = sharded(put(setup.vae_params, P()), put(setup.images, data),
                            put(setup.noise, data))
  assert float(h8) == pytest.approx(float(h1), rel=1e-5)
  assert float(loss8) == pytest.approx(float(loss1), rel=1e-5)
  chex.assert_trees_all_close(g8, g1, rtol=1e-4, atol=1e-5 * _max_abs(g1))


def _max_abs(tree):
  return max(float(np.abs(np.asarray(l)).max()) for l in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------------
# VMIModel pieces used by the objective.


def test_mi_entropy_kinds(setup):
  model = setup.model
  fwd, _ = _forward_and_q(model)(setup.vae_params, setup.q_vars, setup.images, setup.noise)

  @jax.jit
  def entropies(fwd):
    sel = lambda a: a[:, :1]
    return dict(
        prior=model.mi_entropy(fwd.posterior, fwd.sample, gaussian_kind='gaussian_prior'),
        mc=model.mi_entropy(fwd.posterior, fwd.sample, gaussian_kind='gaussian_aggregate_mc'),
        cat=losses.categorical_aggregate_entropy(logits=fwd.posterior.logits[0]),
        joint=losses.joint_aggregate_entropy_mc(
            samples=sel(fwd.sample.gaussian), mean=sel(fwd.posterior.mean),
            logvar=sel(fwd.posterior.logvar), logits=fwd.posterior.logits[0]))
  e = {k: float(v) for k, v in entropies(fwd).items()}
  ref = _reference_terms(setup)
  assert e['prior'] == pytest.approx(ref['entropy'], rel=1e-5)
  assert e['prior'] == pytest.approx(e['cat'] + losses.gaussian_prior_entropy(num_dims=1), rel=1e-6)
  # Two target groups (a Gaussian dim and a code): their joint entropy, not the sum.
  assert e['mc'] == pytest.approx(e['joint'], rel=1e-6)
  assert abs(e['mc'] - e['prior']) > 1e-3
  assert model_lib.entropy_kind_label(model, 'gaussian_prior') == 'gaussian_prior+categorical_aggregate'
  assert model_lib.entropy_kind_label(model, 'gaussian_aggregate_mc') == 'joint_aggregate_mc'
  assert model_lib.mi_metric_name(model, 'gaussian_prior') == 'mi_objective_prior_entropy'
  assert model_lib.mi_metric_name(model, 'gaussian_aggregate_mc') == 'mi_bound'


def test_mi_targets_select_dims_and_codes():
  c = make_tiny_config()
  c.latent.categorical_sizes = (10, 3)
  c.mi.gaussian_indices = (2, 0)
  c.mi.categorical_indices = (1,)
  model = build.build_model(c)
  gaussian = np.arange(12, dtype=np.float32).reshape(3, 4)
  cats = (np.zeros((3, 10), np.float32), np.ones((3, 3), np.float32))
  t = model.mi_targets(latents.LatentSample(gaussian, cats))
  np.testing.assert_array_equal(t.gaussian, gaussian[:, [2, 0]])
  assert len(t.categorical) == 1
  np.testing.assert_array_equal(t.categorical[0], cats[1])


def _empty_latents(b):
  """A posterior and sample with no latent dims: reconstruction() only reads outputs."""
  empty = latents.PosteriorParams(np.zeros((b, 0)), np.zeros((b, 0)), ())
  return empty, latents.LatentSample(np.zeros((b, 0)), ())


@pytest.mark.parametrize('likelihood,pixel_range', [
    ('bernoulli', 'zero_one'), ('mse', 'minus_one_one'), ('gaussian', 'zero_one')])
def test_reconstruction_and_decoder_mean(likelihood, pixel_range):
  c = make_tiny_config()
  c.likelihood = likelihood
  c.pixel_range = pixel_range
  c.gaussian_logvar = -1.0
  model = build.build_model(c)
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(2, 28, 28, 1)).astype(np.float32)
  low = -1.0 if pixel_range == 'minus_one_one' else 0.0
  images = rng.uniform(low, 1.0, size=(2, 28, 28, 1)).astype(np.float32)

  @jax.jit
  def run(raw, images):
    x_prime = model.decoder_mean(raw)
    post, sample = _empty_latents(2)
    fwd = model_lib.Forward(post, sample, raw, None, x_prime)
    return x_prime, model.reconstruction(fwd, images)
  x_prime, recon = (np.asarray(a, np.float64) for a in run(raw, images))
  raw64, img64 = raw.astype(np.float64), images.astype(np.float64)
  if pixel_range == 'minus_one_one':
    np.testing.assert_allclose(x_prime, np.tanh(raw64), rtol=1e-5, atol=1e-6)
  else:
    np.testing.assert_allclose(x_prime, scipy.special.expit(raw64), rtol=1e-5)
  flat = lambda a: a.reshape(2, -1)
  if likelihood == 'bernoulli':
    p = scipy.special.expit(raw64)
    expected = np.sum(flat(img64 * np.log(p) + (1 - img64) * np.log1p(-p)), -1)
  elif likelihood == 'mse':
    expected = -np.mean(flat((img64 - x_prime) ** 2), -1)
  else:
    expected = np.sum(flat(-0.5 * (math.log(2 * math.pi) - 1.0
                                   + (img64 - x_prime) ** 2 * math.exp(1.0))), -1)
  np.testing.assert_allclose(recon, expected, rtol=1e-4)
