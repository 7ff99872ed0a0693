"""The experiments of the results page, as data: configs, variants, seeds, budgets.

Each :class:`Experiment` names a config file and its variants (config overrides);
every variant runs for every seed, so the variants of one seed start from identical
parameters and see identical batches (the init and data keys depend on the seed only).
"""

import dataclasses
import shlex

from vmivae_jax.config import config_lib


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  title: str
  config_file: str                       # relative to the repository root
  variants: tuple[tuple[str, dict], ...]  # (variant name, config overrides)
  seeds: tuple[int, ...]
  overrides: dict = dataclasses.field(default_factory=dict)  # applied to every variant
  purpose: str = ''
  curve: bool = False  # also measure the accuracy curve over the kept checkpoints

  def variant_overrides(self, variant: str) -> dict:
    return {**self.overrides, **dict(self.variants)[variant]}


def _flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def train_command(experiment: Experiment, variant: str, seed: int, workdir: str) -> str:
  """The train.py command line equivalent to one run of the suite."""
  overrides = {'seed': seed, **experiment.variant_overrides(variant)}
  flags = ' '.join(shlex.quote(f'--config.{k}={_flag_value(v)}')
                   for k, v in sorted(overrides.items()))
  return f'python train.py --config={experiment.config_file} --workdir={workdir} {flags}'


# Budgets sized for 2 CPU cores inside one 3-hour session (see docs/results.md).
EPOCH_STEPS = 234            # 60,000 / 256
JOINT_STEPS = 10 * EPOCH_STEPS
GAUSS_STEPS = 5 * EPOCH_STEPS
AUTHORS_STEPS = 1500         # of their 150k: what 2 CPU cores allow for their conv nets
SEEDS = (0, 1, 2, 3, 4)
SMALL_CONV = {
    'model.family': 'conv', 'model.encoder_channels': (32, 64), 'model.q_channels': (32, 64),
    'model.decoder_channels': (64, 32), 'model.encoder_hidden': (256,),
    'model.q_hidden': (256,), 'model.decoder_hidden': (256,)}

# The best joint-latent recipe of our exploration (config_lib.capacity_recipe without its
# temperature anneal: the suite's runs were recorded at a fixed temperature of 1.0).
capacity_gaussian = config_lib.capacity_gaussian
JOINT_RECIPE = {'mi_weight': config_lib.CAPACITY_MI_WEIGHT, **capacity_gaussian(2.0)}
THIRTY_EPOCHS = {'num_train_steps': 3 * JOINT_STEPS, 'checkpoint_every_steps': 3 * JOINT_STEPS}


# The suites' cheap evaluation (IWAE with 50 samples, a fresh Q of 1000 steps).
CHEAP_EVAL = {'eval.iwae_samples': 50, 'eval.iwae_chunk': 50, 'eval.q_train_steps': 1000}


