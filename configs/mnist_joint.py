"""MNIST, 16-d Gaussian + one 10-way categorical latent, MI on the code (section 4.3.2).

  python train.py --config=configs/mnist_joint.py --workdir=runs/mnist_joint
  python train.py --config=configs/mnist_joint.py --config.mi_weight=0 --workdir=runs/mnist_joint_elbo
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.joint_config('mnist')
  return config_lib.variant(config, variant)
