"""Tests for vmivae_jax.model.networks (Flax networks) and their VMIModel wiring."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import make_tiny_config
from conftest import numpy_variables
from vmivae_jax import latents
from vmivae_jax.model import conv_ops
from vmivae_jax.model import networks
from vmivae_jax.train import build
from vmivae_jax.util import parallel

B = 4


def _images(b=B, seed=0):
  return np.random.default_rng(seed).uniform(size=(b, 28, 28, 1)).astype(np.float32)


def _noise(spec, b=B, seed=1):
  rng = np.random.default_rng(seed)
  return latents.LatentNoise(
      gaussian=rng.normal(size=(b, spec.gaussian_dims)).astype(np.float32),
      gumbel=tuple(rng.gumbel(size=(b, k)).astype(np.float32) for k in spec.categorical_sizes))


def _authors_config():
  c = make_tiny_config()
  c.model.update(family='conv', encoder_hidden=(512,), decoder_hidden=(512,), q_hidden=(512,),
                 encoder_channels=(64, 128), decoder_channels=(128, 64), q_channels=(64, 128),
                 norm='batch', activation='leaky_relu')
  return c


def _shape_tree(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


# ----------------------------------------------------------------------------------
# Output shapes.


def test_mlp_forward_shapes_and_ranges():
  model = build.build_model(make_tiny_config())
  vae_vars, q_vars = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert set(vae_vars) == {'params'} and set(q_vars) == {'params'}   # no BatchNorm

  @jax.jit
  def run(vae_vars, q_vars, images, noise):
    fwd, new_state = model.forward(vae_vars, images, noise, temperature=0.5, train=True)
    q_out = model.q.apply(q_vars, fwd.x_prime, train=True)
    return fwd, new_state, q_out

  fwd, new_state, (q_mean, q_logvar, q_logits) = run(vae_vars, q_vars, _images(),
                                                     _noise(model.latent))
  assert new_state == {}
  chex.assert_shape([fwd.posterior.mean, fwd.posterior.logvar, fwd.sample.gaussian], (B, 4))
  chex.assert_shape([fwd.posterior.logits[0], fwd.sample.categorical[0]], (B, 10))
  chex.assert_shape([fwd.raw_output, fwd.x_prime], (B, 28, 28, 1))
  assert fwd.output_logvar is None
  x = np.asarray(fwd.x_prime)
  assert x.min() >= 0 and x.max() <= 1
  np.testing.assert_allclose(x, jax.nn.sigmoid(fwd.raw_output), rtol=1e-6)
  chex.assert_shape([q_mean, q_logvar], (B, 1))     # mi.gaussian_indices = (0,)
  assert len(q_logits) == 1
  chex.assert_shape(q_logits[0], (B, 10))
  chex.assert_tree_all_finite((fwd, q_mean, q_logvar, q_logits))


def test_mlp_parameter_shapes():
  c = make_tiny_config()
  c.model.encoder_hidden = (32, 16)
  model = build.build_model(c)
  vae_vars, q_vars = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  p = _shape_tree(vae_vars['params'])
  assert p['encoder']['trunk']['dense_0']['kernel'] == (784, 32)
  assert p['encoder']['trunk']['dense_1']['kernel'] == (32, 16)
  assert p['encoder']['gaussian_head']['kernel'] == (16, 8)          # means and log-variances
  assert p['encoder']['categorical_head_0']['kernel'] == (16, 10)
  assert p['decoder']['dense_0']['kernel'] == (4 + 10, 32)           # reads the joint code
  assert p['decoder']['output']['kernel'] == (32, 784)
  q = _shape_tree(q_vars['params'])
  assert q['gaussian_head']['kernel'] == (32, 2)
  assert q['categorical_head_0']['kernel'] == (32, 10)


@pytest.mark.parametrize('family', ['mlp', 'conv'])
def test_separate_code_encoder_gives_the_codes_their_own_trunk(family):
  """model.separate_code_encoder: code logits read only code_trunk, Gaussian heads only trunk."""
  config = make_tiny_config(**{'model.separate_code_encoder': True, 'model.family': family,
                               'model.encoder_channels': (4, 8)})
  model = build.build_model(config)
  vae_vars, _ = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  params = vae_vars['params']['encoder']
  assert _shape_tree(params['code_trunk']) == _shape_tree(params['trunk'])
  assert params['categorical_head_0']['kernel'].shape[0] == config.model.encoder_hidden[-1]

  def encode(p, images):
    variables = {**vae_vars, 'params': {**vae_vars['params'], 'encoder': p}}
    return model.vae.apply(variables, images, train=False, method=networks.VAE.encode)

  images = _images()
  grad_logits = jax.grad(lambda p: jnp.sum(encode(p, images).logits[0] ** 2))(params)
  grad_mean = jax.grad(lambda p: jnp.sum(encode(p, images).mean ** 2))(params)
  norm = lambda tree: sum(float(jnp.sum(jnp.abs(a))) for a in jax.tree.leaves(tree))
  assert norm(grad_logits['trunk']) == 0.0 and norm(grad_logits['code_trunk']) > 0
  assert norm(grad_mean['code_trunk']) == 0.0 and norm(grad_mean['trunk']) > 0
  # Off (the default): one shared trunk, no code_trunk parameters.
  shared = build.build_model(make_tiny_config())
  shared_vars, _ = jax.eval_shape(shared.init, jax.random.PRNGKey(0))
  assert 'code_trunk' not in shared_vars['params']['encoder']


def test_conv_authors_architecture_shapes():
  model = build.build_model(_authors_config())
  vae_vars, q_vars = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  assert set(vae_vars) == {'params', 'batch_stats'} and set(q_vars) == {'params', 'batch_stats'}
  p = _shape_tree(vae_vars['params'])
  enc = p['encoder']['trunk']
  assert enc['conv_0'] == {'kernel': (4, 4, 1, 64), 'bias': (64,)}
  assert enc['conv_1'] == {'kernel': (4, 4, 64, 128)}               # no bias before BatchNorm
  assert enc['dense_0']['kernel'] == (7 * 7 * 128, 512)
  assert set(enc) == {'conv_0', 'conv_1', 'conv_norm_1', 'dense_0', 'dense_norm_0'}
  dec = p['decoder']
  assert dec['dense_0']['kernel'] == (14, 512)
  assert dec['to_grid']['kernel'] == (512, 7 * 7 * 128)
  assert dec['deconv_0']['kernel'] == (4, 4, 128, 64)
  assert dec['deconv_1']['kernel'] == (4, 4, 64, 1)
  stats = _shape_tree(vae_vars['batch_stats'])
  assert set(stats['encoder']['trunk']) == {'conv_norm_1', 'dense_norm_0'}
  assert set(stats['decoder']) == {'dense_norm_0', 'to_grid_norm', 'deconv_norm_0'}
  assert stats['decoder']['deconv_norm_0']['mean'] == (64,)
  q = _shape_tree(q_vars['params'])
  assert q['trunk']['conv_1'] == {'kernel': (4, 4, 64, 128)}


@pytest.fixture(scope='module')
def authors_model():
  """The authors' conv architecture with BatchNorm, initialised, and a jitted pass."""
  model = build.build_model(_authors_config())
  vae_vars, q_vars = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))

  @functools.partial(jax.jit, static_argnames='train')
  def run(vae_vars, images, noise, *, train):
    return model.forward(vae_vars, images, noise, temperature=1.0, train=train)
  return model, vae_vars, q_vars, run


