"""Invariance terms for the categorical codes q(c|x) in the VAE objective (the class-code recipe).

Config ``invariance`` (every weight 0 = off: no extra work, the step is bitwise the
plain one). With T a random augmentation (:mod:`vmivae_jax.data.augment`) of the step's
pre-processed clean batch x, summed over every categorical code c:

* consistency_weight w_c:  + w_c * mean_x KL(q(c|x) || q(c|T(x)))  (clean side fixed);
* paired_mi_weight   w_p:  - w_p * I(c; c')  IIC's paired-assignment MI between q(c|x)
  and q(c|T(x)) over the global batch (gradients to both views);
* vat_weight         w_v:  + w_v * mean_x KL(q(c|x) || q(c|x + r_adv)), r_adv the
  virtual adversarial perturbation of radius vat_epsilon (power iteration from a
  random start, exact Hessian-vector products when vat_xi = 0).
* neighbour_weight   w_n:  + w_n * mean_x -log sum_c q(c|x) q(c|n(x)), SCAN's agreement
  with n(x), one of x's ``neighbour_count`` nearest training examples (cosine, pixels;
  the table is computed once per run, ``train_step.device_training_set``), drawn anew
  every step; gradients to both sides. Needs the device feed (the step gathers n(x)).

Only the ENCODER runs on T(x), x + r_adv and n(x), inside the VAE pass that the train step
differentiates with ``jax.vjp`` (one pullback gives every gradient); the decoder and Q
see nothing new, so these terms change only the encoder's gradient.

Randomness: the invariance key is ``fold_in(fold_in(step_key, step), 1)`` (the noise and
binarisation keys are ``split(fold_in(step_key, step))``, unchanged). One augmentation
key per example of the GLOBAL batch is split from it and each device takes its slice
(augment is vmapped over single examples); VAT's random starts are drawn for the global
batch and sliced. So the draws do not depend on the device count.

BatchNorm (conv family, ``model.norm='batch'``): the extra encoder passes run in train
mode, normalising with the statistics of their own batch (T(x), x + r) (over the global
batch under data parallelism), but their running-statistics updates are DROPPED: only
the clean VAE pass updates the running averages, once per step. VAT's power iteration
with BatchNorm sees a batch-coupled KL (the batch statistics depend on every example),
and its per-device gradient omits the other devices' terms, so conv+BatchNorm VAT
directions depend slightly on the device count (MLPs and LayerNorm are exact).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmivae_jax import consistency
from vmivae_jax.data import augment as augment_lib
from vmivae_jax.model import networks
from vmivae_jax.util import parallel

FOOTPRINTS = ('square', 'cross')
METRICS = ('consistency', 'paired_mi', 'vat', 'neighbour')


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """Arguments of :func:`augment.augment` (static numbers; 0 switches a part off)."""
  max_rotation: float = 0.0
  max_scale: float = 0.0
  max_aspect: float = 0.0
  max_shear: float = 0.0
  max_translation: float = 0.0
  elastic_alpha: float = 0.0
  elastic_sigma: float = 4.0
  dilate_prob: float = 0.0
  erode_prob: float = 0.0
  thickness_footprint: str = 'square'
  flip_prob: float = 0.0
  crop_min_area: float = 1.0
  crop_max_aspect: float = 0.0


@dataclasses.dataclass(frozen=True)
class InvarianceSettings:
  """The invariance terms' weights and options (see the module docstring)."""
  consistency_weight: float = 0.0
  paired_mi_weight: float = 0.0
  vat_weight: float = 0.0
  vat_epsilon: float = 1.2
  vat_xi: float = 0.0
  vat_power_iterations: int = 1
  neighbour_weight: float = 0.0
  neighbour_count: int = 20
  augment: AugmentSettings = AugmentSettings()

  @property
  def enabled(self) -> bool:
    return self.uses_augmentation or _on(self.vat_weight) or self.uses_neighbours

  @property
  def uses_neighbours(self) -> bool:
    return _on(self.neighbour_weight)

  @property
  def uses_augmentation(self) -> bool:
    return _on(self.consistency_weight) or _on(self.paired_mi_weight)


def _on(weight) -> bool:
  """A term is in the program when its weight is > 0, or an array (a sweep member's
  traced weight; sweep.py keeps every member's term on or every member's off)."""
  return weight > 0 if isinstance(weight, (int, float)) else True


class Views(NamedTuple):
  """Per-code logits of the encoder's extra passes ((), when a pass is off)."""
  augmented: tuple[jax.Array, ...] = ()   # q(c|T(x)), one [B, K] per code
  vat: tuple[jax.Array, ...] = ()         # q(c|x + r_adv), one [B, K] per code
  neighbour: tuple[jax.Array, ...] = ()   # q(c|n(x)), one [B, K] per code


class Inputs(NamedTuple):
  """This device's inputs of the extra passes (None when a pass is off)."""
  augmented: jax.Array | None       # [b, 28, 28, 1] T(x)
  vat_starts: jax.Array | None      # [codes, b, 28, 28, 1] VAT power-iteration starts
  neighbours: jax.Array | None = None   # [b, 28, 28, 1] n(x), pre-processed as x


def invariance_key(step_key: jax.Array, step: jax.Array) -> jax.Array:
  """The step's invariance key (independent of its noise / binarisation keys)."""
  return jax.random.fold_in(jax.random.fold_in(step_key, step), 1)


