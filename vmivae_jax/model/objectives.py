"""Training objectives, each returning ``(loss, aux)`` for ``jax.value_and_grad(has_aux=True)``.

* :func:`vae_objective`: -ELBO - lambda * MI (thesis eq 4.11/4.22), with beta-weighted
  or JointVAE capacity-controlled KL terms per latent group, minimised over the VAE.
* :func:`q_objective`: -E[log Q(z_sel | x')], minimised over Q with the VAE fixed.

A disentanglement baseline on the Gaussian group (beta-TCVAE, DIP-VAE, FactorVAE;
``ObjectiveSettings.disentangle``, disentangle.py) adds its term to the VAE loss.

``vae_objective`` is ``vae_loss_from_forward`` after ``VMIModel.forward``; the train
step uses the two halves separately so that one forward pass of the VAE serves both
the Q update and the VAE update (the Q update does not change the VAE, so the
second pass would recompute exactly the same values).

Gradient flow in the MI term: log Q(z_sel | x') is differentiated through x' (the
decoder mean, and through it the decoder and encoder) and through the reparameterised
target z_sel into the encoder, unless ``stop_target_gradient`` is set; H(z_sel) is
differentiated where it depends on the encoder (the categorical aggregate entropy and
the Monte Carlo Gaussian estimate; the prior entropy is a constant).
"""

import dataclasses

import jax
import jax.numpy as jnp

from vmivae_jax import distributions
from vmivae_jax import latents
from vmivae_jax.model import disentangle as disentangle_lib
from vmivae_jax.model import invariance as invariance_lib
from vmivae_jax.model import vmi as model_lib
from vmivae_jax.util import parallel


@dataclasses.dataclass(frozen=True)
class Capacity:
  """JointVAE capacity control: gamma * |KL_group - C(t)|, C(t) rising linearly to max_nats."""
  gamma: float
  max_nats: float
  steps: int


@dataclasses.dataclass(frozen=True)
class ObjectiveWeights:
  """The weights of the VAE objective's terms.

  Attributes:
    mi_weight: lambda, weight of the MI bound (0 = ELBO only).
    beta: weight of every KL term without a capacity target (1 = ELBO).
    capacity: per latent group name ('gaussian', 'categorical_0', ...), a Capacity
      that replaces beta * KL for that group.
  """
  mi_weight: float = 0.0
  beta: float = 1.0
  capacity: tuple[tuple[str, Capacity], ...] = ()


@dataclasses.dataclass(frozen=True)
class CodeTraining:
  """What trains the categorical codes' logits, besides the ELBO and the MI term.

  Attributes:
    marginal_entropy_weight, conditional_entropy_weight: the encoder-side information
      term -(w_m H(qbar_batch(c)) - w_c E_x H(q(c|x))) of each code (IMSAT's, Hu et al.
      2017, with w_c = w_m it is -w I(x; c) over the batch); qbar over the global batch.
    aggregate_kl: in the training loss, each code's per-example KL(q(c|x) || U) (which
      equals I(x; c) + KL(qbar(c) || U) on average, so it penalises the information in
      the code) is replaced by the aggregate KL(qbar_batch(c) || U). The reported ELBO
      keeps the per-example KL.
    generative_gradient: scale of the gradient that reaches the codes' logits through
      their Gumbel-softmax sample (the reconstruction and the MI bound's log Q, i.e. the
      generative terms); 0 stops it, 1 (default) is the plain objective.
    generative_gradient_warmup_steps: before this step the scale is 0 (the code is
      trained by its KL, information and invariance terms alone), then
      ``generative_gradient``.
  """
  marginal_entropy_weight: float = 0.0
  conditional_entropy_weight: float = 0.0
  aggregate_kl: bool = False
  generative_gradient: float = 1.0
  generative_gradient_warmup_steps: int = 0

  @property
  def has_information_term(self) -> bool:
    return is_on(self.marginal_entropy_weight) or is_on(self.conditional_entropy_weight)

  @property
  def routes_gradient(self) -> bool:
    return self.generative_gradient != 1.0 or self.generative_gradient_warmup_steps > 0

  def generative_gradient_at(self, step: jax.Array) -> jax.Array | float:
    """The scale at ``step`` (the Python float 1.0 when routing is off: no extra ops)."""
    if not self.routes_gradient:
      return 1.0
    after = jnp.asarray(step) >= self.generative_gradient_warmup_steps
    return jnp.where(after, self.generative_gradient, 0.0).astype(jnp.float32)


def code_information_terms(logits: jax.Array, *, axis_name: str | None = None
                           ) -> tuple[jax.Array, jax.Array]:
  """(H(qbar_batch(c)), mean_x H(q(c|x))) of one code's [B, K] logits; qbar over the
  global batch when ``axis_name`` names the data axis."""
  marginal = distributions.categorical_entropy(logits=_log_aggregate(logits, axis_name))
  conditional = parallel.pmean(jnp.mean(distributions.categorical_entropy(logits=logits)),
                               axis_name)
  return marginal, conditional


