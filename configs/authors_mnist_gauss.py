"""The authors' architecture and hyper-parameters, MNIST, Gaussian latent (section 4.3.1).

  python train.py --config=configs/authors_mnist_gauss.py --workdir=runs/authors_mnist_gauss

150k iterations as in their code; on 2 CPU cores shorten with --config.num_train_steps.
What it reaches and how long it takes: not measured on this machine.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.authors_config('mnist', 'gauss')
  return config_lib.variant(config, variant)
