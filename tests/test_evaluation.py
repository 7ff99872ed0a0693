"""Tests for vmivae_jax.evaluation: clustering scores, active units, IWAE, MI bounds.

Tiny random models and synthetic images only: no data set, no checkpoint.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import check_iwae_against_elbo
from vmivae_jax import evaluation
from vmivae_jax import losses
from vmivae_jax.config import config_lib
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.util import fileio


def tiny_config(*, gaussian_dims=4, categorical_sizes=(10,), mi_gaussian=(), mi_categorical=(0,),
                **overrides):
  c = config_lib.get_base_config()
  c.latent.gaussian_dims = gaussian_dims
  c.latent.categorical_sizes = categorical_sizes
  c.mi.gaussian_indices = mi_gaussian
  c.mi.categorical_indices = mi_categorical
  c.model.encoder_hidden = c.model.decoder_hidden = c.model.q_hidden = (32,)
  return config_lib.override(c, overrides)


def tiny_model(config, seed=0):
  model = build.build_model(config)
  vae_vars, q_vars = jax.jit(model.init)(jax.random.PRNGKey(seed))
  return model, vae_vars, q_vars


def random_images(n, seed=0, binary=True):
  rng = np.random.default_rng(seed)
  if binary:
    # Blobs of ones on zeros, so that a random decoder is not hopeless.
    return (rng.random((n, 28, 28, 1)) < 0.2).astype(np.float32)
  return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


@pytest.fixture(scope='module')
def joint():
  """A tiny random 4 Gaussian + 10-way code model, MI on the code."""
  return tiny_model(tiny_config())


# ----------------------------------------------------------------------------------
# Clustering scores (hand-computed values).


def test_hungarian_vs_majority_accuracy():
  # counts (label x code): label 0 -> codes {0: 2, 1: 2}; label 1 -> codes {0: 1, 1: 1}.
  labels = np.array([0, 0, 0, 0, 1, 1])
  codes = np.array([0, 0, 1, 1, 0, 1])
  # Many-to-one: both codes map to label 0 -> 4/6. One-to-one: one code must take label 1
  # -> 2 + 1 = 3/6.
  assert evaluation.accuracy_majority(labels, codes) == pytest.approx(4 / 6)
  assert evaluation.accuracy_hungarian(labels, codes) == pytest.approx(3 / 6)


def test_accuracies_of_a_permuted_perfect_clustering_are_one():
  labels = np.array([0, 0, 1, 1, 2, 2, 2])
  codes = np.array([7, 7, 3, 3, 5, 5, 5])  # any code names
  assert evaluation.accuracy_hungarian(labels, codes) == 1.0
  assert evaluation.accuracy_majority(labels, codes) == 1.0


def test_more_codes_than_labels():
  labels = np.array([0, 0, 1, 1])
  codes = np.array([0, 1, 2, 3])
  assert evaluation.accuracy_majority(labels, codes) == 1.0   # every code is pure
  assert evaluation.accuracy_hungarian(labels, codes) == 0.5  # only 2 codes can be matched


def test_count_matrix():
  counts = evaluation.count_matrix([0, 1, 1, 2], [1, 1, 0, 1], num_labels=4, num_codes=3)
  np.testing.assert_array_equal(counts, [[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_nmi_and_ari_hand_computed():
  labels = np.array([0, 0, 0, 1, 1, 1])
  codes = np.array([0, 0, 1, 1, 2, 2])
  # I = (2/3) ln 2; H(labels) = ln 2; H(codes) = ln 3; NMI = I / ((ln 2 + ln 3) / 2).
  assert evaluation.normalized_mutual_information(labels, codes) == pytest.approx(
      (4 / 3) * math.log(2) / math.log(6))
  # sum_ij C(n_ij, 2) = 2, sum_i C(a_i, 2) = 6, sum_j C(b_j, 2) = 3, C(6, 2) = 15:
  # (2 - 6 * 3 / 15) / ((6 + 3) / 2 - 6 * 3 / 15) = 0.8 / 3.3 = 8/33.
  assert evaluation.adjusted_rand_index(labels, codes) == pytest.approx(8 / 33)
  # sklearn's docstring example: adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) = 0.57...
  assert evaluation.adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
  # Crossed partitions: ARI = (0 - 2 * 2 / 6) / (2 - 4 / 6) = -0.5, NMI = 0.
  assert evaluation.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
  assert evaluation.normalized_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)


def test_nmi_and_ari_edge_cases():
  labels = np.array([0, 0, 1, 1, 2, 2])
  perfect = np.array([2, 2, 0, 0, 1, 1])
  assert evaluation.normalized_mutual_information(labels, perfect) == pytest.approx(1.0)
  assert evaluation.adjusted_rand_index(labels, perfect) == pytest.approx(1.0)
  ones = np.zeros(6, int)
  assert evaluation.normalized_mutual_information(ones, ones) == 1.0
  assert evaluation.adjusted_rand_index(ones, ones) == 1.0
  assert evaluation.normalized_mutual_information(labels, ones) == pytest.approx(0.0)
  assert evaluation.adjusted_rand_index(labels, ones) == pytest.approx(0.0)
  # Independent labels and codes: both near 0.
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 10, 20_000), rng.integers(0, 10, 20_000)
  assert abs(evaluation.adjusted_rand_index(a, b)) < 0.005
  assert 0.0 <= evaluation.normalized_mutual_information(a, b) < 0.005


# ----------------------------------------------------------------------------------
# Latent usage.


def test_active_units_constructed():
  rng = np.random.default_rng(0)
  n = 10_000
  means = np.stack([np.full(n, 0.3),                      # constant: variance 0
                    rng.normal(0, math.sqrt(0.005), n),   # variance 0.005 < 0.01
                    rng.normal(2, math.sqrt(0.05), n),    # variance 0.05 > 0.01
                    rng.normal(0, 1.0, n)], axis=1)       # variance 1
  count, variances = evaluation.active_units(means)
  assert count == 2
  np.testing.assert_allclose(variances, [0.0, 0.005, 0.05, 1.0], rtol=0.05, atol=1e-12)


def test_latent_influence_is_zero_for_an_ignored_dim(joint):
  model, vae_vars, _ = joint
  # Zero the decoder's input weights of Gaussian dim 2: x' no longer depends on it.
  params = jax.tree.map(lambda x: x, vae_vars['params'])
  kernel = params['decoder']['dense_0']['kernel']
  params['decoder']['dense_0']['kernel'] = kernel.at[2].set(0.0)
  vae_vars = {**vae_vars, 'params': params}
  rng = np.random.default_rng(0)
  influence = evaluation.latent_influence(model, vae_vars, rng.normal(size=(20, 4)),
                                        (rng.normal(size=(20, 10)),), max_decodes=64)
  assert influence.shape == (4,)
  assert influence[2] == 0.0
  assert np.all(influence[[0, 1, 3]] > 0)


# ----------------------------------------------------------------------------------
# IWAE.


def test_iwae_is_at_least_the_elbo_and_k1_matches_it(joint):
  model, vae_vars, _ = joint
  elbo, iwae = check_iwae_against_elbo(model, vae_vars, random_images(64), ks=(1, 8, 64))
  # The bound tightens with k (in expectation; here the gaps are well above the noise).
  assert np.mean(iwae[64]) > np.mean(iwae[8]) > np.mean(elbo)


def test_iwae_is_deterministic_and_batch_padding_is_harmless(joint):
  model, vae_vars, _ = joint
  images = random_images(10, seed=3, binary=False)  # uint8 input, scaled inside
  key = jax.random.PRNGKey(5)
  a = evaluation.iwae_log_likelihood(model, vae_vars, images, num_samples=8, chunk=4, key=key,
                                   batch_size=4)  # 3 batches, the last one padded
  b = evaluation.iwae_log_likelihood(model, vae_vars, images, num_samples=8, chunk=4, key=key,
                                   batch_size=4)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (10,)
  c = evaluation.iwae_log_likelihood(model, vae_vars, images[:4], num_samples=8, chunk=4,
                                   key=key, batch_size=4)
  np.testing.assert_allclose(a[:4], c, rtol=1e-6)  # same first batch, same draws


def test_iwae_refuses_mse_and_bad_chunks():
  mse = build.build_model(tiny_config(likelihood='mse', pixel_range='minus_one_one'))
  with pytest.raises(ValueError, match='mse'):
    evaluation.iwae_log_likelihood(mse, None, random_images(2), num_samples=2, chunk=1,
                                 key=jax.random.PRNGKey(0), batch_size=2)
  with pytest.raises(ValueError, match='divide'):
    evaluation.iwae_log_likelihood(build.build_model(tiny_config()), None, random_images(2),
                                 num_samples=5, chunk=2, key=jax.random.PRNGKey(0),
                                 batch_size=2)


def test_iwae_gaussian_likelihood_is_finite():
  model, vae_vars, _ = tiny_model(tiny_config(likelihood='gaussian', gaussian_logvar=-2.0,
                                              categorical_sizes=(), mi_categorical=(),
                                              mi_gaussian=(0,)))
  out = evaluation.iwae_log_likelihood(model, vae_vars, random_images(6), num_samples=4,
                                     chunk=2, key=jax.random.PRNGKey(0), batch_size=6)
  assert out.shape == (6,) and np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------
# Entropies and MI bounds.


def test_exact_mi_is_aggregate_minus_conditional_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 6)) * 2
  probs = evaluation.mi_bound.softmax(logits)
  h_mean = evaluation.categorical_entropy_of_mean(probs)
  conditional = -np.mean(np.sum(probs * np.log(probs), axis=1))
  assert float(losses.exact_categorical_mutual_information(logits=jnp.asarray(logits))) == (
      pytest.approx(h_mean - conditional, rel=1e-4))
  # Deterministic distinct codes: I = log K; constant logits: I = 0.
  one_hot = np.log(np.eye(6)[np.arange(60) % 6] + 1e-12)
  assert float(losses.exact_categorical_mutual_information(logits=jnp.asarray(one_hot))) == (
      pytest.approx(math.log(6), abs=1e-4))


def test_chunked_aggregate_entropy_matches_losses():
  rng = np.random.default_rng(0)
  z, mean = rng.normal(size=(37, 2)), rng.normal(size=(37, 2))
  logvar = rng.normal(size=(37, 2)) * 0.3
  expected = float(losses.gaussian_aggregate_entropy_mc(
      samples=jnp.asarray(z, jnp.float32), mean=jnp.asarray(mean, jnp.float32),
      logvar=jnp.asarray(logvar, jnp.float32)))
  chunked = evaluation.gaussian_aggregate_entropy(z, mean, logvar, max_pairs=37 * 5)  # 8 chunks
  assert chunked == pytest.approx(expected, rel=1e-5)


def test_fresh_q_mi_bound_categorical_entropy_is_the_test_sets(joint):
  model, vae_vars, _ = joint
  test = random_images(60, seed=1, binary=False)
  out = evaluation.fresh_q_mi_bound(model, vae_vars, random_images(128, binary=False), test,
                                    steps=30, batch_size=32, learning_rate=1e-3,
                                    key=jax.random.PRNGKey(0), temperature=0.5,
                                    eval_batch_size=32)
  assert out['entropy_kind'] == 'categorical_aggregate'
  assert 'mi_objective_prior_entropy' not in out
  # H(c): the plug-in entropy of the test set's mean q(c|x), recomputed from the encoder.
  stats = evaluation.vae_statistics(model, vae_vars, test, key=jax.random.PRNGKey(5),
                                    temperature=0.5, batch_size=32, relaxed=False)
  p = np.mean(np.asarray(jax.nn.softmax(stats['logits'][0].astype(np.float64))), axis=0)
  assert out['entropy'] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-6)
  assert 0.0 < out['mi_bound_se'] < 1.0 and 0.0 <= out['entropy_se'] < 1.0
  assert out['q_loss_last'] < out['q_loss_first']  # Q learns something in 30 steps
  again = evaluation.fresh_q_mi_bound(model, vae_vars, random_images(128, binary=False), test,
                                      steps=30, batch_size=32, learning_rate=1e-3,
                                      key=jax.random.PRNGKey(0), temperature=0.5,
                                      eval_batch_size=32)
  assert again == out  # deterministic given the key


def _gaussian_stats(rng, n, *, prior_scale, noise_scale, model_dims=4):
  """Synthetic vae_statistics for one targeted Gaussian dim with a known MI.

  mu_x ~ N(0, a^2), z ~ N(mu_x, s^2): I(z; x) = 0.5 log(1 + a^2 / s^2). The oracle Q
  (x' reveals mu_x) has log Q = log N(z; mu_x, s^2), so E log Q + H(z) = I exactly.
  """
  mean = np.zeros((n, model_dims), np.float32)
  mean[:, 0] = rng.normal(size=n) * prior_scale
  logvar = np.full((n, model_dims), 2 * np.log(noise_scale), np.float32)
  z = mean[:, :1] + noise_scale * rng.normal(size=(n, 1)).astype(np.float32)
  log_q = (-0.5 * np.log(2 * np.pi) - np.log(noise_scale)
           - 0.5 * ((z[:, 0] - mean[:, 0]) / noise_scale) ** 2)
  return dict(mean=mean, logvar=logvar, logits=(), mi_z=z, log_q={'oracle': log_q})


@pytest.mark.parametrize('prior_scale,noise_scale', [(0.3, 0.2), (2.0, 0.5)])
def test_gaussian_mi_bound_with_an_oracle_q_is_the_true_mi(prior_scale, noise_scale):
  """The headline bound uses the aggregate posterior's entropy, not the prior's: with
  shrunk (0.3) or widened (2.0) targeted dims the prior-entropy objective is far off."""
  model, _, _ = tiny_model(tiny_config(categorical_sizes=(), mi_categorical=(),
                                       mi_gaussian=(0,)))
  rng = np.random.default_rng(0)
  true_mi = 0.5 * math.log(1 + (prior_scale / noise_scale) ** 2)
  out = evaluation.mi_bounds_from_statistics(
      model, _gaussian_stats(rng, 4000, prior_scale=prior_scale, noise_scale=noise_scale))
  assert out['entropy_kind'] == 'gaussian_aggregate_mc'
  # Down-bias at N = 4000 is ~1e-3 nats (losses.gaussian_aggregate_entropy_mc).
  assert abs(out['oracle'] - true_mi) < 3 * out['oracle/se'] + 2e-3, (out, true_mi)
  assert out['oracle/se'] < 0.05
  prior_gap = out['oracle/objective_prior_entropy'] - true_mi
  assert abs(prior_gap) > 0.3   # the thesis objective is not the MI here


def test_mi_bound_standard_error_matches_replications():
  """mi_bound's SE (per-example terms, whole-set aggregate entropy) against the spread
  of the bound over independent test sets: an SE of the wrong size fails."""
  model, _, _ = tiny_model(tiny_config(categorical_sizes=(), mi_categorical=(),
                                       mi_gaussian=(0,)))
  rng = np.random.default_rng(1)
  bounds, ses = [], []
  for _ in range(60):
    out = evaluation.mi_bounds_from_statistics(
        model, _gaussian_stats(rng, 200, prior_scale=1.0, noise_scale=0.5))
    bounds.append(out['oracle'])
    ses.append(out['oracle/se'])
  ratio = np.std(bounds, ddof=1) / np.mean(ses)
  assert 0.7 < ratio < 1.4, ratio


def test_joint_targets_bound_uses_the_joint_entropy():
  """A code c and a Gaussian dim g with g | x ~ N(3 c_x, 0.3^2), c_x uniform over K and
  certain given x: I(g, c; x) = log K (g adds nothing once c is known). The sum of the
  groups' entropies would give ~2 log K; the joint entropy gives log K."""
  k, n = 4, 2000
  model, _, _ = tiny_model(tiny_config(categorical_sizes=(k,), mi_categorical=(0,),
                                       mi_gaussian=(0,)))
  rng = np.random.default_rng(2)
  c = rng.integers(0, k, size=n)
  mean = np.zeros((n, 4), np.float32)
  mean[:, 0] = 3.0 * c
  logvar = np.full((n, 4), 2 * np.log(0.3), np.float32)
  z = mean[:, :1] + 0.3 * rng.normal(size=(n, 1)).astype(np.float32)
  logits = np.where(np.eye(k)[c] > 0, 0.0, -40.0).astype(np.float32)
  log_q = -0.5 * np.log(2 * np.pi) - np.log(0.3) - 0.5 * ((z[:, 0] - mean[:, 0]) / 0.3) ** 2
  out = evaluation.mi_bounds_from_statistics(
      model, dict(mean=mean, logvar=logvar, logits=(logits,), mi_z=z, log_q={'oracle': log_q}))
  assert out['entropy_kind'] == 'joint_aggregate_mc'
  assert out['oracle'] == pytest.approx(math.log(k), abs=3 * out['oracle/se'] + 0.01)
  # Chunked over rows, the terms equal the losses estimator on the whole set.
  whole = float(losses.joint_aggregate_entropy_mc(
      samples=jnp.asarray(z), mean=jnp.asarray(mean[:, :1]), logvar=jnp.asarray(logvar[:, :1]),
      logits=jnp.asarray(logits)))
  assert out['entropy'] == pytest.approx(whole, abs=1e-4)


def test_gaussian_aggregate_entropy_matches_quadrature():
  """The whole-set estimate against the mixture's entropy by quadrature (unbiased for
  the set's mixture: mean over independent draws within 3 SE of the integral), and its
  down-bias for the population entropy (N(0, a^2 + s^2)) is small at N = 1000."""
  rng = np.random.default_rng(3)
  n, s = 1000, 0.5
  mu = rng.normal(size=(n, 1)).astype(np.float32) * 1.5
  logvar = np.full((n, 1), 2 * np.log(s), np.float32)
  grid = np.linspace(-12, 12, 20001)
  dens = np.mean(np.exp(-0.5 * ((grid[:, None] - mu[None, :, 0]) / s) ** 2), axis=1) / (
      s * np.sqrt(2 * np.pi))
  h_quad = float(-np.sum(dens * np.log(np.maximum(dens, 1e-300))) * (grid[1] - grid[0]))
  estimates = [evaluation.gaussian_aggregate_entropy(
      mu + s * rng.normal(size=(n, 1)).astype(np.float32), mu, logvar) for _ in range(20)]
  se = np.std(estimates, ddof=1) / np.sqrt(len(estimates))
  # Unbiased for the set's mixture (one draw per component; tolerance for the grid).
  assert abs(np.mean(estimates) - h_quad) < 3 * se + 4.0 / n, (np.mean(estimates), h_quad)
  h_population = 0.5 * np.log(2 * np.pi * np.e * (1.5 ** 2 + s ** 2))
  assert abs(h_quad - h_population) < 0.1   # the set's mixture is near the population


def test_local_model_lets_batchnorm_train_outside_a_mesh():
  """run.model has batch_norm_axis='data' (train-mode BatchNorm needs shard_map);
  evaluation uses local_model, with the same parameter trees."""
  config = tiny_config(**{'model.family': 'conv', 'model.norm': 'batch',
                          'model.encoder_hidden': (8,), 'model.decoder_hidden': (8,),
                          'model.q_hidden': (8,), 'model.encoder_channels': (2, 4),
                          'model.q_channels': (2, 4), 'model.decoder_channels': (4, 2)})
  model = build.build_model(config, batch_norm_axis='data')
  local = evaluation.local_model(model)
  for module in (local.vae.encoder.trunk, local.vae.decoder, local.q.trunk):
    assert module.batch_norm_axis is None
  assert local == evaluation.local_model(local)  # idempotent: same jit cache entry
  q_vars = evaluation.init_q(model, jax.random.PRNGKey(0))
  x = jnp.zeros((4, 28, 28, 1))
  apply = jax.jit(lambda m, v: m.q.apply(v, x, train=True, mutable=['batch_stats']),
                  static_argnums=0)
  _, state = apply(local, q_vars)
  assert jax.tree.structure(state['batch_stats']) == jax.tree.structure(q_vars['batch_stats'])
  with pytest.raises(NameError, match='data'):
    apply(model, q_vars)


def test_eval_keys_are_deterministic_and_distinct():
  a, b = evaluation.eval_keys(3), evaluation.eval_keys(3)
  for name in a:
    np.testing.assert_array_equal(jax.random.key_data(a[name]), jax.random.key_data(b[name]))
  values = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in a.values()}
  assert len(values) == len(a)