def aggregate_code_kl(logits: jax.Array, *, axis_name: str | None = None) -> jax.Array:
  """KL(qbar_batch(c) || U) of one code's [B, K] logits; U over all K columns and a
  masked class (logit -inf) adds nothing, as in the per-example KL."""
  return distributions.categorical_kl_to_uniform(
      logits=_log_aggregate(logits, axis_name)[None])[0]


def _log_aggregate(logits: jax.Array, axis_name: str | None) -> jax.Array:
  """log qbar_batch(c), [K]; a masked class's 0 is clipped to 1e-30 (finite gradients)."""
  probs = jax.nn.softmax(distributions.unmask_logits(logits), axis=-1)
  aggregate = parallel.pmean(jnp.mean(probs, axis=0), axis_name)
  return jnp.log(jnp.maximum(aggregate, 1e-30))


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """Everything the VAE objective is configured with: the weights, then how the terms are
  computed and scheduled. New options of the objective are fields here (with defaults
  that keep the current behaviour).

  Attributes:
    weights: the terms' weights.
    gaussian_entropy_kind: entropy term for Gaussian MI targets
      (model_lib.GAUSSIAN_ENTROPY_KINDS).
    stop_target_gradient: do not differentiate log Q through the sampled target z_sel.
    mi_warmup_steps: lambda rises linearly from 0 to ``weights.mi_weight`` over this
      many steps (0 = constant lambda).
    invariance: the categorical codes' invariance terms (invariance.py; all weights 0
      = off). They need the encoder's extra passes, which the train step runs.
    code: what else trains the codes' logits (:class:`CodeTraining`; defaults = off).
    disentangle: a disentanglement baseline on the Gaussian group (default: none).
  """
  weights: ObjectiveWeights = ObjectiveWeights()
  gaussian_entropy_kind: str = 'gaussian_prior'
  stop_target_gradient: bool = False
  mi_warmup_steps: int = 0
  invariance: invariance_lib.InvarianceSettings = invariance_lib.InvarianceSettings()
  code: CodeTraining = CodeTraining()
  disentangle: disentangle_lib.DisentangleSettings = disentangle_lib.DisentangleSettings()


def mi_weight_at(step: jax.Array, *, mi_weight: float, warmup_steps: int) -> jax.Array:
  """lambda(t) = mi_weight * min(1, t / warmup_steps); constant when warmup_steps = 0."""
  if warmup_steps <= 0:
    return jnp.asarray(mi_weight, jnp.float32)
  return mi_weight * _linear_ramp(step, warmup_steps)


def capacity_target(step: jax.Array, *, max_nats: float, steps: int) -> jax.Array:
  """C(t) = max_nats * min(1, t / steps): the JointVAE capacity schedule."""
  return max_nats * _linear_ramp(step, steps)


def _linear_ramp(step: jax.Array, steps: int | jax.Array) -> jax.Array:
  """min(1, t / steps), rising from 0 at t = 0 (``steps`` may be an array: sweeps)."""
  denominator = max(steps, 1) if isinstance(steps, int) else jnp.maximum(steps, 1)
  return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / denominator)


def is_on(weight) -> bool:
  """Whether a term with this weight is in the program: a Python number when non-zero;
  always for an array weight (a sweep's per-member value, traced: sweep.py refuses
  members that mix zero and non-zero weights where that would change the program)."""
  return bool(weight) if isinstance(weight, (int, float)) else True


