"""The arrays behind the thesis figures (decoded traversals and categories, in [0, 1]),
and their PNGs in WORKDIR/eval (plotting itself is figures.py)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vmivae_jax.data import preprocess
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import mi_bound
from vmivae_jax.model import networks
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.rundir import workdir as workdir_lib


def _codes(gaussian: np.ndarray, categorical: list[np.ndarray]) -> np.ndarray:
  return np.concatenate([gaussian] + categorical, axis=-1).astype(np.float32)


def traversal_dims(model: model_lib.VMIModel) -> tuple[int, ...]:
  """The Gaussian dims the traversal figures vary: the MI-targeted ones (two for the
  grid, completed by the lowest other dims), else dims 0 and 1."""
  d = model.latent.gaussian_dims
  dims = list(model.mi_gaussian_indices[:2])
  for i in range(d):
    if len(dims) >= 2:
      break
    if i not in dims:
      dims.append(i)
  return tuple(dims)


def _decode_unit(model, vae_vars, codes, pixel_range):
  return preprocess.to_unit_range(np.asarray(common.decode_mean(model, vae_vars, jnp.asarray(codes))), pixel_range)


def _mixture_prior(model, vae_vars) -> tuple[np.ndarray, np.ndarray] | None:
  """(means, stds) [K, D] of the mixture prior's components p(z | c), or None (N(0, I))."""
  if model.latent.mixture_code is None:
    return None
  prior = jax.device_get(model.vae.apply(vae_vars, method=networks.VAE.prior))
  return (np.asarray(prior.means, np.float32),
          np.exp(0.5 * np.asarray(prior.logvars, np.float32)))


def _prior_sample_codes(model, mixture, key, samples: int) -> np.ndarray:
  """[K * samples, code_size] codes drawn from p(z | c) p(c'), `samples` rows per value c
  of the conditioning code (other codes uniform)."""
  means, stds = mixture
  k, d = means.shape
  m = model.latent.mixture_code
  keys = jax.random.split(key, 1 + len(model.latent.categorical_sizes))
  eps = np.asarray(jax.random.normal(keys[0], (k * samples, d)), np.float32)
  c = np.repeat(np.arange(k), samples)
  cats = []
  for i, size in enumerate(model.latent.categorical_sizes):
    draw = c if i == m else np.asarray(jax.random.randint(keys[1 + i], (k * samples,), 0, size))
    cats.append(np.eye(size, dtype=np.float32)[draw])
  return _codes(means[c] + stds[c] * eps, cats)


def figure_arrays(model: model_lib.VMIModel, vae_vars: dict, stats: dict, test_images_float,
                  *, code_index: int | None, num_examples: int, traversal_range: float,
                  traversal_steps: int, prior_key: jax.Array | None = None) -> dict:
  """Decoded images for the traversal and category figures, in [0, 1].

  Latents not varied are at the posterior mean (Gaussian) or mode (codes). With a
  mixture prior p(z | c) (``model.latent.mixture_code``) the traversal values are in
  the prior's units around the component of the example's mode code,
  z_d = mu_c[d] + v sigma_c[d]; under another category c' the Gaussian part keeps its
  standardised offset from its component, z' = mu_c' + (z - mu_c) sigma_c' / sigma_c
  (the prior's reparameterisation: the same "style" under class c'); and, given
  ``prior_key``, 'prior_samples' [K, num_examples] decodes z ~ p(z | c) for each c.
  """
  model = common.local_model(model)
  pr = model.pixel_range
  n = min(max(num_examples, 1), len(test_images_float))
  means = np.asarray(stats['mean'][:n], np.float32)
  modes = [np.eye(l.shape[-1], dtype=np.float32)[np.argmax(l[:n], -1)] for l in stats['logits']]
  values = np.linspace(-traversal_range, traversal_range, traversal_steps).astype(np.float32)
  out = {'originals': preprocess.to_unit_range(test_images_float[:n], pr), 'values': values}
  dims = traversal_dims(model)
  mi_dims = tuple(model.mi_gaussian_indices) or dims
  mixture = _mixture_prior(model, vae_vars)
  if mixture is not None:   # [n, D] the component of each example's mode code
    own = np.argmax(modes[model.latent.mixture_code], -1)
    loc, scale = mixture[0][own], mixture[1][own]
  pieces = []  # (key, codes, image-grid shape): decoded together in one call
  if len(dims) == 2:
    a, b = dims
    g = np.repeat(means[:1], traversal_steps ** 2, axis=0)
    g[:, a] = np.repeat(values, traversal_steps)
    g[:, b] = np.tile(values, traversal_steps)
    if mixture is not None:
      g[:, [a, b]] = loc[:1, [a, b]] + g[:, [a, b]] * scale[:1, [a, b]]
    pieces.append(('grid', _codes(g, [np.repeat(m[:1], len(g), axis=0) for m in modes]),
                   (traversal_steps, traversal_steps)))
    out['grid_dims'] = (a, b)
  if mi_dims:
    for d in mi_dims:
      g = np.repeat(means, traversal_steps, axis=0)                   # [n * S, D]
      g[:, d] = np.tile(values, n)
      if mixture is not None:
        g[:, d] = (np.repeat(loc[:, d], traversal_steps)
                   + g[:, d] * np.repeat(scale[:, d], traversal_steps))
      pieces.append((('rows', d), _codes(g, [np.repeat(m, traversal_steps, axis=0)
                                              for m in modes]), (n, traversal_steps)))
    out['rows_dims'] = tuple(mi_dims)
  if code_index is not None:
    k = model.latent.categorical_sizes[code_index]
    g = np.repeat(means, k, axis=0)
    if mixture is not None and code_index == model.latent.mixture_code:
      to = np.tile(np.arange(k), n)                                  # [n * K] category c'
      g = (mixture[0][to] + (g - np.repeat(loc, k, axis=0))
           * mixture[1][to] / np.repeat(scale, k, axis=0))
    cats = [np.repeat(m, k, axis=0) for m in modes]
    cats[code_index] = np.tile(np.eye(k, dtype=np.float32), (n, 1))
    pieces.append(('categories', _codes(g, cats), (n, k)))
  if mixture is not None and prior_key is not None:
    pieces.append(('prior_samples', _prior_sample_codes(model, mixture, prior_key, n),
                   (len(mixture[0]), n)))
  if pieces:
    decoded = _decode_unit(model, vae_vars, np.concatenate([c for _, c, _ in pieces]), pr)
    start = 0
    for key, codes, shape in pieces:
      out[key] = decoded[start:start + len(codes)].reshape(shape + model.image_shape)
      start += len(codes)
  if mi_dims:
    out['rows'] = np.stack([out.pop(('rows', d)) for d in mi_dims])
  return out


