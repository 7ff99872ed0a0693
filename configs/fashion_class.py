"""Fashion-MNIST joint latent (16 Gaussian + one 10-way code, MI weight 10) with
invariance terms that push the code towards the class (the class-code recipe):
consistency under a milder augmentation than MNIST's (rotation 10, shear 5, no
stroke-thickness change; weight 10) and VAT (weight 1, radius 1.2); 30 epochs at batch
256. Results: docs/results_class.md.

  python train.py --config=configs/fashion_class.py --workdir=runs/fashion_class
  python eval.py --workdir=runs/fashion_class

Reaches 48.6 +- 5.8% test accuracy (Hungarian), ELBO -237.51, IWAE -234.71 over 5
held-out seeds, eval with 50 IWAE samples and 1000 Q steps (lambda = 0: 33.0 +- 3.6%,
4 seeds), below the plain MI model's 53.6% (fashion_joint.py, 10 epochs):
docs/results_class.md, "The code as a classifier, Fashion-MNIST", with its commands.
Training and evaluation time: not measured on this machine.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.class_config('fashion_mnist', max_rotation=10.0, max_shear=5.0,
                                   dilate_prob=0.0)
  return config_lib.variant(config, variant)
