"""MNIST, 32-d Gaussian latent, MI on two dims (thesis section 4.3.1); the main job.

  python train.py --config=configs/mnist_gauss.py --workdir=runs/mnist_gauss
  python train.py --config=configs/mnist_gauss.py:smoke --workdir=/tmp/smoke   # tiny

Reaches ELBO -102.73, IWAE -98.08 and an MI bound of 4.71 nats on the MNIST test set
(`python eval.py --workdir=runs/mnist_gauss`, its default settings; deterministic on
CPU). Measured from a fresh clone on 2026-12-03, on 2 CPU cores that were also running
other jobs: 181 s for the first command above and 183 s for eval.py. The same model
trained 5 epochs at lambda 0 to 10 (lambda = 1: MI bound 3.20, ELBO -115.46):
docs/results.md, "Gaussian latent, MNIST" (34.4 min summed over its 9 runs).
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
