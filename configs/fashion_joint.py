"""Fashion-MNIST, 16-d Gaussian + one 10-way categorical latent, MI on the code (section 4.3.2).

  python train.py --config=configs/fashion_joint.py --workdir=runs/fashion_joint
  python train.py --config=configs/fashion_joint.py --config.mi_weight=0 --workdir=runs/fashion_joint_elbo

Trained 10 epochs (the thesis suite's `--config.num_train_steps=2340`, eval with 50
IWAE samples and 1000 Q steps) it reaches 53.6 +- 1.8% test accuracy (Hungarian),
ELBO -241.80, IWAE -238.82 over 5 seeds (lambda = 0: 19.5 +- 1.5%): docs/results.md,
"Joint latent, Fashion-MNIST", with its commands; 32.6 min of training + evaluation
summed over that table's 20 runs on 2 CPU cores, two at a time. Trained 30 epochs:
53.1 +- 0.6% (3 seeds; docs/results.md, "Ablation: longer training (Fashion-MNIST)",
21.7 min summed over its 6 runs). The default 20 epochs with eval.py's default
settings: not measured on this machine.
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.joint_config('fashion_mnist')
  return config_lib.variant(config, variant)
