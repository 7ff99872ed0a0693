"""Evaluates a run's checkpoint on the test split: composes the evaluation modules.

``evaluate_workdir(workdir)`` restores the checkpoint and writes
``WORKDIR/eval/metrics.json`` (plus ``assignments.npz`` and the PNG figures). Each
``_*_metrics`` function below adds one group of keys to the metrics dict; a new
evaluation is one more such function and one line in :func:`evaluate_workdir`.
"""

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vmivae_jax import losses
from vmivae_jax.config import validation
from vmivae_jax.data import datasets
from vmivae_jax.data import dsprites
from vmivae_jax.data import preprocess
from vmivae_jax.data import sources as data
from vmivae_jax.evaluation import classifier
from vmivae_jax.evaluation import clustering
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import disentanglement_eval
from vmivae_jax.evaluation import figure_data
from vmivae_jax.evaluation import latent_usage
from vmivae_jax.evaluation import likelihood
from vmivae_jax.evaluation import mi_bound
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import build
from vmivae_jax.util import fileio

METRICS_JSON = 'metrics.json'
ASSIGNMENTS_NPZ = 'assignments.npz'


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What every metric group reads: the restored model and the data, already prepared."""
  workdir: Path
  config: ml_collections.ConfigDict
  model: model_lib.VMIModel               # local (no device mesh)
  vae_vars: dict
  training_q_vars: dict
  temperature: float
  keys: dict[str, jax.Array]
  train_images: np.ndarray                # uint8
  train_labels: np.ndarray
  test_x: np.ndarray                      # float32 in the pixel range (binarised if trained so)
  test_labels: np.ndarray
  step: int                               # of the restored checkpoint


def evaluate_workdir(workdir: str | Path, step: int | None = None, *,
                     make_figures: bool = True,
                     config: ml_collections.ConfigDict | None = None) -> dict:
  """Evaluates a run's checkpoint on the test split; writes and returns the metrics.

  Writes ``WORKDIR/eval/metrics.json``, ``assignments.npz`` (codes with labels, for
  models with a categorical code) and, with ``make_figures``, the PNG figures.

  Args:
    workdir: a train.py workdir.
    step: the checkpoint to evaluate (default: the latest).
    make_figures: also write the PNG figures.
    config: the run's config when the caller already checked the workdir with
      ``workdir.check_evaluable`` (eval.py does, before importing this module).

  Raises:
    workdir.WorkdirError: no such workdir, no config, no checkpoint (or not ``step``).
    validation.ConfigError: the stored config's data directory is missing here.
    data.DataError: the data cannot be read.
  """
  start = time.time()
  workdir = Path(workdir)
  if config is None:
    config = workdir_lib.check_evaluable(workdir, step)
  validation.check_data_dir(config)
  ctx = _restore(workdir, config, step)
  metrics = {'step': ctx.step, 'dataset': config.dataset, 'num_test_examples': len(ctx.test_x),
             'temperature': ctx.temperature, 'binarized_test_set': bool(config.binarize)}
  logging.info('Evaluating %s step %d on %d test examples (%s).', workdir, ctx.step,
               len(ctx.test_x), config.dataset)
  # A fresh Q for the MI bound (eq 4.8) is trained on the frozen VAE first, so that one
  # pass over the test set serves the ELBO terms and both Q's bounds (same samples).
  q_vars, q_losses = _timed('Fresh Q', _fresh_q, ctx)
  stats = _timed('ELBO terms and MI bounds', _elbo_and_mi_metrics, ctx, q_vars, q_losses,
                 metrics)
  _timed('IWAE', _iwae_metrics, ctx, metrics, stats)
  _timed('Latent usage', _latent_usage_metrics, ctx, stats, metrics)
  code_index, counts = _code_metrics(ctx, stats, metrics)
  if config.dataset in datasets.FACTOR_DATASETS:
    _timed('Disentanglement scores', _disentanglement_metrics, ctx, metrics)
  if make_figures:
    metrics['figures'] = _timed('Figures', figure_data.write_figures, workdir, ctx.model,
                                ctx.vae_vars, stats, ctx.test_x, config, code_index, counts)
    if config.dataset in datasets.FACTOR_DATASETS:
      metrics['figures'] += disentanglement_eval.write_traversal_figures(
          workdir / workdir_lib.EVAL_DIR, ctx.model, ctx.vae_vars, ctx.test_x,
          traversal_range=float(config.eval.traversal_range),
          steps=int(config.eval.traversal_steps))
  metrics['eval_seconds'] = time.time() - start
  metrics = fileio.to_jsonable(metrics)
  fileio.write_json(workdir / workdir_lib.EVAL_DIR / METRICS_JSON, metrics)
  _log_summary(metrics)
  return metrics


def _restore(workdir: Path, config, step: int | None) -> EvalContext:
  test = datasets.load_config_split(config, 'test')
  train = datasets.load_config_split(config, 'train')   # dsprites: packed bits
  run = build.build_run(config, num_train_examples=len(train.images))
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    state = workdir_lib.restore_checkpoint(manager, run.abstract_state(), step)
  finally:
    workdir_lib.close(manager)
  if state is None:
    raise workdir_lib.WorkdirError(f'{workdir}: no checkpoint to evaluate')
  restored_step = int(state.step)
  keys = common.eval_keys(int(config.seed))
  model = common.local_model(run.model)
  test_x = (preprocess.binarize_uint8(test.images, keys['binarize']) if config.binarize
            else preprocess.scale_images(test.images, model.pixel_range))
  return EvalContext(
      workdir=workdir, config=config, model=model,
      vae_vars={'params': state.vae_params, **state.vae_state},
      training_q_vars={'params': state.q_params, **state.q_state},
      temperature=float(run.step_statics.temperature(restored_step)), keys=keys,
      train_images=train.images, train_labels=train.labels, test_x=test_x,
      test_labels=test.labels, step=restored_step)


def _timed(what: str, fn, *args):
  t0 = time.time()
  out = fn(*args)
  logging.info('%s: %.1fs', what, time.time() - t0)
  return out


def _fresh_q(ctx: EvalContext):
  if not ctx.model.has_mi_targets:
    return {}, None
  e = ctx.config.eval
  fresh_q, q_losses = mi_bound.train_fresh_q(
      ctx.model, ctx.vae_vars, ctx.train_images, steps=int(e.q_train_steps),
      batch_size=int(e.q_batch_size), learning_rate=float(e.q_learning_rate),
      key=ctx.keys['q_train'], temperature=ctx.temperature, binarize=bool(ctx.config.binarize))
  return {'fresh': fresh_q, 'training': ctx.training_q_vars}, q_losses


def _elbo_and_mi_metrics(ctx: EvalContext, q_vars: dict, q_losses, metrics: dict) -> dict:
  """ELBO terms and log Q of both Qs on the test set; returns the per-example statistics."""
  model, e = ctx.model, ctx.config.eval
  stats = likelihood.vae_statistics(model, ctx.vae_vars, ctx.test_x, key=ctx.keys['elbo'],
                                    temperature=ctx.temperature, batch_size=int(e.batch_size),
                                    q_vars=q_vars)
  metrics.update(elbo=np.mean(stats['elbo']), elbo_se=mi_bound.standard_error(stats['elbo']),
                 reconstruction=np.mean(stats['reconstruction']),
                 kl={g: np.mean(v) for g, v in stats['kl'].items()},
                 kl_total=np.mean(sum(stats['kl'].values())))
  if 'elbo_relaxed' in stats:
    gap = stats['elbo_relaxed'] - stats['elbo']
    metrics.update(elbo_relaxed=np.mean(stats['elbo_relaxed']),
                   reconstruction_relaxed=np.mean(stats['reconstruction_relaxed']),
                   elbo_relaxed_minus_hard=np.mean(gap),
                   elbo_relaxed_minus_hard_se=mi_bound.standard_error(gap),
                   elbo_codes_note=(
                       'elbo: the discrete model (hard one-hot codes, exact categorical '
                       'draws); elbo_relaxed: Gumbel-softmax codes at the temperature, as '
                       'the training log\'s elbo_relaxed (same noise); not a bound on the '
                       'discrete model'))
  if model.likelihood == 'mse':
    metrics['elbo_note'] = ("likelihood 'mse': reconstruction is -mean squared error per "
                            'pixel (the authors\' loss), so elbo is not a bound on log p(x)')
  if not model.has_mi_targets:
    metrics.update(mi_bound=None, mi_bound_entropy_kind='none', mi_bound_training_q=None,
                   mi_bound_note='no MI targets (mi.gaussian_indices and '
                                 'mi.categorical_indices are empty)')
    return stats
  bounds = mi_bound.mi_bounds_from_statistics(model, stats)
  metrics.update(mi_bound=bounds['fresh'], mi_bound_se=bounds['fresh/se'],
                 mi_bound_entropy_kind=bounds['entropy_kind'],
                 mi_bound_entropy=bounds['entropy'], mi_bound_entropy_se=bounds['entropy_se'],
                 mi_bound_log_q=bounds['fresh/log_q'],
                 mi_bound_training_q=bounds['training'],
                 mi_bound_training_q_se=bounds['training/se'],
                 mi_bound_q_train_steps=int(e.q_train_steps),
                 mi_bound_q_loss_first=q_losses[0], mi_bound_q_loss_last=q_losses[-1],
                 mi_bound_note=mi_bound.MI_BOUND_NOTE)
  if model.mi_gaussian_indices:
    # The thesis's objective (prior entropy): reported for comparison, not a bound.
    metrics.update(
        mi_objective_prior_entropy=bounds['fresh/objective_prior_entropy'],
        mi_objective_prior_entropy_training_q=bounds['training/objective_prior_entropy'],
        mi_objective_prior_entropy_h=bounds['entropy_prior_objective'],
        mi_objective_prior_entropy_note=(
            "E log Q + the prior's entropy of the targeted Gaussian dims (the thesis's "
            'objective, config mi.gaussian_entropy=gaussian_prior): NOT a lower bound on '
            'the MI, since the aggregate posterior of those dims is not the prior'))
  return stats


def _iwae_metrics(ctx: EvalContext, metrics: dict, stats: dict) -> None:
  model, e = ctx.model, ctx.config.eval
  metrics['iwae_samples'] = int(e.iwae_samples)
  if model.likelihood == 'mse':
    metrics['iwae_log_likelihood'] = None
    metrics['iwae_note'] = ("likelihood 'mse' is not a normalised density: no "
                            'log-likelihood estimate')
    return
  iwae = likelihood.iwae_log_likelihood(
      model, ctx.vae_vars, ctx.test_x, num_samples=int(e.iwae_samples), chunk=int(e.iwae_chunk),
      key=ctx.keys['iwae'],
      batch_size=likelihood.iwae_batch_size(int(e.iwae_chunk), int(e.batch_size)))
  metrics['iwae_log_likelihood'] = np.mean(iwae)
  metrics['iwae_log_likelihood_se'] = mi_bound.standard_error(iwae)
  # Paired over examples: the IWAE must be >= the ELBO (same discrete model) up to this.
  metrics['iwae_minus_elbo_se'] = mi_bound.standard_error(
      np.asarray(iwae, np.float64) - stats['elbo'])
  if model.likelihood == 'bernoulli' and not ctx.config.binarize:
    metrics['iwae_note'] = ('Bernoulli likelihood of grey-level pixels (test set not '
                            'binarised): comparable between runs of this code, not with '
                            'binarised-MNIST log-likelihoods in papers')


def _latent_usage_metrics(ctx: EvalContext, stats: dict, metrics: dict) -> None:
  """Gaussian dims: active units and influence on x'."""
  model = ctx.model
  if not model.latent.gaussian_dims:
    metrics.update(active_units=0, active_units_threshold=latent_usage.ACTIVE_UNIT_THRESHOLD,
                   active_units_variances=[])
    return
  count, variances = latent_usage.active_units(stats['mean'])
  metrics.update(active_units=count, active_units_threshold=latent_usage.ACTIVE_UNIT_THRESHOLD,
                 active_units_variances=variances)
  influence = latent_usage.latent_influence(model, ctx.vae_vars, stats['mean'], stats['logits'])
  mi_dims = list(model.mi_gaussian_indices)
  others = [d for d in range(len(influence)) if d not in mi_dims]
  metrics['latent_influence'] = {
      'delta': latent_usage.INFLUENCE_DELTA,
      'mi_dims': {str(d): influence[d] for d in mi_dims},
      'mi_dims_mean': np.mean(influence[mi_dims]) if mi_dims else None,
      'other_dims_mean': np.mean(influence[others]) if others else None,
      'per_dim': influence,
  }


