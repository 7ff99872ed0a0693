"""config.compute_dtype: bfloat16 activations and matmul inputs, float32 parameters,
optimizer states and losses; 'float32' (the default) is the model as it always was."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from conftest import numpy_variables
from conftest import random_uint8_images
from vmivae_jax import latents
from vmivae_jax.config import config_lib
from vmivae_jax.config import validation
from vmivae_jax.train import build
from vmivae_jax.train import train_state
from vmivae_jax.train import train_step
from vmivae_jax.util import parallel

N = 256


def _config(family: str, dtype: str):
  c = make_tiny_config(compute_dtype=dtype)
  c.vae_optimizer.name = c.q_optimizer.name = 'adam'
  if family == 'conv':
    c.model.update(family='conv', norm='batch', activation='leaky_relu', encoder_hidden=(16,),
                   decoder_hidden=(16,), q_hidden=(16,), encoder_channels=(4, 8),
                   decoder_channels=(8, 4), q_channels=(4, 8))
  validation.validate(c, check_paths=False)
  return c


def _initial_state(run: build.Run):
  """The initial state from numpy (conftest.numpy_variables; compiling init is slow)."""
  vae_vars, q_vars = numpy_variables(jax.eval_shape(run.model.init, run.keys['init']))
  vae_params, vae_state = train_state.split_variables(vae_vars)
  q_params, q_state = train_state.split_variables(q_vars)
  s = run.step_statics
  return train_state.TrainState(
      step=np.zeros((), np.int32), vae_params=vae_params, vae_state=vae_state,
      vae_opt_state=s.vae_tx.init(vae_params), q_params=q_params, q_state=q_state,
      q_opt_state=s.q_tx.init(q_params))


def _train(config, num_chunks: int, steps: int):
  run = build.build_run(config, num_train_examples=N)
  mesh = parallel.make_mesh(1)
  chunk = train_step.make_train_chunk(run.step_statics, mesh, steps)
  state = parallel.replicate(_initial_state(run), mesh)
  images = parallel.replicate(jnp.asarray(random_uint8_images(N)), mesh)
  losses = []
  for _ in range(num_chunks):
    state, metrics = chunk(state, images, run.keys['step'], run.keys['data'])
    losses.append(np.asarray(metrics['loss']))
  return state, np.concatenate(losses)


@pytest.mark.parametrize('family, chunks, steps', [('mlp', 3, 20), ('conv', 2, 4)])
def test_bfloat16_run_trains_with_float32_state(family, chunks, steps):
  state, losses = _train(_config(family, 'bfloat16'), chunks, steps)
  assert np.all(np.isfinite(losses)), losses
  assert losses[-steps:].mean() < losses[:steps].mean(), losses
  for leaf in jax.tree.leaves((state.vae_params, state.q_params, state.vae_opt_state,
                               state.q_opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))


def _forward_jaxpr(config):
  model = build.build_model(config)
  vae_vars, _ = numpy_variables(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  x = jnp.zeros((4, 28, 28, 1))
  noise = latents.draw_noise(jax.random.PRNGKey(1), model.latent, 4)
  fn = lambda v: model.forward(v, x, noise, temperature=1.0, hard=False, train=True)
  return jax.make_jaxpr(fn)(vae_vars), jax.eval_shape(fn, vae_vars)


def _dot_input_dtypes(jaxpr) -> set:
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ('dot_general', 'conv_general_dilated'):
      found |= {str(v.aval.dtype) for v in eqn.invars}
    for sub in _sub_jaxprs(eqn.params):
      found |= _dot_input_dtypes(sub)
  return found


def _sub_jaxprs(params):
  for value in params.values():
    if hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):
      yield value.jaxpr
    elif hasattr(value, 'eqns'):
      yield value


@pytest.mark.parametrize('family', ['mlp', 'conv'])
def test_matmuls_run_in_the_compute_dtype_outputs_are_float32(family):
  for dtype, want in (('float32', {'float32'}), ('bfloat16', {'bfloat16'})):
    jaxpr, (forward, _) = _forward_jaxpr(_config(family, dtype))
    assert _dot_input_dtypes(jaxpr.jaxpr) == want, dtype
    # Everything the losses read is float32.
    for leaf in jax.tree.leaves((forward.posterior, forward.sample, forward.raw_output)):
      assert leaf.dtype == jnp.float32, dtype


def test_float32_is_the_model_without_the_setting():
  """compute_dtype='float32' builds exactly the modules a config written before the
  setting existed builds (with_later_keys fills it in), so float32 runs are
  unchanged (tests/test_golden.py checks the metrics bitwise)."""
  new = make_tiny_config()
  old = make_tiny_config()
  del old['compute_dtype']
  del old.model['conv_impl']
  del old.model['deconv_impl']
  old = config_lib.with_later_keys(old)
  assert old.to_dict() == new.to_dict()
  model = build.build_model(new)
  assert model.vae.decoder.dtype is None and model.vae.encoder.trunk.dtype is None


def test_bad_compute_dtype_is_refused():
  c = make_tiny_config(compute_dtype='float16')
  with pytest.raises(validation.ConfigError, match=r"config.compute_dtype='float16': choose "
                                                  r"one of \('float32', 'bfloat16'\)"):
    validation.validate(c, check_paths=False)
