"""How often an image's nearest training neighbours share its label, in the neighbour
term's feature space (cosine similarity of the pixels; ``consistency.nearest_neighbours``,
the table training computes once per run).

  python benchmarks/neighbour_agreement.py --dataset=fashion_mnist

Prints, for k in (1, 5, 10, 20), the fraction of (image, one of its k nearest) pairs
with the same label over the whole training split, and the seconds the table took.
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
  args = parser.parse_args()
  split = sources.load_split(args.dataset, 'train', data_dir=args.data_dir,
                             limit=args.limit or None)
  labels = np.asarray(split.labels)
  start = time.time()
  table = np.asarray(jax.jit(lambda x: consistency.nearest_neighbours(x, k=20))(
      np.asarray(split.images, np.float32)))
  seconds = time.time() - start
  same = labels[table] == labels[:, None]
  print(f'{args.dataset}: {len(labels)} training images, table of 20 neighbours in '
        f'{seconds:.0f} s')
  for k in (1, 5, 10, 20):
    print(f'  k={k:2d}: {100 * same[:, :k].mean():.1f}% of neighbours share the label')


if __name__ == '__main__':
  main()