def _code_metrics(ctx: EvalContext, stats: dict, metrics: dict):
  """The categorical code as a classifier; returns (code index, label-code counts)."""
  model = ctx.model
  if not model.latent.categorical_sizes:
    return None, None
  code_index = model.mi_categorical_indices[0] if model.mi_categorical_indices else 0
  k = model.latent.categorical_sizes[code_index]
  logits = stats['logits'][code_index]
  codes = np.argmax(logits, axis=-1).astype(np.int32)
  labels = np.asarray(ctx.test_labels, np.int32)
  counts = clustering.count_matrix(labels, codes, num_labels=data.NUM_CLASSES, num_codes=k)
  metrics.update(
      categorical_code_index=code_index,
      mi_exact_categorical=float(jax.jit(losses.exact_categorical_mutual_information)(
          logits=jnp.asarray(logits))),
      mi_exact_categorical_se=mi_bound.standard_error(jax.jit(
          losses.exact_categorical_mutual_information, static_argnames='per_example')(
              logits=jnp.asarray(logits), per_example=True)),
      kl_categorical=np.mean(stats['kl'][f'categorical_{code_index}']),
      accuracy_hungarian=clustering.accuracy_hungarian(labels, codes),
      accuracy_majority=clustering.accuracy_majority(labels, codes),
      nmi=clustering.normalized_mutual_information(labels, codes),
      ari=clustering.adjusted_rand_index(labels, codes),
      code_usage=np.bincount(codes, minlength=k),
      label_code_counts=counts)
  metrics.update(_train_code_metrics(ctx, code_index))
  fileio.atomic_save_npz(ctx.workdir / workdir_lib.EVAL_DIR / ASSIGNMENTS_NPZ, label=labels,
                         code=codes)
  return code_index, counts


