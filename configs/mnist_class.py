"""MNIST joint latent (16 Gaussian + one 10-way code, MI weight 10) with invariance
terms that push the code towards the digit class (issue 12): consistency of q(c|x)
under random affine / stroke-thickness augmentation (weight 10) and VAT (weight 1,
radius 1.2); 30 epochs at batch 256. Results: docs/results.md.

  python train.py --config=configs/mnist_class.py --workdir=runs/mnist_class
  python eval.py --workdir=runs/mnist_class
"""

from vmivae_jax import config_lib


def get_config(variant: str = ''):
  config = config_lib.joint_config('mnist')
  config.mi_weight = 10.0
  config.invariance.update(consistency_weight=10.0, vat_weight=1.0, vat_epsilon=1.2)
  config.invariance.augment.update(
      max_rotation=15.0, max_scale=0.1, max_aspect=0.0, max_shear=10.0, max_translation=2.0,
      elastic_alpha=0.0, dilate_prob=0.25, erode_prob=0.0, thickness_footprint='cross')
  config.num_train_steps = 7020          # 30 epochs at batch 256
  config.checkpoint_every_steps = 2340   # every 10 epochs
  return config_lib.variant(config, variant)
