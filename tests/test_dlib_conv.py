"""The 'dlib_conv' family (disentanglement_lib's 64x64 conv encoder/decoder) and the
image shape each family fixes."""

import chex
import jax
import numpy as np
import pytest

from conftest import numpy_variables
from vmivae_jax import latents
from vmivae_jax.config import config_lib
from vmivae_jax.config import dsprites_config
from vmivae_jax.config import validation
from vmivae_jax.model import networks
from vmivae_jax.train import build

B = 3


def _dlib_config(gaussian_dims=10):
  c = config_lib.get_base_config()
  c.dataset = 'dsprites'
  dsprites_config.dlib_architecture(c.model)
  c.latent.gaussian_dims = gaussian_dims
  c.mi.gaussian_indices = (0, 1)
  return c


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _conv(cin, cout):   # a 4x4 conv or transpose conv with bias
  return 4 * 4 * cin * cout + cout


def _dense(fan_in, fan_out):
  return fan_in * fan_out + fan_out


def test_parameter_count_equals_disentanglement_libs():
  """conv_encoder / deconv_decoder of disentanglement_lib (architectures.py), 10 latents,
  counted layer by layer as TF builds them (the means and log-variance heads are two
  Dense(10) there, one Dense(20) here: the same count)."""
  model = build.build_model(_dlib_config())
  vae_vars, q_vars = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  encoder = (_conv(1, 32) + _conv(32, 32) + _conv(32, 64) + _conv(64, 64)
             + _dense(4 * 4 * 64, 256) + 2 * _dense(256, 10))
  decoder = (_dense(10, 256) + _dense(256, 4 * 4 * 64) + _conv(64, 64) + _conv(64, 32)
             + _conv(32, 32) + _conv(32, 1))
  assert (encoder, decoder) == (382_932, 381_313)
  assert _count(vae_vars['params']['encoder']) == encoder
  assert _count(vae_vars['params']['decoder']) == decoder
  assert set(vae_vars) == {'params'}   # no normalisation layers
  p = jax.tree.map(lambda a: a.shape, vae_vars['params'])
  assert p['encoder']['trunk']['conv_3']['kernel'] == (4, 4, 64, 64)
  assert p['decoder']['to_grid']['kernel'] == (256, 1024)
  assert p['decoder']['deconv_3']['kernel'] == (4, 4, 32, 1)
  # Q: the encoder's trunk, heads for the two selected dims.
  assert _count(q_vars['params']) == encoder - 2 * _dense(256, 10) + _dense(256, 4)


def test_forward_shapes_and_q_on_64x64():
  config = config_lib.smoke(_dlib_config(gaussian_dims=5))
  model = build.build_model(config)
  assert model.image_shape == (64, 64, 1)
  vae_vars, q_vars = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  images = np.random.default_rng(0).uniform(size=(B, 64, 64, 1)).astype(np.float32)
  noise = latents.draw_noise(jax.random.PRNGKey(1), model.latent, B)
  fwd, _ = model.forward(vae_vars, images, noise, temperature=1.0, train=False)
  chex.assert_shape([fwd.posterior.mean, fwd.posterior.logvar], (B, 5))
  chex.assert_shape([fwd.raw_output, fwd.x_prime], (B, 64, 64, 1))
  q_mean, q_logvar, _ = model.q.apply(q_vars, fwd.x_prime, train=False)
  chex.assert_shape([q_mean, q_logvar], (B, 2))
  chex.assert_tree_all_finite((fwd, q_mean))
  # Every layer of the smoke network is there: four convs each way.
  assert set(vae_vars['params']['decoder']) >= {'deconv_0', 'deconv_3'}


@pytest.mark.parametrize('family, wrong', [('mlp', 64), ('conv', 64), ('dlib_conv', 28)])
def test_a_family_rejects_the_other_image_size(family, wrong):
  trunk = networks.FeatureExtractor(family=family, hidden=(8,), conv_channels=(
      (4, 4, 8, 8) if family == 'dlib_conv' else (4, 8)))
  images = np.zeros((2, wrong, wrong, 1), np.float32)
  with pytest.raises(ValueError, match=rf"family '{family}' takes \[B, "
                     rf"{networks.IMAGE_SHAPES[family][0]}, .*got \(2, {wrong}, {wrong}, 1\)"):
    trunk.init(jax.random.PRNGKey(0), images, train=False)


def test_validation_uses_the_familys_side():
  config = _dlib_config()
  validation.validate(config, check_paths=False)
  config.model.encoder_channels = (4,) * 7   # 64 -> 0 after seven halvings
  with pytest.raises(validation.ConfigError, match=r"model.encoder_channels.*64-pixel side.*"
                     r"at most 6 layers"):
    validation.validate(config, check_paths=False)
  config = _dlib_config()
  config.model.decoder_channels = (8,) * 7   # 64 does not divide by 128
  with pytest.raises(validation.ConfigError, match='model.decoder_channels.*64'):
    validation.validate(config, check_paths=False)
  # Five halvings are fine at 64 (not at 28).
  config = _dlib_config()
  config.model.encoder_channels = config.model.q_channels = (4,) * 5
  validation.validate(config, check_paths=False)
  config.update(dataset='mnist')
  config.model.update(family='conv', decoder_channels=(8, 4))
  with pytest.raises(validation.ConfigError, match='at most 4 layers'):
    validation.validate(config, check_paths=False)
