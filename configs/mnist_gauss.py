"""MNIST, 32-d Gaussian latent, MI on two dims (thesis section 4.3.1).

  python train.py --config=configs/mnist_gauss.py --workdir=runs/mnist_gauss
  python train.py --config=configs/mnist_gauss.py:smoke --workdir=/tmp/smoke   # tiny
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.get_base_config()
  config.dataset = 'mnist'
  config.latent.gaussian_dims = 32
  config.latent.categorical_sizes = ()
  config.mi.gaussian_indices = (0, 1)
  config.mi_weight = 1.0   # the lambda with the largest influence in docs/results.md
  config.num_train_steps = 4680   # 20 epochs at batch 256
  return config_lib.variant(config, variant)