def vae_loss_from_forward(forward: model_lib.Forward, images: jax.Array, *, model: model_lib.VMIModel,
                          q_vars: dict, step: jax.Array, settings: ObjectiveSettings,
                          axis_name: str | None = None,
                          views: invariance_lib.Views | None = None,
                          discriminator_params: dict | None = None
                          ) -> tuple[jax.Array, dict]:
  """-ELBO (beta/capacity weighted) - lambda * MI (+ invariance terms) for one forward pass.

  Args:
    forward: the VAE's pass over ``images`` (see ``VMIModel.forward``).
    images: [B, 28, 28, 1] the batch.
    model: the VMI model.
    q_vars: Q's variables (held fixed here).
    step: training step, for capacity schedules.
    settings: the objective's weights and options.
    axis_name: data-parallel axis; batch-level statistics (aggregate entropy, the
      KL inside a capacity term) are then taken over the global batch.
    views: the encoder's extra passes (``invariance.encoder_views``) when
      ``settings.invariance`` is enabled; their terms are added to the loss.

  Returns:
    (loss, metrics): the local-batch mean loss and a dict of scalar metrics.
  """
  reconstruction = model.reconstruction(forward, images)                # [B]
  kls = model.kl_per_group(forward.posterior)                          # {group: [B]}
  weights = settings.weights
  capacities = dict(weights.capacity)
  penalty = jnp.zeros((), jnp.float32)
  metrics = {}
  code = settings.code
  disentangle = settings.disentangle
  for group, kl in kls.items():
    metrics[f'kl/{group}'] = jnp.mean(kl)
    if code.aggregate_kl and group.startswith('categorical_'):
      aggregate = aggregate_code_kl(forward.posterior.logits[int(group.split('_')[1])],
                                    axis_name=axis_name)
      metrics[f'aggregate_kl/{group}'] = aggregate
      penalty += weights.beta * aggregate
    elif group in capacities:
      cap = capacities[group]
      target = capacity_target(step, max_nats=cap.max_nats, steps=cap.steps)
      penalty += cap.gamma * jnp.abs(parallel.pmean(jnp.mean(kl), axis_name) - target)
      metrics[f'capacity/{group}'] = target
    # beta-TCVAE weighs the Gaussian group's KL by its three terms instead (below).
    elif not (group == 'gaussian' and disentangle.replaces_gaussian_kl):
      penalty += weights.beta * jnp.mean(kl)
  kl_total = sum(kls.values())
  elbo = reconstruction - kl_total
  loss = -jnp.mean(reconstruction) + penalty
  metrics.update(reconstruction=jnp.mean(reconstruction), kl_total=jnp.mean(kl_total),
                 elbo=jnp.mean(elbo))
  if model.has_mi_targets:
    targets = model.mi_targets(forward.sample)
    if settings.stop_target_gradient:
      targets = jax.lax.stop_gradient(targets)
    log_q, _ = model.log_q(q_vars, forward.x_prime, targets)
    entropy = model.mi_entropy(forward.posterior, forward.sample,
                               gaussian_kind=settings.gaussian_entropy_kind, axis_name=axis_name)
    mi_bound = jnp.mean(log_q) + entropy
    mi_weight = mi_weight_at(step, mi_weight=weights.mi_weight,
                             warmup_steps=settings.mi_warmup_steps)
    if is_on(weights.mi_weight):
      loss -= mi_weight * mi_bound
    metrics['mi_weight'] = mi_weight
    metrics[model_lib.mi_metric_name(model, settings.gaussian_entropy_kind)] = mi_bound
    metrics.update(log_q=jnp.mean(log_q), mi_entropy=entropy)
  if code.has_information_term:
    for i, logits in enumerate(forward.posterior.logits):
      marginal, conditional = code_information_terms(logits, axis_name=axis_name)
      loss += (code.conditional_entropy_weight * conditional
               - code.marginal_entropy_weight * marginal)
      metrics.update({f'code_information/marginal_entropy_{i}': marginal,
                      f'code_information/conditional_entropy_{i}': conditional})
  if disentangle.enabled:
    term, disentangle_metrics = disentangle_lib.gaussian_term(
        disentangle, forward.posterior, forward.sample.gaussian,
        discriminator_params=discriminator_params, axis_name=axis_name)
    loss += term
    metrics.update(disentangle_metrics)
  if settings.invariance.enabled:
    if views is None:
      raise ValueError('settings.invariance is enabled: pass the encoder views '
                       '(invariance.encoder_views; the train step does)')
    term, invariance_metrics = invariance_lib.invariance_loss(
        forward.posterior.logits, views, settings.invariance, axis_name=axis_name)
    loss += term
    metrics.update(invariance_metrics)
  metrics['loss'] = loss
  return loss, metrics


def vae_objective(vae_params: dict, *, vae_state: dict, q_vars: dict, model: model_lib.VMIModel,
                  images: jax.Array, noise: latents.LatentNoise, temperature: jax.Array | float,
                  step: jax.Array, settings: ObjectiveSettings, hard: bool = False,
                  axis_name: str | None = None, discriminator_params: dict | None = None
                  ) -> tuple[jax.Array, dict]:
  """The VAE objective as a function of the VAE parameters (for value_and_grad).

  Returns:
    (loss, aux) with aux = {'metrics': {...}, 'vae_state': updated BatchNorm stats}.
  """
  forward, new_state = model.forward({'params': vae_params, **vae_state}, images, noise,
                                     temperature=temperature, hard=hard, train=True)
  loss, metrics = vae_loss_from_forward(forward, images, model=model, q_vars=q_vars, step=step,
                                        settings=settings, axis_name=axis_name,
                                        discriminator_params=discriminator_params)
  metrics[model_lib.elbo_metric_name(model, hard)] = metrics.pop('elbo')
  return loss, {'metrics': metrics, 'vae_state': new_state}


def q_objective(q_params: dict, *, q_state: dict, model: model_lib.VMIModel, x_prime: jax.Array,
                targets: model_lib.MITargets) -> tuple[jax.Array, dict]:
  """-E[log Q(z_sel | x')] over the batch; x' and z_sel are constants (the VAE is fixed).

  Returns:
    (loss, aux) with aux = {'metrics': {'q_loss': ...}, 'q_state': updated BatchNorm stats}.
  """
  x_prime, targets = jax.lax.stop_gradient((x_prime, targets))
  log_q, new_state = model.log_q({'params': q_params, **q_state}, x_prime, targets)
  loss = -jnp.mean(log_q)
  return loss, {'metrics': {'q_loss': loss}, 'q_state': new_state}
