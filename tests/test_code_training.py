"""What trains the categorical code (objectives.CodeTraining): the encoder-side information
term, the aggregate KL, and the scale of the generative gradient into the code's logits."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from conftest import random_uint8_images
from vmivae_jax import latents
from vmivae_jax import losses
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.config.validation import ConfigError
from vmivae_jax.data import preprocess
from vmivae_jax.model import objectives
from vmivae_jax.train import build

LOGITS = jax.random.normal(jax.random.key(0), (16, 5)) * 2.0


def _entropy(p):
  return -np.sum(p * np.log(p), axis=-1)


def test_information_terms_are_the_marginal_and_mean_conditional_entropies():
  p = np.asarray(jax.nn.softmax(LOGITS))
  marginal, conditional = objectives.code_information_terms(LOGITS)
  np.testing.assert_allclose(marginal, _entropy(p.mean(0)), rtol=1e-5)
  np.testing.assert_allclose(conditional, _entropy(p).mean(), rtol=1e-5)
  # Their difference is the encoder-side I(x; c) of the batch.
  np.testing.assert_allclose(marginal - conditional,
                             losses.exact_categorical_mutual_information(logits=LOGITS), rtol=1e-5)


def test_per_example_kl_is_information_plus_aggregate_kl():
  """mean_x KL(q(c|x) || U) = I(x; c) + KL(qbar || U): the decomposition the option uses."""
  p = np.asarray(jax.nn.softmax(LOGITS))
  aggregate = objectives.aggregate_code_kl(LOGITS)
  np.testing.assert_allclose(aggregate, np.log(5) - _entropy(p.mean(0)), rtol=1e-5)
  per_example = np.mean(np.log(5) - _entropy(p))
  info = losses.exact_categorical_mutual_information(logits=LOGITS)
  np.testing.assert_allclose(per_example, info + aggregate, rtol=1e-5)


def test_aggregate_kl_of_masked_classes_matches_the_per_example_kl_convention():
  """A masked class (logit -inf) has qbar_k = 0; the prior stays uniform over all K
  columns, as in the per-example KL, so both sides of the decomposition agree."""
  masked = LOGITS.at[:, 4].set(-jnp.inf)
  p = np.asarray(jax.nn.softmax(LOGITS[:, :4]))
  np.testing.assert_allclose(objectives.aggregate_code_kl(masked),
                             np.log(5) - _entropy(p.mean(0)), rtol=1e-5)
  assert np.isfinite(np.asarray(jax.grad(objectives.aggregate_code_kl)(masked)[:, :4])).all()


def test_schedule_is_off_then_on():
  off = objectives.CodeTraining()
  assert off.generative_gradient_at(jnp.asarray(5)) == 1.0 and not off.routes_gradient
  warm = objectives.CodeTraining(generative_gradient=0.5, generative_gradient_warmup_steps=10)
  assert [float(warm.generative_gradient_at(jnp.asarray(s))) for s in (0, 9, 10, 99)] == [
      0.0, 0.0, 0.5, 0.5]


def _model_and_batch():
  config = make_tiny_config()
  model = build.build_model(config)
  vae_vars, _ = model.init(jax.random.key(0), batch_size=8)
  images = preprocess.scale_images(random_uint8_images(8, seed=3), model.pixel_range)
  noise = latents.draw_noise(jax.random.key(1), model.latent, 8)
  return model, vae_vars, images, noise


@pytest.mark.parametrize('scale', [0.0, 0.5])
def test_generative_gradient_scales_only_the_path_through_the_sample(scale):
  model, vae_vars, images, noise = _model_and_batch()

  def reconstruction(params, code_gradient):
    forward, _ = model.forward({**vae_vars, 'params': params}, images, noise, temperature=1.0,
                               code_gradient=code_gradient)
    return jnp.mean(model.reconstruction(forward, images))

  full = jax.grad(reconstruction)(vae_vars['params'], 1.0)
  scaled = jax.grad(reconstruction)(vae_vars['params'], jnp.float32(scale))
  head = lambda g: g['encoder']['categorical_head_0']['kernel']
  np.testing.assert_allclose(head(scaled), scale * head(full), rtol=1e-5, atol=1e-8)
  assert float(jnp.abs(head(full)).max()) > 0
  # The decoder's gradient and the loss value do not change.
  np.testing.assert_allclose(scaled['decoder']['dense_0']['kernel'],
                             full['decoder']['dense_0']['kernel'], rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(reconstruction(vae_vars['params'], jnp.float32(scale)),
                             reconstruction(vae_vars['params'], 1.0), rtol=1e-6)


def _loss(model, vae_vars, images, noise, code):
  forward, _ = model.forward(vae_vars, images, noise, temperature=1.0)
  settings = objectives.ObjectiveSettings(code=code)
  return objectives.vae_loss_from_forward(forward, images, model=model, q_vars={},
                                          step=jnp.asarray(0), settings=settings)


def test_information_term_and_aggregate_kl_enter_the_loss_exactly():
  model = build.build_model(make_tiny_config(**{'mi_weight': 0.0, 'mi.categorical_indices': (),
                                                'mi.gaussian_indices': ()}))
  vae_vars, _ = model.init(jax.random.key(0), batch_size=8)
  _, _, images, noise = _model_and_batch()
  base, base_metrics = _loss(model, vae_vars, images, noise, objectives.CodeTraining())
  code = objectives.CodeTraining(marginal_entropy_weight=3.0, conditional_entropy_weight=0.5)
  loss, metrics = _loss(model, vae_vars, images, noise, code)
  marginal = metrics['code_information/marginal_entropy_0']
  conditional = metrics['code_information/conditional_entropy_0']
  np.testing.assert_allclose(loss - base, 0.5 * conditional - 3.0 * marginal, atol=2e-4)

  agg, agg_metrics = _loss(model, vae_vars, images, noise,
                           objectives.CodeTraining(aggregate_kl=True))
  np.testing.assert_allclose(
      agg - base, agg_metrics['aggregate_kl/categorical_0'] - base_metrics['kl/categorical_0'],
      atol=2e-4)   # the loss is ~500 nats: float32 rounds its differences to ~6e-5
  assert agg_metrics['elbo'] == base_metrics['elbo']   # the ELBO keeps the per-example KL


@pytest.mark.parametrize('key, value, message', [
    ('code_training.marginal_entropy_weight', -1.0, 'must be >= 0'),
    ('code_training.generative_gradient', 1.5, 'must be <= 1'),
    ('code_training.generative_gradient_warmup_steps', -3, 'must be >= 0'),
])
def test_bad_values_are_named(key, value, message):
  with pytest.raises(ConfigError, match=f'{key}.*{message}|{message}.*{key}'):
    validation.validate(make_tiny_config(**{key: value}), check_paths=False)


def test_options_need_a_code():
  config = make_tiny_config(**{'latent.categorical_sizes': (), 'mi.categorical_indices': (),
                               'code_training.aggregate_kl': True})
  with pytest.raises(ConfigError, match='code_training.aggregate_kl'):
    validation.validate(config, check_paths=False)


def _flat(config):
  def walk(node, prefix=''):
    for key, value in node.items():
      if isinstance(value, dict):
        yield from walk(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value
  return dict(walk(config_lib.stored_dict(config)))


def test_warmup_config_is_the_classifier_code_with_the_gradient_back_after_5_epochs():
  """configs/mnist_class_warmup.py differs from configs/mnist_class_imsat.py only in the
  generative gradient's schedule and the 10-epoch budget."""
  imsat = _flat(importlib.import_module('configs.mnist_class_imsat').get_config())
  warmup = _flat(importlib.import_module('configs.mnist_class_warmup').get_config())
  differing = {k: (imsat[k], warmup[k]) for k in imsat if imsat[k] != warmup[k]}
  assert differing == {
      'code_training.generative_gradient': (0.0, 1.0),
      'code_training.generative_gradient_warmup_steps': (0, 1170),
      'num_train_steps': (7020, 2340)}
  scale = objectives.CodeTraining(generative_gradient=1.0, generative_gradient_warmup_steps=1170)
  assert float(scale.generative_gradient_at(jnp.int32(1169))) == 0.0
  assert float(scale.generative_gradient_at(jnp.int32(1170))) == 1.0


def test_long_warmup_config_differs_from_the_warmup_recipe_only_in_its_schedule():
  """configs/mnist_class_warmup_long.py: 10 epochs of classifier training, then 5 of the
  whole objective; everything else as configs/mnist_class_warmup.py."""
  warmup = _flat(importlib.import_module('configs.mnist_class_warmup').get_config())
  long = _flat(importlib.import_module('configs.mnist_class_warmup_long').get_config())
  differing = {k: (warmup[k], long[k]) for k in warmup if warmup[k] != long[k]}
  assert differing == {
      'code_training.generative_gradient_warmup_steps': (1170, 2340),
      'num_train_steps': (2340, 3510), 'checkpoint_every_steps': (2340, 1170)}
