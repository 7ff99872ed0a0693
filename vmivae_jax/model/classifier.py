"""A classifier trained by IMSAT's objective, built from the project's own terms.

IMSAT (Hu et al. 2017, "Learning discrete representations via information maximizing
self-augmented training") trains a 784-1200-1200-K MLP with BatchNorm + ReLU on

  loss = R_vat + lam * (H(Y|X) - mu * H(Y)),        (their eq. 7 with eq. 5)

R_vat = mean_b KL(p(y|x_b) || p(y|x_b + r_adv,b)) the virtual adversarial penalty with a
per-example radius eps_b = 0.25 * (distance from x_b to its 10th nearest neighbour in
the training set), H(Y|X) the batch mean of the per-example entropies and H(Y) the
entropy of the batch's mean prediction. This module is the project's check that its
own VAT (:func:`consistency.vat_loss`), kNN radius (:func:`consistency.knn_epsilon`)
and entropy terms reproduce IMSAT's clustering accuracy: the code trunk and logits head
alone, no decoder and no Q.

Where we follow the authors' public code (github.com/weihua916/imsat, imsat_cluster.py)
rather than the paper, and where we differ, is listed in :class:`ImsatSettings`.

>>> import jax, jax.numpy as jnp
>>> s = ImsatSettings(hidden=(8,), num_classes=3)
>>> model = Classifier(hidden=s.hidden, num_classes=s.num_classes,
...                    head_init_scale=s.head_init_scale)
>>> variables = model.init(jax.random.key(0), jnp.zeros((4, 784)), train=False)
>>> loss, aux = imsat_objective(variables['params'], variables['batch_stats'],
...     jnp.ones((4, 784)), jnp.full((4,), 0.5), jax.random.key(1), model=model, settings=s)
>>> sorted(aux)
['batch_stats', 'conditional_entropy', 'marginal_entropy', 'vat']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmivae_jax import consistency
from vmivae_jax import distributions
from vmivae_jax import entropies
from vmivae_jax.model import networks


@dataclasses.dataclass(frozen=True)
class ImsatSettings:
  """IMSAT's hyper-parameters (defaults: the paper's MNIST setting and the authors' code).

  Attributes:
    hidden: MLP widths (1200-1200, BatchNorm + ReLU after each, as the authors' code).
    num_classes: K.
    lam: weight of the information term (their --lam, 0.1).
    mu: weight of H(Y) against H(Y|X) (their --mu, 4).
    vat_weight: weight of R_vat (1 in IMSAT; the knob for the VAE's recipes).
    xi: VAT's finite-difference step (10 in the authors' code; 0 = the exact Hessian-
      vector product of :func:`consistency.vat_perturbation`).
    power_iterations: VAT power-iteration steps (1).
    eps_scale, eps_neighbour: eps_b = eps_scale * distance to the eps_neighbour-th
      nearest training example (0.25, 10; the authors' distance file takes index 10 of
      the sorted distances with the example itself removed, the 11th neighbour: we keep
      the paper's 10th, a radius about 2% smaller).
    vat_batch_norm: 'batch' (the authors' code: the perturbed passes normalise with
      their own batch statistics and do not update the running averages) or 'running'
      (the running averages: examples independent, as the VAE's own VAT term).
    head_init_scale: the logits layer's weights are N(0, (scale^2 / fan_in)) (the
      authors' wscale 1e-4: every example starts at the uniform prediction).
    learning_rate, batch_size, epochs: Adam 2e-3 (beta1 0.9), batch 250, 50 epochs.
    pixel_range: input scale. (0, 1) as the project's Bernoulli models; the authors
      use [-1, 1). With BatchNorm after the first layer the two are the same network;
      only xi, an absolute step, is relatively twice as large on [0, 1].
  """
  hidden: Sequence[int] = (1200, 1200)
  num_classes: int = 10
  lam: float = 0.1
  mu: float = 4.0
  vat_weight: float = 1.0
  xi: float = 10.0
  power_iterations: int = 1
  eps_scale: float = 0.25
  eps_neighbour: int = 10
  vat_batch_norm: str = 'batch'
  head_init_scale: float = 1e-4
  learning_rate: float = 2e-3
  batch_size: int = 250
  epochs: int = 50
  pixel_range: tuple[float, float] = (0.0, 1.0)

  def __post_init__(self):
    if self.vat_batch_norm not in ('batch', 'running'):
      raise ValueError(f"vat_batch_norm must be 'batch' or 'running', got {self.vat_batch_norm!r}")
    for name in ('lam', 'mu', 'vat_weight', 'xi', 'eps_scale'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    for name in ('num_classes', 'power_iterations', 'eps_neighbour', 'batch_size', 'epochs'):
      if int(getattr(self, name)) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    if self.learning_rate <= 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}')


class Classifier(nn.Module):
  """x [B, ...] -> logits [B, K]: the encoder's MLP code trunk and a logits head."""
  hidden: Sequence[int] = (1200, 1200)
  num_classes: int = 10
  head_init_scale: float = 1e-4

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    features = networks.FeatureExtractor(family='mlp', hidden=tuple(self.hidden), norm='batch',
                                         images_only=False, name='code_trunk')(images,
                                                                               train=train)
    init = nn.initializers.variance_scaling(self.head_init_scale ** 2, 'fan_in', 'normal')
    return nn.Dense(self.num_classes, kernel_init=init, name='categorical_head_0')(features)


def imsat_objective(params, batch_stats, images: jax.Array, epsilon: jax.Array,
                    key: jax.Array, *, model: Classifier, settings: ImsatSettings):
  """IMSAT's loss on one batch: R_vat + lam * (H(Y|X) - mu * H(Y)).

  Args:
    params, batch_stats: the classifier's variables.
    images: [B, ...] inputs in ``settings.pixel_range``.
    epsilon: [B] VAT radii (:func:`consistency.knn_epsilon` of each example).
    key: PRNG key of the VAT power iteration's start.

  Returns:
    (loss, aux): scalar loss; aux holds the batch means 'vat', 'conditional_entropy'
    H(Y|X), 'marginal_entropy' H(Y), and the updated 'batch_stats' (from the clean pass
    only, as in the authors' code).
  """
  variables = {'params': params, 'batch_stats': batch_stats}
  logits, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])

  if settings.vat_batch_norm == 'batch':
    def perturbed_logits(x):
      # Batch statistics of the perturbed batch itself; running averages untouched.
      return model.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  else:
    def perturbed_logits(x):
      return model.apply(variables, x, train=False)

  vat = consistency.vat_loss(perturbed_logits, images, key, epsilon=epsilon, xi=settings.xi,
                             num_power_iterations=settings.power_iterations,
                             clean_logits=logits)
  conditional = jnp.mean(distributions.categorical_entropy(logits=logits))
  marginal = entropies.categorical_aggregate_entropy(logits=logits)
  loss = (settings.vat_weight * jnp.mean(vat)
          + settings.lam * (conditional - settings.mu * marginal))
  return loss, {'vat': jnp.mean(vat), 'conditional_entropy': conditional,
                'marginal_entropy': marginal, 'batch_stats': updates['batch_stats']}
