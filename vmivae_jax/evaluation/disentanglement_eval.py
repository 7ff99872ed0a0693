"""The six disentanglement scores of a run trained on dSprites, and its traversal figure.

Representation: the encoder's posterior mean of the Gaussian dims (eval mode), as
disentanglement_lib's 'mean' representation. Observations: images of the whole factor
grid, each factor drawn uniformly, read from the packed cache (``dsprites.images``),
so the scores sample the full data set whatever ``train_limit`` was. Sample sizes:
``config.eval.disentanglement`` (defaults: disentanglement_lib's; the smoke variant's
are tiny): MIG and modularity on ``num_train`` points; SAP and DCI on ``num_train`` /
``num_test``; BetaVAE and FactorVAE on ``num_train`` / ``num_test`` points of
``batch_size`` images (plus ``num_variance_estimate`` for FactorVAE's variances).
Draws come from one numpy Generator seeded from ``config.seed``: the same checkpoint
gives the same scores.
"""

import functools
import time
from pathlib import Path

import jax
import numpy as np

from vmivae_jax.data import dsprites
from vmivae_jax.data import preprocess
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import disentanglement_dci
from vmivae_jax.evaluation import disentanglement_interventions as interventions
from vmivae_jax.evaluation import disentanglement_metrics as metrics_lib
from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib

_SEED_STREAM = 0xD15E   # numpy seed = config.seed + this: apart from training's streams
ENCODE_BATCH = 512      # images per encoder call (fixed: one compilation)
TRAVERSAL_EXAMPLES = 3  # examples of the all-dims traversal figure


def ground_truth(packed: np.ndarray) -> metrics_lib.GroundTruth:
  """The dSprites grid as a sampler: uniform factors -> uint8 {0, 255} [n, 64, 64, 1]."""
  def observations(factors):
    return (dsprites.images(packed, dsprites.index_of(factors)) * np.uint8(255))[..., None]
  return metrics_lib.GroundTruth(factor_sizes=dsprites.factor_sizes,
                                 sample_factors=dsprites.sample_factors,
                                 observations=observations,
                                 factor_names=dsprites.factor_names)


@functools.partial(jax.jit, static_argnames=('model',))
def _encoder_mean(model: model_lib.VMIModel, vae_vars: dict, images):
  x = preprocess.scale_images(images, model.pixel_range)
  return model.vae.apply(vae_vars, x, train=False, method=networks.VAE.encode).mean


def mean_representation(model: model_lib.VMIModel, vae_vars: dict):
  """``representation_fn``: uint8 observations [n, 64, 64, 1] -> [n, D] encoder means."""
  model = common.local_model(model)
  if not model.latent.gaussian_dims:
    raise ValueError('the disentanglement scores read the Gaussian dims\' means and the '
                     'model has none (latent.gaussian_dims=0)')

  def representation_fn(images):
    n = len(images)
    pad = -n % ENCODE_BATCH   # every call the same shape: one compilation
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    means = [_encoder_mean(model, vae_vars, images[i:i + ENCODE_BATCH])
             for i in range(0, len(images), ENCODE_BATCH)]
    return np.concatenate(jax.device_get(means))[:n]
  return representation_fn


