"""The IMSAT classifier: its objective against a hand computation, the authors' BatchNorm
semantics in the VAT passes, the start at the uniform prediction, and the training
loop's resume, seed independence and single compilation."""

import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax import consistency
from vmivae_jax.experiments import imsat
from vmivae_jax.model import classifier

TINY = classifier.ImsatSettings(hidden=(16, 16), num_classes=4, batch_size=50, epochs=2,
                           learning_rate=1e-2)


def _variables(settings=TINY, dim=12, seed=0):
  model = classifier.Classifier(hidden=settings.hidden, num_classes=settings.num_classes,
                           head_init_scale=settings.head_init_scale)
  return model, model.init(jax.random.key(seed), jnp.zeros((1, dim)), train=False)


def _np_entropy(p):
  return -np.sum(p * np.log(p), axis=-1)


@pytest.mark.parametrize('vat_batch_norm', ['batch', 'running'])
def test_objective_is_vat_plus_weighted_entropies(vat_batch_norm):
  settings = classifier.ImsatSettings(hidden=(16,), num_classes=4, head_init_scale=1.0, lam=0.3,
                                 mu=2.5, vat_weight=1.7, vat_batch_norm=vat_batch_norm)
  model, variables = _variables(settings)
  x = jax.random.normal(jax.random.key(1), (8, 12))
  eps = jnp.linspace(0.1, 1.0, 8)
  key = jax.random.key(2)
  loss, aux = classifier.imsat_objective(variables['params'], variables['batch_stats'], x, eps, key,
                                    model=model, settings=settings)

  logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  p = np.asarray(jax.nn.softmax(logits))
  conditional = _np_entropy(p).mean()
  marginal = _np_entropy(p.mean(0))
  if vat_batch_norm == 'batch':
    fn = lambda y: model.apply(variables, y, train=True, mutable=['batch_stats'])[0]
  else:
    fn = lambda y: model.apply(variables, y, train=False)
  r = consistency.vat_perturbation(fn, x, key, epsilon=eps, xi=settings.xi, clean_logits=logits)
  q = np.asarray(jax.nn.softmax(fn(x + r)))
  vat = np.sum(p * (np.log(p) - np.log(q)), -1).mean()
  expected = 1.7 * vat + 0.3 * (conditional - 2.5 * marginal)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(aux['conditional_entropy']), conditional, rtol=1e-5)
  np.testing.assert_allclose(float(aux['marginal_entropy']), marginal, rtol=1e-5)
  # The radius is each example's own: ||r_b|| = eps_b.
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r), axis=1), eps, rtol=1e-5)


def test_perturbed_passes_do_not_move_running_statistics():
  model, variables = _variables()
  x = jax.random.normal(jax.random.key(1), (8, 12))
  _, aux = classifier.imsat_objective(variables['params'], variables['batch_stats'], x,
                                 jnp.full((8,), 3.0), jax.random.key(2), model=model,
                                 settings=TINY)
  _, clean = model.apply(variables, x, train=True, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, aux['batch_stats'], clean['batch_stats'])


def test_batch_norm_vat_reads_the_perturbed_batch_statistics():
  """With 'batch' the perturbed pass normalises with its own batch's statistics, so a
  perturbation that shifts every example equally changes nothing; with 'running' it does."""
  model, variables = _variables(classifier.ImsatSettings(hidden=(16,), num_classes=4,
                                                    head_init_scale=1.0))
  x = jax.random.normal(jax.random.key(1), (8, 12))
  shift = jnp.ones((8, 12))
  batch = lambda y: model.apply(variables, y, train=True, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(batch(x + shift), batch(x), atol=1e-4)
  running = lambda y: model.apply(variables, y, train=False)
  assert np.abs(np.asarray(running(x + shift) - running(x))).max() > 1e-2


def test_head_starts_at_the_uniform_prediction():
  model, variables = _variables(classifier.ImsatSettings(num_classes=10), dim=784)
  x = jax.random.uniform(jax.random.key(3), (32, 784))
  p = jax.nn.softmax(model.apply(variables, x, train=False))
  assert float(jnp.max(jnp.abs(p - 0.1))) < 1e-3


@pytest.mark.parametrize('field, value', [('vat_batch_norm', 'none'), ('lam', -1.0),
                                          ('batch_size', 0), ('learning_rate', 0.0)])
def test_bad_settings_name_the_value(field, value):
  with pytest.raises(ValueError, match=field):
    classifier.ImsatSettings(**{field: value})


def test_neighbour_radii_match_brute_force():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1100, 5)).astype(np.float32)
  radii = imsat.neighbour_radii(x, k=3, scale=0.5)
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  np.testing.assert_allclose(radii, 0.5 * np.sort(d, axis=1)[:, 2], rtol=1e-3)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  return dict(dataset='mnist', limit=200, log=lambda *_: None)


