"""The arrays behind the thesis figures (decoded traversals and categories, in [0, 1]),
and their PNGs in WORKDIR/eval (plotting itself is figures.py)."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from vmivae_jax import model as model_lib
from vmivae_jax import networks
from vmivae_jax import preprocess
from vmivae_jax import workdir as workdir_lib
from vmivae_jax.evaluation import common
from vmivae_jax.evaluation import mi_bound


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


def figure_arrays(model: model_lib.VMIModel, vae_vars: dict, stats: dict, test_images_float,
                  *, code_index: int | None, num_examples: int, traversal_range: float,
                  traversal_steps: int) -> dict:
  """Decoded images for the traversal and category figures, in [0, 1].

  Latents not varied are at the posterior mean (Gaussian) or mode (codes).
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
  pieces = []  # (key, codes, image-grid shape): decoded together in one call
  if len(dims) == 2:
    a, b = dims
    g = np.repeat(means[:1], traversal_steps ** 2, axis=0)
    g[:, a] = np.repeat(values, traversal_steps)
    g[:, b] = np.tile(values, traversal_steps)
    pieces.append(('grid', _codes(g, [np.repeat(m[:1], len(g), axis=0) for m in modes]),
                   (traversal_steps, traversal_steps)))
    out['grid_dims'] = (a, b)
  if mi_dims:
    for d in mi_dims:
      g = np.repeat(means, traversal_steps, axis=0)                   # [n * S, D]
      g[:, d] = np.tile(values, n)
      pieces.append((('rows', d), _codes(g, [np.repeat(m, traversal_steps, axis=0)
                                              for m in modes]), (n, traversal_steps)))
    out['rows_dims'] = tuple(mi_dims)
  if code_index is not None:
    k = model.latent.categorical_sizes[code_index]
    g = np.repeat(means, k, axis=0)
    cats = [np.repeat(m, k, axis=0) for m in modes]
    cats[code_index] = np.tile(np.eye(k, dtype=np.float32), (n, 1))
    pieces.append(('categories', _codes(g, cats), (n, k)))
  if pieces:
    decoded = _decode_unit(model, vae_vars, np.concatenate([c for _, c, _ in pieces]), pr)
    start = 0
    for key, codes, shape in pieces:
      out[key] = decoded[start:start + len(codes)].reshape(shape + networks.IMAGE_SHAPE)
      start += len(codes)
  if mi_dims:
    out['rows'] = np.stack([out.pop(('rows', d)) for d in mi_dims])
  return out


def write_figures(workdir: Path, model, vae_vars, stats, test_x, config, code_index,
                   counts) -> list[str]:
  # pylint: disable=g-import-not-at-top  (matplotlib only when figures are wanted)
  from vmivae_jax import figures
  e = config.eval
  out_dir = workdir / workdir_lib.EVAL_DIR
  written = []
  arrays = figure_arrays(model, vae_vars, stats, test_x, code_index=code_index,
                         num_examples=int(e.num_figure_examples),
                         traversal_range=float(e.traversal_range),
                         traversal_steps=int(e.traversal_steps))
  values = arrays['values']
  if 'grid' in arrays:
    a, b = arrays['grid_dims']
    written.append(figures.traversal_grid(
        arrays['grid'], row_values=values, col_values=values, row_label=f'z_{a}',
        col_label=f'z_{b}', path=out_dir / 'traversal_grid.png',
        title=f'Traversal of z_{a} (rows) and z_{b} (columns), test example 0'))
  if 'rows' in arrays:
    written.append(figures.traversal_rows(
        arrays['originals'], arrays['rows'], values=values,
        dim_labels=[f'z_{d}' for d in arrays['rows_dims']],
        path=out_dir / 'traversal_rows.png'))
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