def thesis_suite() -> list[Experiment]:
  eval_overrides = dict(CHEAP_EVAL)
  joint_overrides = {'num_train_steps': JOINT_STEPS, 'checkpoint_every_steps': JOINT_STEPS,
                     **eval_overrides}
  # The thesis's comparison: the same model, hyper-parameters and initialisation,
  # lambda = 0 against lambda > 0 (plain ELBO, no capacity terms); then our recipe and
  # its lambda = 0 twin, to separate what MI adds from what the capacity limit adds.
  joint = lambda name, title, config, purpose: Experiment(
      name=name, title=title, config_file=config,
      variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': 10.0}),
                ('elbo_capz2', {**JOINT_RECIPE, 'mi_weight': 0.0}), ('mi_capz2', JOINT_RECIPE)),
      seeds=SEEDS, purpose=purpose, overrides=joint_overrides)
  return [
      joint('joint_mnist', 'Joint latent, MNIST (thesis 4.4.2)', 'configs/mnist_joint.py',
            '16 Gaussian dims + one 10-way code; the code as an unsupervised classifier. '
            '`elbo`/`mi`: the thesis\'s comparison (lambda = 0 vs 10); `elbo_capz2`/`mi_capz2`: '
            'the same pair with a 2-nat capacity limit on the Gaussian group (our recipe)'),
      joint('joint_fashion', 'Joint latent, Fashion-MNIST (thesis 4.4.2)',
            'configs/fashion_joint.py', 'as joint_mnist, on Fashion-MNIST'),
      Experiment(
          name='ablation_mnist', title='Ablation: what makes the code a classifier (MNIST)',
          config_file='configs/mnist_joint.py', seeds=(0, 1, 2),
          purpose=('Joint latent on MNIST, 3 seeds per variant, lambda = 10 unless the name '
                   'says otherwise: temperature annealing (1.0 -> 0.5), a linear lambda '
                   'warm-up over 1000 steps, capacity limits of 5 and 1 nats on the Gaussian '
                   'group (2 nats is joint_mnist\'s mi_capz2), the 5-nat limit without MI, '
                   'JointVAE-style capacity control of both groups without MI, and the recipe '
                   'trained 3x longer (30 epochs) with and without MI; compare with joint_mnist'),
          overrides=joint_overrides,
          variants=(
              ('mi_10_anneal', {'mi_weight': 10.0, 'temperature.anneal_rate': 3e-4}),
              ('mi_10_warmup', {'mi_weight': 10.0, 'mi_warmup_steps': 1000}),
              ('mi_10_capz5', {'mi_weight': 10.0, **capacity_gaussian(5.0)}),
              ('mi_10_capz1', {'mi_weight': 10.0, **capacity_gaussian(1.0)}),
              ('capz5_only', {'mi_weight': 0.0, **capacity_gaussian(5.0)}),
              ('jointvae', {'mi_weight': 0.0, **capacity_gaussian(5.0),
                            'capacity.categorical.gamma': 30.0,
                            'capacity.categorical.max_nats': 2.3,
                            'capacity.categorical.steps': 2000}),
              ('mi_capz2_30_epochs', {**JOINT_RECIPE, **THIRTY_EPOCHS}),
              ('capz2_only_30_epochs', {**JOINT_RECIPE, **THIRTY_EPOCHS, 'mi_weight': 0.0}),
          )),
      Experiment(
          name='ablation_fashion', title='Ablation: longer training (Fashion-MNIST)',
          config_file='configs/fashion_joint.py', seeds=(0, 1, 2),
          purpose=('Joint latent on Fashion-MNIST, 3 seeds per variant: plain MI (lambda = 10) '
                   'and the capacity recipe trained 3x longer (30 epochs); compare with '
                   'joint_fashion (10 epochs)'),
          overrides=joint_overrides,
          variants=(('mi_30_epochs', {'mi_weight': 10.0, **THIRTY_EPOCHS}),
                    ('mi_capz2_30_epochs', {**JOINT_RECIPE, **THIRTY_EPOCHS}))),
      Experiment(
          name='ablation_arch_mnist', title='Ablation: architecture (MNIST, one seed)',
          config_file='configs/mnist_joint.py', seeds=(0,),
          purpose=('The recipe (mi_capz2) with a small conv encoder, decoder and Q (k4 s2 convs '
                   'of 32 and 64 channels, dense 256) instead of the MLP 512-512; one seed: a '
                   'run costs ~10x an MLP run on 2 CPU cores'),
          overrides=joint_overrides,
          variants=(('conv_mi_capz2', {**JOINT_RECIPE, **SMALL_CONV}),)),
      Experiment(
          name='gauss_mnist', title='Gaussian latent, MNIST (thesis 4.4.1)',
          config_file='configs/mnist_gauss.py',
          variants=tuple((f'lambda_{w:g}', {'mi_weight': w})
                         for w in (0.0, 0.001, 0.005, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0)),
          seeds=(0,), purpose=('MI on 2 of 32 Gaussian dims: influence of the dims vs lambda; the '
                                'thesis grid 0.001-0.01 and a grid around lambda = 1, '
                                'where the influence peaks'),
          overrides={'num_train_steps': GAUSS_STEPS, 'checkpoint_every_steps': GAUSS_STEPS,
                     **eval_overrides}),
      Experiment(
          name='authors_mnist', title="The authors' setting, MNIST joint latent",
          config_file='configs/authors_mnist_joint.py', seeds=(0,),
          purpose=("Our implementation of the authors' conv architecture and hyper-parameters "
                   f'(MSE on [-1, 1], KL weight 0.005, Adam 1e-4, batch 124, MI weight 0.01), '
                   f'{AUTHORS_STEPS} of their 150k steps'),
          overrides={'num_train_steps': AUTHORS_STEPS, 'checkpoint_every_steps': AUTHORS_STEPS,
                     **eval_overrides},
          variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': 0.01}))),
  ]


# The thesis's budget: 150k iterations at batch 124 = 18.6M examples = 72,800 steps at
# batch 256; a checkpoint every 5600 steps (1.43M examples), all 13 (+ step 0) kept.
THESIS_BUDGET_STEPS = 72_800
THESIS_BUDGET = {'num_train_steps': THESIS_BUDGET_STEPS, 'checkpoint_every_steps': 5600,
                 'keep_checkpoints': 13, 'temperature.initial': 1.0,
                 'temperature.anneal_rate': 0.0}
# The authors' full 150k steps at their batch 124 (their config's own budget); every
# 10k steps a checkpoint, all 15 kept for the curve.
AUTHORS_BUDGET = {'num_train_steps': 150_000, 'checkpoint_every_steps': 10_000,
                  'keep_checkpoints': 15}
AUTHORS_MI_WEIGHT = 0.01
# Ten epochs at batch 256, one checkpoint at the end.
TEN_EPOCHS = {'num_train_steps': 2340, 'checkpoint_every_steps': 2340}
# The class suite's targets (test accuracy, Hungarian), checked on the `mi` variant.
CLASS_TARGETS = {'class_mnist': 0.95, 'class_mnist_imsat': 0.95, 'class_mnist_warmup': 0.95,
                 'class_mnist_warmup_long': 0.95, 'class_fashion': 0.65,
                 'class_fashion_neighbours': 0.65}
# ... and the lowest seed each MNIST recipe may have.
CLASS_SEED_FLOORS = {name: 0.90 for name in CLASS_TARGETS if name.startswith('class_mnist')}


def class_suite() -> list[Experiment]:
  """The code as a classifier. Seeds 0-9 are held out (tuning used seeds >= 100); a
  recipe chosen after another's held-out results were seen gets fresh seeds (5-9)."""
  def class_experiment(name, title, config, purpose, steps=None, seeds=(0, 1, 2, 3, 4)):
    return Experiment(
        name=name, title=title, config_file=config, seeds=seeds,
        overrides={**CHEAP_EVAL, **(steps or {})}, purpose=purpose,
        variants=(('mi', {}), ('elbo', {'mi_weight': 0.0})))
  return [
      Experiment(
          name='thesis_budget', title="The thesis's claim at its budget (MNIST joint latent)",
          config_file='configs/mnist_joint.py', seeds=(0, 1, 2), curve=True,
          overrides={**THESIS_BUDGET, **CHEAP_EVAL},
          variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': 10.0})),
          purpose=('The thesis\'s comparison (lambda = 0 vs 10, plain ELBO otherwise, Gumbel '
                   'temperature fixed at 1.0) trained for the thesis\'s budget: 18.6M '
                   'examples (150k iterations at batch 124 = 72,800 steps at batch 256). '
                   '`accuracy_majority_train` is the thesis\'s protocol (many-to-one map '
                   'fitted and scored on the 60k training images: its 21% -> 82%); the curve '
                   'is measured at every checkpoint (every 5600 steps)')),
      Experiment(
          name='authors_budget', title="The authors' setting at their budget (MNIST joint latent)",
          config_file='configs/authors_mnist_joint.py', seeds=(0,), curve=True,
          overrides={**AUTHORS_BUDGET, **CHEAP_EVAL},
          variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': AUTHORS_MI_WEIGHT})),
          purpose=("The authors' conv architecture and hyper-parameters "
                   '(configs/authors_mnist_joint.py: MSE on [-1, 1], KL weight 0.005, Adam '
                   '1e-4, batch 124) for their full 150k steps, lambda = 0 against their MI '
                   f'weight {AUTHORS_MI_WEIGHT} (their lambda, on their loss scale); one seed, '
                   'the curve measured every 10k steps')),
      class_experiment(
          'class_mnist', 'The code as a classifier, MNIST', 'configs/mnist_class.py',
          '`mi`: the recipe of configs/mnist_class.py; `elbo`: the same with lambda = 0 (what '
          'the VMI term adds on top of the invariance terms). 30 epochs (7020 steps at batch 256). '
          'Held-out seeds 0-4 (tuning used seeds >= 100)'),
      class_experiment(
          'class_mnist_imsat', 'The code trained like a classifier, MNIST',
          'configs/mnist_class_imsat.py',
          '`mi`: configs/mnist_class_imsat.py (the class-code recipe with the code trained by '
          'the invariance terms, the encoder-side information term and the aggregate KL, no '
          'generative gradient into its logits); `elbo`: the same with lambda = 0. 10 epochs '
          '(2340 steps; the config\'s 30 extend the same runs), held-out seeds 0-4 (tuning '
          'used seed 100)', steps=TEN_EPOCHS),
      class_experiment(
          'class_mnist_warmup', 'The code trained like a classifier first, MNIST',
          'configs/mnist_class_warmup.py',
          '`mi`: configs/mnist_class_warmup.py (as class_mnist_imsat, but the generative '
          'gradient reaches the code\'s logits after the first 5 epochs); `elbo`: the same '
          'with lambda = 0. 10 epochs (2340 steps). Fresh held-out seeds 5-9: this schedule '
          'was chosen on seed 100 after seeds 0-4 had been used for class_mnist_imsat',
          seeds=(5, 6, 7, 8, 9)),
      class_experiment(
          'class_mnist_warmup_long',
          'The code trained like a classifier for 10 epochs first, MNIST',
          'configs/mnist_class_warmup_long.py',
          '`mi`: configs/mnist_class_warmup_long.py (as class_mnist_warmup, with the generative '
          'gradient into the code\'s logits after 10 epochs instead of 5, and 15 epochs in all); '
          '`elbo`: the same with lambda = 0. Fresh held-out seeds 10-14: the schedule was chosen '
          'after seeds 5-9 had judged class_mnist_warmup', seeds=(10, 11, 12, 13, 14)),
      Experiment(
          name='ablation_class_mnist_imsat',
          title='What trains the code: each mechanism off (MNIST)',
          config_file='configs/mnist_class_imsat.py', seeds=(0, 1, 2),
          overrides={**CHEAP_EVAL, **TEN_EPOCHS},
          purpose=('One mechanism of configs/mnist_class_imsat.py switched off at a time: the '
                   'generative gradient into the code\'s logits restored, no information '
                   'term, the per-example KL in the training loss; 10 epochs, seeds 0-2'),
          variants=(
              ('generative_gradient', {'code_training.generative_gradient': 1.0}),
              ('no_information', {'code_training.marginal_entropy_weight': 0.0,
                                  'code_training.conditional_entropy_weight': 0.0}),
              ('per_example_kl', {'code_training.aggregate_kl': False}),
          )),
      class_experiment(
          'class_fashion', 'The code as a classifier, Fashion-MNIST',
          'configs/fashion_class.py', 'as class_mnist, with configs/fashion_class.py (30 epochs, '
          'held-out seeds 0-4)'),
      class_experiment(
          'class_fashion_neighbours',
          'The code with neighbours and crops, trained like a classifier first, Fashion-MNIST',
          'configs/fashion_class_neighbours.py',
          '`mi`: configs/fashion_class_neighbours.py (SCAN\'s neighbour consistency over the 10 '
          'nearest training images in pixel space, random resized crops and flips, the code '
          'trained like a classifier for the first 5 of 10 epochs); `elbo`: the same with '
          'lambda = 0. Fresh held-out seeds 10-14 (tuning used seed 100)',
          seeds=(10, 11, 12, 13, 14)),
      Experiment(
          name='ablation_class_mnist', title='Ablation of the classifier recipe (MNIST)',
          config_file='configs/mnist_class.py', seeds=(0, 1, 2), overrides=dict(CHEAP_EVAL),
          purpose=('One ingredient of configs/mnist_class.py removed at a time: the '
                   'consistency term, the VAT term, the thickness (dilation) augmentation, '
                   'both invariance terms, and the MI term (`elbo_twin`); 30 epochs, seeds 0-2'),
          variants=(
              ('recipe', {}),
              ('no_consistency', {'invariance.consistency_weight': 0.0}),
              ('no_vat', {'invariance.vat_weight': 0.0}),
              ('no_thickness', {'invariance.augment.dilate_prob': 0.0}),
              ('no_invariance', {'invariance.consistency_weight': 0.0,
                                 'invariance.vat_weight': 0.0}),
              ('elbo_twin', {'mi_weight': 0.0}),
          )),
  ]


# The disentanglement suite's budget on 2 CPU cores: 2,000 steps at batch 64 (128,000
# examples, 0.67% of disentanglement_lib's 300k steps), a checkpoint halfway so that an
# interrupted sweep resumes. Evaluation: ELBO and IWAE (50 samples) on 2,000 test
# images, a fresh Q of 500 steps (VMI runs), and the six scores at a fifth of
# disentanglement_lib's sample sizes (2,000 / 1,000 points, batches of 64).
DISENTANGLEMENT_STEPS = 2000
# The baselines train no Q (no MI target): Q's monitoring would cost 70% of their step
# (benchmarks/dlib_conv_step.py). Their VAE update does not read Q, so beta-VAE with
# beta = 1 is still the VMI runs' lambda = 0 twin, up to the random draws.
NO_Q = {'mi.gaussian_indices': ()}
DISENTANGLEMENT_OVERRIDES = {
    'num_train_steps': DISENTANGLEMENT_STEPS, 'checkpoint_every_steps': DISENTANGLEMENT_STEPS // 2,
    'test_limit': 2000, 'eval.iwae_samples': 50, 'eval.iwae_chunk': 50,
    'eval.q_train_steps': 500, 'eval.q_batch_size': 64,
    'eval.disentanglement.num_train': 2000, 'eval.disentanglement.num_test': 1000,
    'eval.disentanglement.batch_size': 64, 'eval.disentanglement.num_variance_estimate': 2000}
# Each method's main hyper-parameter: two values of disentanglement_lib's grid (Locatello
# et al. 2019, table 3), the lower end and a strong setting; chosen from the literature,
# never tuned here.
DISENTANGLEMENT_GRID = {
    'beta_vae': ('beta', (1.0, 4.0), NO_Q),
    'beta_tcvae': ('disentangle.tc_weight', (2.0, 6.0),
                   {**NO_Q, 'disentangle.method': 'beta_tcvae'}),
    'factor_vae': ('disentangle.tc_weight', (10.0, 40.0),
                   {**NO_Q, 'disentangle.method': 'factor_vae'}),
    'dip_vae_i': ('disentangle.dip_lambda_od', (1.0, 10.0),
                  {**NO_Q, 'disentangle.method': 'dip_vae_i'}),
    'dip_vae_ii': ('disentangle.dip_lambda_od', (1.0, 10.0),
                   {**NO_Q, 'disentangle.method': 'dip_vae_ii'}),
    'vmi_dims01': ('mi_weight', (1.0, 10.0), {}),
    'vmi_all_dims': ('mi_weight', (1.0, 10.0), {'mi.gaussian_indices': tuple(range(10))}),
}
DISENTANGLEMENT_TITLES = {
    'beta_vae': ('beta-VAE (Higgins et al. 2017)', 'configs/dsprites_beta_vae.py',
                 'beta weighs the KL; beta = 1 is the plain VAE and the VMI runs\' lambda = 0 '
                 'twin (same initial VAE and batches; no Q)'),
    'beta_tcvae': ('beta-TCVAE (Chen et al. 2018)', 'configs/dsprites_beta_vae.py',
                   'beta weighs the total correlation (minibatch-weighted sampling)'),
    'factor_vae': ('FactorVAE (Kim & Mnih 2018)', 'configs/dsprites_beta_vae.py',
                   'gamma weighs the discriminator\'s total-correlation estimate'),
    'dip_vae_i': ('DIP-VAE-I (Kumar et al. 2018)', 'configs/dsprites_beta_vae.py',
                  'lambda_od weighs the off-diagonal covariance of the means; lambda_d = '
                  '10 lambda_od'),
    'dip_vae_ii': ('DIP-VAE-II (Kumar et al. 2018)', 'configs/dsprites_beta_vae.py',
                   'lambda_od weighs the off-diagonal aggregate covariance; lambda_d = '
                   'lambda_od'),
    'vmi_dims01': ('VMI on two Gaussian dims (the method under test)', 'configs/dsprites_vmi.py',
                   'lambda weighs the MI bound of dims 0 and 1 (configs/dsprites_vmi.py)'),
    'vmi_all_dims': ('VMI on all ten Gaussian dims', 'configs/dsprites_vmi.py',
                     'lambda weighs the MI bound of all 10 dims (the :mi_all_dims variant)'),
}


def _grid_name(value: float) -> str:
  return f'{value:g}'.replace('.', 'p')


def disentanglement_suite() -> list[Experiment]:
  """Each method x two values of its main hyper-parameter x seeds 0-4 on procedural
  dSprites (no tuning was done on dSprites: every seed is held out)."""
  experiments = []
  for name, (key, values, fixed) in DISENTANGLEMENT_GRID.items():
    title, config_file, meaning = DISENTANGLEMENT_TITLES[name]
    short = key.split('.')[-1]
    experiments.append(Experiment(
        name=name, title=title, config_file=config_file, seeds=SEEDS,
        overrides={**DISENTANGLEMENT_OVERRIDES, **fixed},
        variants=tuple((f'{short}_{_grid_name(v)}', {key: v}) for v in values),
        purpose=(f'{meaning}; {short} in {{{", ".join(f"{v:g}" for v in values)}}}, '
                 f'{DISENTANGLEMENT_STEPS} steps at batch 64, seeds 0-4 as one sweep per '
                 'value')))
  return experiments


def smoke_suite() -> list[Experiment]:
  """Minutes on 2 CPU cores: the thesis's joint MNIST comparison, 3 seeds, one epoch, the
  cheapest evaluation. Times the suite's two paths (sweeps vs --no_sweeps)."""
  return [Experiment(
      name='joint_mnist', title='Joint latent, MNIST (smoke: one epoch)',
      config_file='configs/mnist_joint.py', seeds=(0, 1, 2),
      variants=(('elbo', {'mi_weight': 0.0}), ('mi', {'mi_weight': 10.0})),
      overrides={'num_train_steps': EPOCH_STEPS, 'checkpoint_every_steps': EPOCH_STEPS,
                 'eval.iwae_samples': 10, 'eval.iwae_chunk': 10, 'eval.q_train_steps': 200},
      purpose='lambda = 0 vs 10 after one epoch: a timing and plumbing check, not a result')]


SUITES = {'thesis': thesis_suite, 'class': class_suite, 'smoke': smoke_suite,
          'disentanglement': disentanglement_suite}