# ----------------------------------------------------------------------------------
# evaluate_workdir's refusals (the end-to-end run is in test_cli.py).


def test_evaluate_workdir_refuses_empty_and_checkpointless_dirs(tmp_path):
  # The checks are workdir.check_evaluable's (the same ones eval.py runs first).
  with pytest.raises(workdir_lib.WorkdirError, match='does not exist'):
    evaluation.evaluate_workdir(tmp_path / 'missing')
  with pytest.raises(workdir_lib.WorkdirError, match='not the workdir of a train.py run'):
    evaluation.evaluate_workdir(tmp_path)
  fileio.atomic_write(tmp_path / workdir_lib.CONFIG_FILE,
                                workdir_lib.config_to_json(tiny_config()))
  with pytest.raises(workdir_lib.WorkdirError, match='no checkpoint'):
    evaluation.evaluate_workdir(tmp_path)
  (tmp_path / 'checkpoints').mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match='no checkpoint'):
    evaluation.evaluate_workdir(tmp_path)
  (tmp_path / 'checkpoints' / '10').mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match='step 7'):
    evaluation.evaluate_workdir(tmp_path, step=7)


# ----------------------------------------------------------------------------------
# Helpers.


def test_figure_arrays_shapes(joint):
  model, vae_vars, _ = joint
  images = random_images(6)
  stats = evaluation.vae_statistics(model, vae_vars, images, key=jax.random.PRNGKey(0),
                                  temperature=1.0, batch_size=6, relaxed=False)
  out = evaluation.figure_arrays(model, vae_vars, stats, images, code_index=0, num_examples=3,
                               traversal_range=2.0, traversal_steps=5)
  assert out['grid'].shape == (5, 5, 28, 28, 1) and out['grid_dims'] == (0, 1)
  assert out['rows'].shape == (2, 3, 5, 28, 28, 1)  # no MI Gaussian dims: dims 0 and 1
  assert out['categories'].shape == (3, 10, 28, 28, 1)
  assert out['originals'].shape == (3, 28, 28, 1)
  for key in ('grid', 'rows', 'categories'):
    assert 0.0 <= out[key].min() and out[key].max() <= 1.0
  # The grid's centre column/row value is 0 for both dims: one decode of that code.
  code = np.concatenate([stats['mean'][:1], np.eye(10)[np.argmax(stats['logits'][0][:1], -1)]],
                        axis=-1)
  code[0, :2] = 0.0
  centre = evaluation.decode_mean(model, vae_vars, jnp.asarray(code, jnp.float32))
  np.testing.assert_allclose(out['grid'][2, 2], centre[0], atol=1e-5)
  assert evaluation.traversal_dims(evaluation.local_model(model)) == (0, 1)
