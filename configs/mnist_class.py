"""MNIST joint latent (16 Gaussian + one 10-way code, MI weight 10) with invariance
terms that push the code towards the digit class (the class-code recipe): consistency
of q(c|x) under random affine / stroke-thickness augmentation (weight 10) and VAT
(weight 1, radius 1.2); 30 epochs at batch 256. Results: docs/results_class.md.

  python train.py --config=configs/mnist_class.py --workdir=runs/mnist_class
  python eval.py --workdir=runs/mnist_class

Reaches 78.8 +- 3.6% test accuracy (Hungarian; 79.7 +- 3.1% with the thesis's
training-set majority protocol), ELBO -99.85, IWAE -95.15 over 5 held-out seeds, eval
with 50 IWAE samples and 1000 Q steps (lambda = 0: 23.7 +- 4.8%): docs/results_class.md,
"The code as a classifier, MNIST", with its commands. Training and evaluation time:
not measured on this machine.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.class_config('mnist', max_rotation=15.0, max_shear=10.0, dilate_prob=0.25)
  return config_lib.variant(config, variant)
