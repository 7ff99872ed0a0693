"""The authors' architecture and hyper-parameters, fashion_mnist, joint latent (section 4.3.2).

  python train.py --config=configs/authors_fashion_joint.py --workdir=runs/authors_fashion_joint

150k iterations as in their code; on 2 CPU cores shorten with --config.num_train_steps.
See config_lib.authors_config for what is and is not known of their setting.
What it reaches and how long it takes: not measured on this machine.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.authors_config('fashion_mnist', 'joint')
  return config_lib.variant(config, variant)