def disentanglement_scores(model: model_lib.VMIModel, vae_vars: dict, packed: np.ndarray,
                           settings, *, seed: int) -> dict:
  """MIG, SAP, modularity, DCI, BetaVAE and FactorVAE scores of the encoder mean.

  Args:
    model, vae_vars: the trained VAE.
    packed: dSprites' packed cache (``dsprites.load_or_build``).
    settings: ``config.eval.disentanglement`` (num_train, num_test, batch_size,
      num_variance_estimate).
    seed: the run's seed.

  Returns:
    A dict of floats (metric names as disentanglement_lib's results), the sample sizes
    and each score's seconds.
  """
  gt, fn = ground_truth(packed), mean_representation(model, vae_vars)
  rng = np.random.default_rng(int(seed) + _SEED_STREAM)
  n_train, n_test = int(settings.num_train), int(settings.num_test)
  out, seconds = {}, {}

  def timed(name, compute):
    t0 = time.time()
    out.update(compute())
    seconds[name] = time.time() - t0

  sample = functools.partial(metrics_lib.sample_representation, gt, fn, rng=rng,
                             batch_size=ENCODE_BATCH)
  codes, factors = sample(n_train)
  test_codes, test_factors = sample(n_test)
  names = dsprites.factor_names
  timed('mig', lambda: {'mig': metrics_lib.mutual_info_gap(codes, factors, factor_names=names)})
  timed('modularity', lambda: {
      'modularity': metrics_lib.modularity(codes, factors, factor_names=names)})
  timed('sap', lambda: {'sap': metrics_lib.sap_score(codes, factors, test_codes, test_factors,
                                                     factor_names=names)})
  timed('dci', lambda: {f'dci_{k}': v for k, v in disentanglement_dci.dci(
      codes, factors, test_codes, test_factors).items()})
  kwargs = dict(batch_size=int(settings.batch_size), num_train=n_train, num_eval=n_test)
  timed('beta_vae', lambda: {f'beta_vae_{k}': v for k, v in interventions.beta_vae_score(
      gt, fn, rng, **kwargs).items()})
  timed('factor_vae', lambda: {f'factor_vae_{k}': v for k, v in interventions.factor_vae_score(
      gt, fn, rng, num_variance_estimate=int(settings.num_variance_estimate),
      **kwargs).items()})
  out.update(num_train=n_train, num_test=n_test, batch_size=int(settings.batch_size),
             num_variance_estimate=int(settings.num_variance_estimate),
             representation='encoder mean of the Gaussian dims', seconds=seconds)
  return out


def traversal_arrays(model: model_lib.VMIModel, vae_vars: dict, test_images: np.ndarray, *,
                     traversal_range: float, steps: int,
                     num_examples: int = TRAVERSAL_EXAMPLES) -> tuple[np.ndarray, np.ndarray]:
  """Every Gaussian dim varied over [-range, range] from each of the first examples'
  posterior means: ([examples, dims, steps, H, W, C] decoded means in [0, 1], values)."""
  model = common.local_model(model)
  images = np.asarray(test_images[:num_examples])
  means = np.asarray(_encoder_mean(model, vae_vars, images), np.float32)   # [n, D]
  n, d = means.shape
  values = np.linspace(-traversal_range, traversal_range, steps).astype(np.float32)
  codes = np.repeat(means[:, None, None, :], d, axis=1).repeat(steps, axis=2)
  codes[:, np.arange(d), :, np.arange(d)] = values      # [d, n, steps] after indexing
  decoded = common.decode_mean(model, vae_vars, codes.reshape(-1, d))
  decoded = preprocess.to_unit_range(np.asarray(decoded), model.pixel_range)
  return decoded.reshape((n, d, steps) + model.image_shape), values


def write_traversal_figures(out_dir: Path, model, vae_vars, test_images, *,
                            traversal_range: float, steps: int) -> list[str]:
  """traversal_all_dims_<i>.png: one grid per example, a row per Gaussian dim."""
  # pylint: disable=g-import-not-at-top  (matplotlib only when figures are wanted)
  from vmivae_jax.evaluation import figures
  arrays, values = traversal_arrays(model, vae_vars, test_images,
                                    traversal_range=traversal_range, steps=steps)
  written = []
  for i, grid in enumerate(arrays):
    written.append(figures.traversal_grid(
        grid, row_values=range(grid.shape[0]), col_values=values, row_label='Gaussian dim',
        col_label='value', path=out_dir / f'traversal_all_dims_{i}.png',
        title=f'Each Gaussian dim over [{-traversal_range:g}, {traversal_range:g}] from the '
              f'posterior mean of test example {i}'))
  return [p.name for p in written]