def test_conv_forward_shapes(authors_model):
  model, vae_vars, q_vars, run = authors_model
  fwd, new_state = run(vae_vars, _images(), _noise(model.latent), train=True)
  chex.assert_shape([fwd.raw_output, fwd.x_prime], (B, 28, 28, 1))
  chex.assert_shape(fwd.posterior.mean, (B, 4))
  chex.assert_shape(fwd.posterior.logits[0], (B, 10))
  chex.assert_trees_all_equal_shapes(new_state['batch_stats'], vae_vars['batch_stats'])
  q_out, q_state = jax.jit(lambda v, x: model.q.apply(v, x, train=True, mutable=['batch_stats']))(
      q_vars, fwd.x_prime)
  chex.assert_shape([q_out[0], q_out[1]], (B, 1))
  chex.assert_shape(q_out[2][0], (B, 10))
  chex.assert_tree_all_finite((fwd, q_out, q_state))


def test_batchnorm_statistics_update_in_train_mode_only(authors_model):
  model, vae_vars, _, run = authors_model
  images, noise = _images(seed=3), _noise(model.latent)
  _, train_state = run(vae_vars, images, noise, train=True)
  old = jax.tree.leaves(vae_vars['batch_stats'])
  new = jax.tree.leaves(train_state['batch_stats'])
  assert len(old) == 10   # mean and var of 5 BatchNorm layers
  for a, b in zip(old, new):
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
  _, eval_state = run(vae_vars, images, noise, train=False)
  assert eval_state == {}
  # Eval mode does not write statistics even when they are declared mutable.
  _, stats = jax.jit(lambda v, x, n: model.vae.apply(
      v, x, n, temperature=1.0, hard=False, train=False, mutable=['batch_stats']))(
          vae_vars, images, noise)
  chex.assert_trees_all_equal(stats['batch_stats'], vae_vars['batch_stats'])