_PRIOR_SAMPLES_STREAM = 0x9A10   # fold_in(PRNGKey(seed), .): the prior-sample figure's draws


def write_figures(workdir: Path, model, vae_vars, stats, test_x, config, code_index,
                   counts) -> list[str]:
  # pylint: disable=g-import-not-at-top  (matplotlib only when figures are wanted)
  from vmivae_jax.evaluation import figures
  e = config.eval
  out_dir = workdir / workdir_lib.EVAL_DIR
  written = []
  mixture = model.latent.mixture_code
  arrays = figure_arrays(model, vae_vars, stats, test_x, code_index=code_index,
                         num_examples=int(e.num_figure_examples),
                         traversal_range=float(e.traversal_range),
                         traversal_steps=int(e.traversal_steps),
                         prior_key=jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                                                      _PRIOR_SAMPLES_STREAM))
  values = arrays['values']
  # With a mixture prior, traversal values are in sigma_c units around mu_c.
  unit = '' if mixture is None else f' (sd of p(z|c_{mixture}) from its mean)'
  if 'grid' in arrays:
    a, b = arrays['grid_dims']
    written.append(figures.traversal_grid(
        arrays['grid'], row_values=values, col_values=values, row_label=f'z_{a}{unit}',
        col_label=f'z_{b}{unit}', path=out_dir / 'traversal_grid.png',
        title=f'Traversal of z_{a} (rows) and z_{b} (columns), test example 0'))
  if 'rows' in arrays:
    written.append(figures.traversal_rows(
        arrays['originals'], arrays['rows'], values=values,
        dim_labels=[f'z_{d}{unit}' for d in arrays['rows_dims']],
        path=out_dir / 'traversal_rows.png'))
  if 'prior_samples' in arrays:
    k, s = arrays['prior_samples'].shape[:2]
    written.append(figures.traversal_grid(
        arrays['prior_samples'], row_values=range(k), col_values=range(1, s + 1),
        row_label=f'c_{mixture}', col_label='sample', path=out_dir / 'prior_samples.png',
        title=f'Samples z ~ p(z | c_{mixture}) decoded, one row per category'))
  if code_index is not None:
    name = f'c_{code_index}'
    written.append(figures.category_grid(
        arrays['originals'], arrays['categories'], path=out_dir / 'category_grid.png',
        code_name=name, title=f'Test examples decoded under each category of {name}'))
    probs = mi_bound.softmax(stats['logits'][code_index])
    written.append(figures.categorical_histogram(
        probs, path=out_dir / 'categorical_histogram.png',
        title=f'q({name}|x) over the test set'))
    written.append(figures.label_code_counts(
        counts, path=out_dir / 'label_code_counts.png',
        title=f'Test labels vs argmax of q({name}|x)'))
  records = workdir_lib.read_metrics(workdir)
  if records:
    kl_key = f'kl/categorical_{code_index}' if code_index is not None else 'kl/gaussian'
    mi_key = 'mi_objective_prior_entropy' if any(
        'mi_objective_prior_entropy' in r for r in records) else 'mi_bound'
    written.append(figures.training_curves(records, keys=[mi_key, kl_key],
                                           path=out_dir / 'training_curves.png',
                                           title='Training (minibatch means)'))
  return [p.name for p in written]
