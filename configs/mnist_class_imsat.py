"""The class-code recipe (configs/mnist_class.py) with the code trained like IMSAT's
classifier inside the VAE: no reconstruction or MI-bound gradient reaches the code's
logits through its sample; the code is trained by the invariance terms (consistency 10,
VAT 1), the encoder-side information term (4 H(qbar(c)) - E H(q(c|x))) and the
aggregate KL(qbar(c) || U) in place of the per-example KL. The decoder and Q still read
the code and the VMI term still trains the decoder. 30 epochs at batch 256.

  python train.py --config=configs/mnist_class_imsat.py --workdir=runs/mnist_class_imsat
  python eval.py --workdir=runs/mnist_class_imsat

Held-out results (seeds 0-4), with their commands: docs/results_class.md, "The code
trained like a classifier, MNIST". Tuning (seed 100, 10 epochs, not a result;
docs/class_tuning.md): 97.0% test accuracy (Hungarian), ELBO -104.3; its 2340 steps
took 2.5 minutes on 2 CPU cores shared with other jobs (the training log's timestamps).
"""

from vmivae_jax.config import config_lib


def get_config(variant: str = ''):
  config = config_lib.class_config('mnist', max_rotation=15.0, max_shear=10.0, dilate_prob=0.25)
  return config_lib.variant(config_lib.classifier_code(config), variant)
