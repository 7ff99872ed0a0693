"""config.model.conv_impl / deconv_impl: every conv_ops formulation, chosen through the
config and run inside the network modules, gives the outputs and gradients of the
native lax convolutions; 'auto' is the backend's default, bitwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from conftest import numpy_variables
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.model import networks
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build


def _conv_config(**overrides):
  c = make_tiny_config(**overrides)
  c.model.update(family='conv', norm='batch', activation='leaky_relu', encoder_hidden=(8,),
                 decoder_hidden=(8,), q_hidden=(8,), encoder_channels=(4, 8),
                 decoder_channels=(8, 4), q_channels=(4, 8))
  validation.validate(c, check_paths=False)
  return c


_IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 28, 28, 1)), jnp.float32)


def _values_and_grads(config, part: str):
  """Output of the config's encoder trunk ('encoder') or decoder ('decoder'), in train
  mode (BatchNorm), and the gradients of a weighted sum of it with respect to the
  parameters and the input."""
  model = build.build_model(config)
  if part == 'encoder':
    module, x = model.vae.encoder.trunk, _IMAGES
  else:
    module = model.vae.decoder
    x = jnp.asarray(np.random.default_rng(3).standard_normal((3, model.latent.code_size)),
                    jnp.float32)
  variables = numpy_variables(jax.eval_shape(
      lambda x: module.init(jax.random.PRNGKey(0), x, train=True), x))
  out_shape = jax.eval_shape(lambda v, x: module.apply(v, x, train=True,
                                                       mutable=['batch_stats'])[0], variables, x)
  weights = jnp.asarray(np.random.default_rng(2).standard_normal(out_shape.shape), jnp.float32)

  def f(params, x):
    out, _ = module.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.sum(out * weights), out

  (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
      variables['params'], x)
  return out, grads


@pytest.fixture(scope='module')
def reference():
  config = _conv_config(**{'model.conv_impl': 'lax', 'model.deconv_impl': 'lax'})
  return {part: _values_and_grads(config, part) for part in ('encoder', 'decoder')}


def _assert_close(got, want, what):
  """Leaf by leaf, up to float rounding relative to the largest value of its group (the
  outputs; the gradients): e.g. a conv bias before BatchNorm has a gradient that is zero
  up to rounding, which no formulation reproduces exactly."""
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    group = want[int(path[0].idx)]
    scale = max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(group)) + 1e-6
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=5e-5 * scale,
                               err_msg=f'{what} {jax.tree_util.keystr(path)}')


@pytest.mark.parametrize('impl', networks.CONV_CHOICES)
def test_every_conv_formulation_in_the_encoder(impl, reference):
  got = _values_and_grads(_conv_config(**{'model.conv_impl': impl}), 'encoder')
  _assert_close(got, reference['encoder'], f'conv_impl={impl}')


@pytest.mark.parametrize('impl', networks.DECONV_CHOICES)
def test_every_transpose_conv_formulation_in_the_decoder(impl, reference):
  got = _values_and_grads(_conv_config(**{'model.deconv_impl': impl}), 'decoder')
  _assert_close(got, reference['decoder'], f'deconv_impl={impl}')


def test_auto_is_the_backend_default_bitwise():
  conv, deconv = networks.conv_impls()
  named = _conv_config(**{'model.conv_impl': conv, 'model.deconv_impl': deconv})
  for part in ('encoder', 'decoder'):
    auto = _values_and_grads(_conv_config(), part)
    for a, b in zip(jax.tree.leaves(auto), jax.tree.leaves(_values_and_grads(named, part))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_config_reaches_every_conv_layer():
  model = build.build_model(_conv_config(**{'model.conv_impl': 'im2col',
                                            'model.deconv_impl': 'phases'}))
  assert model.vae.encoder.trunk.conv_impl == model.q.trunk.conv_impl == 'im2col'
  assert model.vae.decoder.deconv_impl == 'phases'


@pytest.mark.parametrize('key', ['model.conv_impl', 'model.deconv_impl'])
def test_unknown_formulation_names_the_key(key):
  with pytest.raises(validation.ConfigError, match=rf"config\.{key}='nope': choose one of "
                                                   r"\('auto', 'lax'"):
    validation.validate(make_tiny_config(**{key: 'nope'}), check_paths=False)


def test_vjp_transposes_are_refused_on_several_devices():
  config = _conv_config(**{'model.deconv_impl': 'vjp:s2d'})
  validation.validate(config, num_devices=1, check_paths=False)
  with pytest.raises(validation.ConfigError, match=r"config\.model\.deconv_impl='vjp:s2d'.*"
                                                   r"on 2 devices"):
    validation.validate(config, num_devices=2, check_paths=False)


def test_workdir_written_before_the_settings_resumes(tmp_path):
  """A run recorded before conv_impl/deconv_impl/compute_dtype existed is the same run
  (their defaults reproduce it): claim resumes it and records the completed config."""
  config = config_lib.smoke(config_lib.joint_config('mnist'))
  old = config_lib.smoke(config_lib.joint_config('mnist'))
  del old['compute_dtype']
  del old.model['conv_impl']
  del old.model['deconv_impl']
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(workdir_lib.config_to_json(old))
  assert workdir_lib.claim(tmp_path, config, overwrite=False)
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == workdir_lib.config_to_json(config)
  changed = config_lib.smoke(config_lib.joint_config('mnist'))
  changed.compute_dtype = 'bfloat16'
  with pytest.raises(workdir_lib.WorkdirError, match='compute_dtype'):
    workdir_lib.claim(tmp_path, changed, overwrite=False)
