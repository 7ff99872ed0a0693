"""The authors' architecture and hyper-parameters, mnist, joint latent (section 4.3.2).

  python train.py --config=configs/authors_mnist_joint.py --workdir=runs/authors_mnist_joint

150k iterations as in their code; on 2 CPU cores shorten with --config.num_train_steps.
See config_lib.authors_config for what is and is not known of their setting.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.authors_config('mnist', 'joint')
  return config_lib.variant(config, variant)