def test_batchnorm_train_mode_uses_batch_statistics(authors_model):
  """Train mode normalises with the batch (outputs depend on the other examples);
  eval mode uses the running averages (each example is processed on its own)."""
  model, vae_vars, _, run = authors_model
  images = _images(seed=4)
  other = images.copy()
  other[1:] = _images(seed=5)[1:]
  noise = _noise(model.latent)
  train_a, _ = run(vae_vars, images, noise, train=True)
  train_b, _ = run(vae_vars, other, noise, train=True)
  eval_a, _ = run(vae_vars, images, noise, train=False)
  eval_b, _ = run(vae_vars, other, noise, train=False)
  np.testing.assert_allclose(eval_a.posterior.mean[0], eval_b.posterior.mean[0], rtol=1e-5,
                             atol=1e-6)
  assert np.abs(np.asarray(train_a.posterior.mean[0] - train_b.posterior.mean[0])).max() > 1e-4


def test_batchnorm_momentum_convention():
  """Running mean <- 0.9 * running mean + 0.1 * batch mean (torch momentum 0.1)."""
  trunk = networks.FeatureExtractor(family='conv', hidden=(), conv_channels=(2, 3), norm='batch')
  x = _images(8, seed=6)
  variables = numpy_variables(jax.eval_shape(
      functools.partial(trunk.init, train=False), jax.random.PRNGKey(0), x))
  (_, state) = jax.jit(lambda v, x: trunk.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates'], capture_intermediates=True))(
          variables, x)
  pre_norm = np.asarray(state['intermediates']['conv_1']['__call__'][0])   # [8, 7, 7, 3]
  new_mean = np.asarray(state['batch_stats']['conv_norm_1']['mean'])
  np.testing.assert_allclose(new_mean, 0.1 * pre_norm.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  new_var = np.asarray(state['batch_stats']['conv_norm_1']['var'])
  np.testing.assert_allclose(new_var, 0.9 + 0.1 * pre_norm.var(axis=(0, 1, 2)), rtol=1e-4)


def test_batchnorm_statistics_are_global_under_data_parallelism():
  """With batch_norm_axis='data', 8 devices x 2 examples normalise like 1 x 16."""
  kwargs = dict(family='conv', hidden=(6,), conv_channels=(2, 3), norm='batch')
  local = networks.FeatureExtractor(**kwargs)
  sharded = networks.FeatureExtractor(**kwargs, batch_norm_axis=parallel.DATA_AXIS)
  x = _images(16, seed=7)
  variables = numpy_variables(jax.eval_shape(
      functools.partial(local.init, train=False), jax.random.PRNGKey(0), x))
  mesh = parallel.make_mesh(8)
  x_sharded = jax.device_put(x, NamedSharding(mesh, P(parallel.DATA_AXIS)))
  variables_replicated = parallel.replicate(variables, mesh)

  def apply(module, v, images):
    return module.apply(v, images, train=True, mutable=['batch_stats'])
  ref_out, ref_state = jax.jit(functools.partial(apply, local))(variables, x)
  run = jax.jit(jax.shard_map(functools.partial(apply, sharded), mesh=mesh,
                              in_specs=(P(), P(parallel.DATA_AXIS)),
                              out_specs=(P(parallel.DATA_AXIS), P())))
  out, state = run(variables_replicated, x_sharded)
  np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(state, ref_state, rtol=1e-4, atol=1e-6)
  # Without the axis name each device would normalise its own 2 examples.
  local_run = jax.jit(jax.shard_map(functools.partial(apply, local), mesh=mesh,
                                    in_specs=(P(), P(parallel.DATA_AXIS)),
                                    out_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS))))
  out_local, _ = local_run(variables_replicated, x_sharded)
  assert np.abs(np.asarray(out_local) - np.asarray(ref_out)).max() > 1e-3


# ----------------------------------------------------------------------------------
# The strided (transpose) convolutions of each backend's formulation equal Flax's layers.


