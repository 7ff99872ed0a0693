"""Fashion-MNIST class code with what clothing clusterers use: SCAN's neighbour
consistency (each image's code agrees with one of its 10 nearest training images,
cosine similarity of the pixels, weight 10; the table is computed once per run) and
consistency under random resized crops (area 0.4-1, aspect 3/4-4/3) and left-right
flips, in place of the digit warps; plus configs/mnist_class_warmup.py's code training
(information term, aggregate KL, generative gradient into the code only after 5 epochs)
and VAT. 10 epochs (2340 steps) at batch 256.

  python train.py --config=configs/fashion_class_neighbours.py --workdir=runs/fashion_neighbours
  python eval.py --workdir=runs/fashion_neighbours

Tuning (seed 100, docs/class_tuning.md): 58.9% test accuracy (Hungarian), ELBO -241.1,
against 60.0% without the neighbour term and the crops. 10 epochs trained in 108 s on 2
CPU cores (the table of neighbours included; the run's log). Held-out seeds 10-14
(`python -m vmivae_jax.experiments.reproduce --suite=class --only=class_fashion_neighbours
--sweep_variants`, one 10-member sweep with the lambda = 0 twin, on one H200): 55.6 ± 2.9%,
9.4 points short of the 65% target; lambda = 0: 47.7 ± 5.4% (docs/results_class.md).
"""

from vmivae_jax.config import config_lib

EPOCH_STEPS = 234   # 60,000 examples at batch 256


def get_config(variant: str = ''):
  config = config_lib.class_config('fashion_mnist', max_rotation=0.0, max_shear=0.0,
                                   dilate_prob=0.0)
  config = config_lib.classifier_code(config, warmup_steps=5 * EPOCH_STEPS)
  config.invariance.update(neighbour_weight=10.0, neighbour_count=10)
  config.invariance.augment.update(max_scale=0.0, max_translation=0.0, flip_prob=0.5,
                                   crop_min_area=0.4, crop_max_aspect=1 / 3)
  config.num_train_steps = 10 * EPOCH_STEPS
  config.checkpoint_every_steps = 10 * EPOCH_STEPS
  return config_lib.variant(config, variant)
