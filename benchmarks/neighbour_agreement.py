"""How often an image's nearest training neighbours share its label, in the neighbour
term's feature space (cosine similarity of the pixels; ``consistency.nearest_neighbours``,
the table training computes once per run), or in a trained run's learned one.

  python benchmarks/neighbour_agreement.py --dataset=fashion_mnist
  python benchmarks/neighbour_agreement.py --workdir=runs/fashion   # its encoder's means

Prints, for k in (1, 5, 10, 20), the fraction of (image, one of its k nearest) pairs
with the same label over the whole training split, and the seconds the table took.
With --workdir the features are the run's posterior means of its Gaussian dims (eval
mode, latest checkpoint), on its own dataset: what neighbours in a learned feature space
would give instead of pixels.
"""

import argparse
import time

import jax
import numpy as np

from vmivae_jax import consistency
from vmivae_jax.data import sources


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('--dataset', default='fashion_mnist', choices=('mnist', 'fashion_mnist'))
  parser.add_argument('--data_dir', default='', help="'' = $VMIVAE_DATA_DIR")
  parser.add_argument('--limit', type=int, default=0, help='first N training images (0 = all)')
  parser.add_argument('--workdir', default='',
                      help="a train.py run: its encoder's Gaussian means as the features")
  args = parser.parse_args()
  if args.workdir:
    name, features, labels = _encoder_features(args.workdir, args.limit)
  else:
    split = sources.load_split(args.dataset, 'train', data_dir=args.data_dir,
                               limit=args.limit or None)
    name, features, labels = args.dataset, np.asarray(split.images, np.float32), split.labels
  labels = np.asarray(labels)
  start = time.time()
  table = np.asarray(jax.jit(lambda x: consistency.nearest_neighbours(x, k=20))(features))
  seconds = time.time() - start
  same = labels[table] == labels[:, None]
  print(f'{name}: {len(labels)} training images, table of 20 neighbours in '
        f'{seconds:.0f} s')
  for k in (1, 5, 10, 20):
    print(f'  k={k:2d}: {100 * same[:, :k].mean():.1f}% of neighbours share the label')


def _encoder_features(workdir: str, limit: int):
  """(description, [N, D] posterior means of the run's Gaussian dims, labels)."""
  # pylint: disable=g-import-not-at-top  (the model stack only when a run is read)
  from pathlib import Path
  from vmivae_jax.data import preprocess
  from vmivae_jax.evaluation import common
  from vmivae_jax.model import networks
  from vmivae_jax.rundir import workdir as workdir_lib
  from vmivae_jax.train import build
  workdir = Path(workdir)
  config = workdir_lib.check_evaluable(workdir)
  split = sources.load_split(config.dataset, 'train', data_dir=config.data_dir,
                             limit=limit or None)
  run = build.build_run(config, num_train_examples=len(split.images))
  manager = workdir_lib.checkpoint_manager(workdir, read_only=True)
  try:
    state = workdir_lib.restore_checkpoint(manager, run.abstract_state(), None)
  finally:
    workdir_lib.close(manager)
  model = common.local_model(run.model)
  variables = {'params': state.vae_params, **state.vae_state}
  encode = jax.jit(lambda x: model.vae.apply(
      variables, preprocess.scale_images(x, model.pixel_range), train=False,
      method=networks.VAE.encode).mean)
  means = np.concatenate([np.asarray(encode(split.images[i:i + 1000]))
                          for i in range(0, len(split.images), 1000)])
  return (f'{config.dataset}, encoder means of {workdir} (step {int(state.step)}, '
          f'{means.shape[1]} dims)', means, split.labels)


if __name__ == '__main__':
  main()