def _state_bytes(workdir):
  return (workdir / 'checkpoint.msgpack').read_bytes()


def test_resume_is_bitwise_and_members_are_independent(tmp_path, tiny_data):
  straight = imsat.train(str(tmp_path / 'straight'), seeds=[3, 5], settings=TINY,
                               **tiny_data)
  one = classifier.ImsatSettings(**{**TINY.__dict__, 'epochs': 1})
  imsat.train(str(tmp_path / 'resumed'), seeds=[3, 5], settings=one, **tiny_data)
  resumed = imsat.train(str(tmp_path / 'resumed'), seeds=[3, 5], settings=TINY,
                              **tiny_data)
  assert _state_bytes(tmp_path / 'straight') == _state_bytes(tmp_path / 'resumed')
  assert straight['per_seed'] == resumed['per_seed']
  history = json.loads((tmp_path / 'resumed' / 'history.json').read_text())
  assert [row['epoch'] for row in history] == [1, 2]

  alone = imsat.train(str(tmp_path / 'alone'), seeds=[5], settings=TINY, **tiny_data)
  pair = json.loads((tmp_path / 'straight' / 'history.json').read_text())
  single = json.loads((tmp_path / 'alone' / 'history.json').read_text())
  np.testing.assert_allclose([r['loss'][1] for r in pair], [r['loss'][0] for r in single],
                             rtol=1e-4)
  assert alone['per_seed'][0]['seed'] == 5


def test_report_of_a_partial_run(tmp_path, tiny_data):
  one = classifier.ImsatSettings(**{**TINY.__dict__, 'epochs': 1})
  imsat.train(str(tmp_path), seeds=[0, 1], settings=one, **tiny_data)
  history = json.loads((tmp_path / 'history.json').read_text())
  # Planned 2 epochs on the same workdir, 1 done: the report says so.
  spec = json.loads((tmp_path / 'settings.json').read_text())
  spec['settings']['epochs'] = 2
  (tmp_path / 'settings.json').write_text(json.dumps(spec))
  text = imsat.report(str(tmp_path))
  accuracy = np.array(history[0]['test_accuracy'])
  assert 'partial: 1 of 2 epochs' in text
  assert f'**{100 * accuracy.mean():.1f} ± {100 * accuracy.std(ddof=1):.1f}%**' in text
  assert f'| test accuracy, epoch 1 | {100 * accuracy[0]:.1f}% |' in text


def test_other_settings_on_a_workdir_are_refused(tmp_path, tiny_data):
  imsat.train(str(tmp_path), seeds=[0], settings=TINY, **tiny_data)
  other = classifier.ImsatSettings(**{**TINY.__dict__, 'lam': 0.2})
  with pytest.raises(ValueError, match='other settings'):
    imsat.train(str(tmp_path), seeds=[0], settings=other, **tiny_data)
  with pytest.raises(ValueError, match='seeds'):
    imsat.train(str(tmp_path / 'x'), seeds=[1, 1], settings=TINY, **tiny_data)


def test_epoch_program_compiles_once(tmp_path):
  model = classifier.Classifier(hidden=TINY.hidden, num_classes=TINY.num_classes)
  fn = imsat.make_epoch_fn(model, TINY, 100)
  state = jax.tree.map(lambda *x: jnp.stack(x),
                       *[imsat.init_state(s, model, TINY, 12) for s in (0, 1)])
  x, r = jnp.ones((100, 12)), jnp.ones((100,))
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  for _ in range(3):
    state, _ = fn(state, x, r, keys, keys)
  assert fn._cache_size() == 1
  restored = flax.serialization.from_bytes(state, flax.serialization.to_bytes(state))
  assert int(restored.step[0]) == 6


def test_docstring_examples_run():
  import doctest
  results = doctest.testmod(classifier, verbose=False, report=False)
  assert results.attempted > 0 and results.failed == 0
