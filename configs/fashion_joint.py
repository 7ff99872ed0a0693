"""Fashion-MNIST, 16-d Gaussian + one 10-way categorical latent, MI on the code (section 4.3.2).

  python train.py --config=configs/fashion_joint.py --workdir=runs/fashion_joint
  python train.py --config=configs/fashion_joint.py --config.mi_weight=0 --workdir=runs/fashion_joint_elbo
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.joint_config('fashion_mnist')
  return config_lib.variant(config, variant)
