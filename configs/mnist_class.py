"""MNIST joint latent (16 Gaussian + one 10-way code, MI weight 10) with invariance
terms that push the code towards the digit class (issue 12): consistency of q(c|x)
under random affine / stroke-thickness augmentation (weight 10) and VAT (weight 1,
radius 1.2); 30 epochs at batch 256. Results: docs/results_class.md.

  python train.py --config=configs/mnist_class.py --workdir=runs/mnist_class
  python eval.py --workdir=runs/mnist_class
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.class_config('mnist', max_rotation=15.0, max_shear=10.0, dilate_prob=0.25)
  return config_lib.variant(config, variant)
