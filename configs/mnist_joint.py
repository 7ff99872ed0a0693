"""MNIST, 16-d Gaussian + one 10-way categorical latent, MI on the code (section 4.3.2).

  python train.py --config=configs/mnist_joint.py --workdir=runs/mnist_joint
  python train.py --config=configs/mnist_joint.py --config.mi_weight=0 --workdir=runs/mnist_joint_elbo

Trained 10 epochs (the thesis suite's `--config.num_train_steps=2340`, eval with 50
IWAE samples and 1000 Q steps) it reaches 54.3 +- 2.4% test accuracy (Hungarian),
exact I(x; c) 2.23 nats, ELBO -105.10, IWAE -100.46 over 5 seeds (lambda = 0: 17.4
+- 0.6%): docs/results.md, "Joint latent, MNIST", with its commands; 32.4 min of
training + evaluation summed over that table's 20 runs on 2 CPU cores, two at a time
(each run trained in 66-74 s on an idle machine: benchmarks/README.md, "The thesis
suite through sweeps"). The default 20 epochs with eval.py's default settings: not
measured on this machine. At the thesis's budget (72,800 steps): 58.2% test accuracy,
docs/results_class.md, "The thesis's claim at its budget" (about 1.3 h of training
per run: docs/reproducing.md).
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.joint_config('mnist')
  return config_lib.variant(config, variant)