def neighbour_key(step_key: jax.Array, step: jax.Array) -> jax.Array:
  """The key that picks each example's neighbour at ``step`` (independent of the others)."""
  return jax.random.fold_in(invariance_key(step_key, step), 2)


def augment_examples(keys: jax.Array, images: jax.Array, settings: AugmentSettings, *,
                     pixel_range: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
  """T(x) of each example with its own key ([b] keys, [b, H, W, C] images).

  Augmentation works in [0, 1] (zero fill = background), so [-1, 1] data are mapped
  there and back.
  """
  low, high = pixel_range
  unit = (low, high) == (0.0, 1.0)
  x = images if unit else (images - low) / (high - low)
  kwargs = dataclasses.asdict(settings)
  out = jax.vmap(lambda k, im: augment_lib.augment(k, im[None], **kwargs)[0])(keys, x)
  return out if unit else low + (high - low) * out


def draw_inputs(key: jax.Array, images: jax.Array, settings: InvarianceSettings, *,
                num_codes: int, global_batch: int, axis_name: str | None,
                pixel_range: tuple[float, float] = (0.0, 1.0)) -> Inputs:
  """Draws (for the global batch, then this device's slice) the extra passes' inputs.

  Args:
    key: :func:`invariance_key`.
    images: [b, 28, 28, 1] this device's clean batch (pre-processed, before any
      binarisation: the caller binarises T(x) as it did x).
  """
  augment_key, vat_key = jax.random.split(key)
  local = images.shape[0]
  augmented = vat_starts = None
  if settings.uses_augmentation:
    keys = parallel.local_slice(jax.random.split(augment_key, global_batch), local, axis_name)
    augmented = augment_examples(keys, images, settings.augment, pixel_range=pixel_range)
  if _on(settings.vat_weight):
    starts = jax.random.normal(vat_key, (num_codes, global_batch) + images.shape[1:],
                               images.dtype)
    vat_starts = jax.vmap(lambda s: parallel.local_slice(s, local, axis_name))(starts)
  return Inputs(augmented=augmented, vat_starts=vat_starts)


def encode_logits(vae: networks.VAE, vae_vars: dict, images: jax.Array
                  ) -> tuple[jax.Array, ...]:
  """Per-code logits of q(c|x), encoder in train mode; BatchNorm stat updates dropped."""
  posterior, _ = vae.apply(vae_vars, images, train=True, method=networks.VAE.encode,
                           mutable=['batch_stats'])
  return tuple(posterior.logits)


def encoder_views(vae: networks.VAE, vae_vars: dict, *, images: jax.Array,
                  clean_logits: tuple[jax.Array, ...], inputs: Inputs,
                  settings: InvarianceSettings) -> Views:
  """The encoder's extra passes (differentiable in ``vae_vars``; call inside the VJP).

  VAT's power iteration runs on stop-gradient copies of the variables (it only picks
  r_adv); the final pass on x + r_adv carries the gradient.
  """
  augmented = ()
  if inputs.augmented is not None:
    augmented = encode_logits(vae, vae_vars, inputs.augmented)
  vat = ()
  if inputs.vat_starts is not None:
    frozen = jax.lax.stop_gradient(vae_vars)
    images = jax.lax.stop_gradient(images)
    outs = []
    for i, logits in enumerate(clean_logits):
      r_adv = consistency.vat_perturbation(
          lambda im, i=i: encode_logits(vae, frozen, im)[i], images, None,
          epsilon=settings.vat_epsilon, xi=settings.vat_xi,
          num_power_iterations=settings.vat_power_iterations,
          clean_logits=jax.lax.stop_gradient(logits), start=inputs.vat_starts[i])
      outs.append(encode_logits(vae, vae_vars, images + r_adv)[i])
    vat = tuple(outs)
  neighbour = ()
  if inputs.neighbours is not None:
    neighbour = encode_logits(vae, vae_vars, inputs.neighbours)
  return Views(augmented=augmented, vat=vat, neighbour=neighbour)


def invariance_loss(clean_logits: tuple[jax.Array, ...], views: Views,
                    settings: InvarianceSettings, *, axis_name: str | None = None
                    ) -> tuple[jax.Array, dict]:
  """(the terms' contribution to the local-batch VAE loss, metrics of the enabled terms)."""
  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  if _on(settings.consistency_weight):
    value = sum(jnp.mean(consistency.consistency_kl(logits=c, perturbed_logits=a))
                for c, a in zip(clean_logits, views.augmented))
    loss += settings.consistency_weight * value
    metrics['consistency'] = value
  if _on(settings.paired_mi_weight):
    value = sum(consistency.paired_assignment_mi(
        probs_a=jax.nn.softmax(c, axis=-1), probs_b=jax.nn.softmax(a, axis=-1),
        axis_name=axis_name) for c, a in zip(clean_logits, views.augmented))
    loss -= settings.paired_mi_weight * value
    metrics['paired_mi'] = value
  if _on(settings.vat_weight):
    value = sum(jnp.mean(consistency.consistency_kl(logits=c, perturbed_logits=v))
                for c, v in zip(clean_logits, views.vat))
    loss += settings.vat_weight * value
    metrics['vat'] = value
  if settings.uses_neighbours:
    value = sum(jnp.mean(consistency.neighbour_consistency(logits=c, neighbour_logits=n))
                for c, n in zip(clean_logits, views.neighbour))
    loss += settings.neighbour_weight * value
    metrics['neighbour'] = value
  return loss, metrics