def _train_code_metrics(ctx: EvalContext, code_index: int) -> dict:
  """The thesis's protocol on the training split: many-to-one map fitted and scored on
  all training images (``classifier.accuracy_majority_train``)."""
  codes = classifier.code_assignments(
      ctx.model, ctx.vae_vars,
      classifier.train_inputs(ctx.config, ctx.train_images, ctx.keys['binarize']),
      code_index=code_index, batch_size=int(ctx.config.eval.batch_size))
  return {'accuracy_majority_train': classifier.accuracy_majority_train(ctx.train_labels, codes),
          'num_train_examples_classified': len(codes)}


def _disentanglement_metrics(ctx: EvalContext, metrics: dict) -> None:
  """The six scores of the encoder mean over the whole factor grid (disentanglement_eval)."""
  config = ctx.config
  packed = dsprites.load_or_build(datasets.cache_dir(config.data_dir, config.data_cache_dir))
  metrics['disentanglement'] = disentanglement_eval.disentanglement_scores(
      ctx.model, ctx.vae_vars, packed, config.eval.disentanglement, seed=int(config.seed))
  logging.info('disentanglement: %s', '  '.join(
      f'{k} {v:.3f}' for k, v in metrics['disentanglement'].items() if isinstance(v, float)))


def _log_summary(metrics: dict) -> None:
  def fmt(key):
    value = metrics.get(key)
    return 'n/a' if value is None else f'{value:.3f}'
  logging.info('step %d: elbo %s  iwae(k=%d) %s  kl %s  active units %s  mi_bound %s '
               '(training Q %s)', metrics['step'], fmt('elbo'), metrics['iwae_samples'],
               fmt('iwae_log_likelihood'), fmt('kl_total'), metrics.get('active_units'),
               fmt('mi_bound'), fmt('mi_bound_training_q'))
  if 'accuracy_hungarian' in metrics:
    logging.info('code %d: acc(hungarian) %s  acc(majority) %s  acc(majority, train: the '
                 "thesis's protocol) %s  nmi %s  ari %s  exact I(x;c) %s",
                 metrics['categorical_code_index'], fmt('accuracy_hungarian'),
                 fmt('accuracy_majority'), fmt('accuracy_majority_train'), fmt('nmi'), fmt('ari'), fmt('mi_exact_categorical'))