def _assert_matches_flax_layer(ours_fn, module, ref_layer, *, seed, x_shape, kernel_shape,
                               out_shape):
  """ours_fn(x, kernel) + bias equals the Flax layer, values and gradients; the module
  wrapper has the Flax layer's parameter shapes."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=x_shape).astype(np.float32)
  kernel = rng.normal(size=kernel_shape).astype(np.float32)
  bias = rng.normal(size=kernel_shape[-1:]).astype(np.float32)

  @jax.jit
  def both(x, kernel, bias):
    ours = lambda x, k: ours_fn(x, k) + bias
    ref = lambda x, k: ref_layer.apply({'params': {'kernel': k, 'bias': bias}}, x)
    w = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    grads = [jax.grad(lambda x, k: jnp.sum(w * f(x, k)), argnums=(0, 1))(x, kernel)
             for f in (ours, ref)]
    return ours(x, kernel), ref(x, kernel), grads
  ours, ref, (g_ours, g_ref) = both(x, kernel, bias)
  chex.assert_shape(ours, out_shape)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-4, atol=1e-4)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  assert _shape_tree(shapes) == _shape_tree(jax.eval_shape(ref_layer.init, jax.random.PRNGKey(0),
                                                           x))


@pytest.mark.parametrize('backend', ['cpu', 'gpu', 'tpu'])
def test_strided_conv_matches_flax_conv(backend):
  impl = networks.conv_impls(backend)[0]
  _assert_matches_flax_layer(
      lambda x, k: conv_ops.conv4x4_stride2(x, k, impl=impl), networks.StridedConv(5),
      nn.Conv(5, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
      seed=8, x_shape=(2, 14, 14, 3), kernel_shape=(4, 4, 3, 5), out_shape=(2, 7, 7, 5))


@pytest.mark.parametrize('backend', ['cpu', 'gpu', 'tpu'])
def test_strided_conv_transpose_matches_flax_conv_transpose(backend):
  impl = networks.conv_impls(backend)[1]
  _assert_matches_flax_layer(
      lambda x, k: conv_ops.conv_transpose4x4_stride2(x, k, impl=impl),
      networks.StridedConvTranspose(3), nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding='SAME'),
      seed=9, x_shape=(2, 7, 7, 4), kernel_shape=(4, 4, 4, 3), out_shape=(2, 14, 14, 3))


def test_conv_formulation_is_chosen_per_backend():
  # CPU: the custom-VJP formulations measured faster on XLA:CPU; accelerators: native convs.
  assert networks.conv_impls('cpu') == (conv_ops.DEFAULT_CONV, conv_ops.DEFAULT_DECONV)
  assert networks.conv_impls('cpu') != ('lax', 'lax')
  assert networks.conv_impls('gpu') == networks.conv_impls('tpu') == ('lax', 'lax')
  assert networks.conv_impls() == networks.conv_impls(jax.default_backend())


# ----------------------------------------------------------------------------------
# Q network selections.


@pytest.mark.parametrize('num_gaussian,sizes', [(2, (10, 3)), (0, (10,)), (1, ()), (3, (5,))])
def test_q_network_output_shapes(num_gaussian, sizes):
  q = networks.QNetwork(num_gaussian=num_gaussian, categorical_sizes=sizes,
                      trunk=networks.FeatureExtractor(hidden=(8,)))
  x = jax.ShapeDtypeStruct((B, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(lambda: q.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), train=False))
  mean, logvar, logits = jax.eval_shape(lambda v, x: q.apply(v, x, train=True), variables, x)
  assert mean.shape == (B, num_gaussian) and logvar.shape == (B, num_gaussian)
  assert tuple(l.shape for l in logits) == tuple((B, k) for k in sizes)


def test_q_selection_from_config():
  c = make_tiny_config()
  c.latent.categorical_sizes = (10, 3)
  c.mi.categorical_indices = (1,)
  c.mi.gaussian_indices = (0, 2, 3)
  model = build.build_model(c)
  assert model.q.num_gaussian == 3
  assert model.q.categorical_sizes == (3,)          # the size of the *selected* code


def test_encoder_without_gaussian_dims():
  spec = latents.LatentSpec(gaussian_dims=0, categorical_sizes=(4,))
  enc = networks.Encoder(spec=spec, trunk=networks.FeatureExtractor(hidden=(8,)))
  x = jnp.zeros((B, 28, 28, 1))
  variables = jax.eval_shape(lambda: enc.init(jax.random.PRNGKey(0), x, train=False))
  post = jax.eval_shape(lambda v: enc.apply(v, x, train=False), variables)
  assert post.mean.shape == (B, 0) and post.logvar.shape == (B, 0)
  assert post.logits[0].shape == (B, 4)
  assert 'gaussian_head' not in variables['params']


def test_learned_output_logvar():
  c = make_tiny_config()
  c.likelihood = 'gaussian'
  c.learn_output_logvar = True
  model = build.build_model(c)
  vae_vars, _ = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  assert vae_vars['params']['output_logvar'].shape == ()
  c.learn_output_logvar = False
  vae_vars, _ = jax.eval_shape(build.build_model(c).init, jax.random.PRNGKey(0))
  assert 'output_logvar' not in vae_vars['params']


def test_layer_norm_in_mlp_family():
  c = make_tiny_config()
  c.model.norm = 'layer'
  vae_vars, _ = jax.eval_shape(build.build_model(c).init, jax.random.PRNGKey(0))
  assert 'dense_norm_0' in vae_vars['params']['encoder']['trunk']
  assert 'dense_norm_0' in vae_vars['params']['decoder']


def test_mlp_family_with_batch_norm_has_batchnorm():
  c = make_tiny_config()
  c.model.norm = 'batch'
  vae_vars, q_vars = jax.eval_shape(build.build_model(c).init, jax.random.PRNGKey(0))
  assert 'batch_stats' in vae_vars and 'batch_stats' in q_vars
