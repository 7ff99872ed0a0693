"""Latent distributions: diagonal Gaussian and relaxed categorical (Gumbel-softmax).

Pure functions on arrays. Hyper-parameters are keyword-only; every function that
scores examples returns one value per example (leading batch axis ``B``). Nothing
here reads a config or holds state, so the functions can be imported into any JAX
project:

>>> import jax.numpy as jnp
>>> from vmivae_jax import distributions
>>> distributions.gaussian_kl_to_standard_normal(
...     mean=jnp.zeros((2, 3)), logvar=jnp.zeros((2, 3))).tolist()
[0.0, 0.0]
"""

import math

import jax
import jax.numpy as jnp

__all__ = [
    'LOG_2PI',
    'gaussian_sample',
    'gaussian_log_density',
    'gaussian_kl_to_standard_normal',
    'gaussian_entropy',
    'MASKED_LOGIT',
    'unmask_logits',
    'gumbel_noise',
    'gumbel_softmax_sample',
    'categorical_kl_to_uniform',
    'categorical_entropy',
    'annealed_temperature',
]

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------
# Diagonal Gaussian q(z|x) = N(mean, diag(exp(logvar))), prior N(0, I).


def gaussian_sample(*, mean: jax.Array, logvar: jax.Array, noise: jax.Array) -> jax.Array:
  """Reparameterised sample z = mean + exp(logvar / 2) * noise.

  Taking the standard-normal ``noise`` as an argument (rather than a key) lets the
  data-parallel step draw noise for the global batch and slice it per device, so
  results do not depend on the device count.

  Args:
    mean: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    noise: [B, D] draws from N(0, 1).

  Returns:
    [B, D] samples, differentiable in ``mean`` and ``logvar``.

  >>> import jax.numpy as jnp
  >>> gaussian_sample(mean=jnp.ones((1, 2)), logvar=jnp.zeros((1, 2)),
  ...                 noise=jnp.array([[0.5, -1.0]])).tolist()
  [[1.5, 0.0]]
  """
  return mean + jnp.exp(0.5 * logvar) * noise


def gaussian_log_density(z: jax.Array, *, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))), summed over the last axis.

  log p(z) = -1/2 sum_d [log(2 pi) + logvar_d + (z_d - mean_d)^2 / exp(logvar_d)].

  Args:
    z: [..., D] points.
    mean: [..., D] means (broadcast against ``z``).
    logvar: [..., D] log-variances (broadcast against ``z``).

  Returns:
    [...] log-densities in nats.

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_log_density(jnp.zeros((1,)), mean=jnp.zeros((1,)),
  ...                                   logvar=jnp.zeros((1,)))), 4)
  -0.9189
  """
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def gaussian_kl_to_standard_normal(*, mean: jax.Array, logvar: jax.Array,
                                   per_dimension: bool = False) -> jax.Array:
  """Closed-form KL(N(mean, diag(exp(logvar))) || N(0, I)).

  KL = 1/2 sum_d [exp(logvar_d) + mean_d^2 - 1 - logvar_d].

  Args:
    mean: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    per_dimension: return [B, D] (one KL per latent dimension) instead of [B].

  Returns:
    [B] (or [B, D]) KL divergences in nats.

  >>> import jax.numpy as jnp
  >>> gaussian_kl_to_standard_normal(mean=jnp.ones((1, 2)), logvar=jnp.zeros((1, 2))).tolist()
  [1.0]
  """
  kl = 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)
  return kl if per_dimension else jnp.sum(kl, axis=-1)


def gaussian_entropy(*, logvar: jax.Array) -> jax.Array:
  """Differential entropy of N(., diag(exp(logvar))): 1/2 sum_d [log(2 pi e) + logvar_d].

  Args:
    logvar: [..., D] log-variances.

  Returns:
    [...] entropies in nats.

  >>> import jax.numpy as jnp
  >>> round(float(gaussian_entropy(logvar=jnp.zeros((2,)))), 4)
  2.8379
  """
  return 0.5 * jnp.sum(LOG_2PI + 1.0 + logvar, axis=-1)


# ----------------------------------------------------------------------------------
# Categorical q(c|x) = Cat(softmax(logits)) with a uniform prior over K classes.
#
# A logit of -inf masks a class (probability exactly 0). Every categorical function
# here first raises logits to MASKED_LOGIT (a no-op for any finite logit above it):
# a masked class then has probability exactly 0 and a huge but finite log-probability,
# so 0 log 0 = 0, and values and gradients stay finite. Unlike a ``jnp.where`` on the
# results, this elementwise max leaves XLA's fusion of the rest unchanged, so finite
# logits give the same bits as the plain formulas, in training runs too (float32).

MASKED_LOGIT = -1e30


def unmask_logits(logits: jax.Array) -> jax.Array:
  """max(logits, MASKED_LOGIT): -inf (masked) logits become a finite stand-in.

  >>> import jax.numpy as jnp
  >>> unmask_logits(jnp.array([0.5, -jnp.inf])).tolist()
  [0.5, -1.0000000150474662e+30]
  """
  return jnp.maximum(logits, MASKED_LOGIT)


def gumbel_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Standard Gumbel(0, 1) draws g = -log(-log(u)), u ~ U(0, 1), of the given shape.

  Draw it with a key of its own: noise made from the key that drew the logits is a
  function of them, not independent of them.

  >>> import jax
  >>> gumbel_noise(jax.random.PRNGKey(0), (2, 3)).shape
  (2, 3)
  """
  return jax.random.gumbel(key, shape)


def gumbel_softmax_sample(*, logits: jax.Array, gumbel: jax.Array, temperature: jax.Array | float,
                          hard: bool = False) -> jax.Array:
  """Relaxed one-hot sample from Cat(softmax(logits)) (thesis eq 4.20).

  y_k = softmax((log pi_k + g_k) / tau),  g_k ~ Gumbel(0, 1).

  With ``hard=True`` the forward value is the one-hot argmax of ``y`` and the
  gradient is that of ``y`` (straight-through estimator).

  A logit of -inf masks its class: y_k = 0 exactly and every gradient stays finite
  (at least one logit per row must be finite; tau >= 1e-4 for a finite d/d tau).

  Args:
    logits: [B, K] unnormalised log-probabilities (log pi up to a constant).
    gumbel: [B, K] Gumbel(0, 1) noise (see :func:`gumbel_noise`).
    temperature: scalar tau > 0; tau -> 0 approaches a one-hot sample.
    hard: straight-through one-hot output.

  Returns:
    [B, K] points on the probability simplex.

  >>> import jax.numpy as jnp
  >>> y = gumbel_softmax_sample(logits=jnp.array([[0.0, 5.0]]), gumbel=jnp.zeros((1, 2)),
  ...                           temperature=1.0, hard=True)
  >>> y.tolist()
  [[0.0, 1.0]]
  """
  soft = jax.nn.softmax((jax.nn.log_softmax(unmask_logits(logits)) + gumbel) / temperature,
                        axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
  return soft + jax.lax.stop_gradient(one_hot - soft)


def categorical_kl_to_uniform(*, logits: jax.Array) -> jax.Array:
  """Closed-form KL(Cat(softmax(logits)) || Uniform(K)) = log K - H(q).

  The uniform prior is over all K columns; a masked class (logit -inf) has q_k = 0
  and adds nothing, so KL = KL(q_sub || Uniform(K_sub)) + log(K / K_sub) over the
  K_sub unmasked classes (finite value and gradient).

  Args:
    logits: [B, K] logits.

  Returns:
    [B] KL divergences in nats, in [0, log K].

  >>> import jax.numpy as jnp
  >>> categorical_kl_to_uniform(logits=jnp.zeros((1, 4))).tolist()
  [0.0]
  """
  return math.log(logits.shape[-1]) - categorical_entropy(logits=logits)


def categorical_entropy(*, logits: jax.Array) -> jax.Array:
  """Entropy H(q) = -sum_k q_k log q_k of Cat(softmax(logits)).

  A logit of -inf masks its class (q_k = 0, and 0 log 0 = 0): the value and the
  gradient equal those over the unmasked classes alone. Finite logits give the same
  bits as the plain formula.

  Args:
    logits: [..., K] logits.

  Returns:
    [...] entropies in nats.

  >>> import jax.numpy as jnp
  >>> round(float(categorical_entropy(logits=jnp.zeros((2,)))), 4)
  0.6931
  """
  log_probs = jax.nn.log_softmax(unmask_logits(logits), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


# ----------------------------------------------------------------------------------
# Gumbel-softmax temperature schedules, evaluated inside the jitted step.


def annealed_temperature(step: jax.Array, *, initial: float, floor: float,
                         anneal_rate: float) -> jax.Array:
  """tau(t) = max(floor, initial * exp(-anneal_rate * t)) (Jang et al., 2017).

  ``anneal_rate = 0`` gives the constant schedule tau = initial.

  Args:
    step: scalar integer training step t.
    initial: temperature at step 0.
    floor: lower limit of the temperature.
    anneal_rate: decay per step (>= 0).

  Returns:
    scalar float32 temperature.

  >>> round(float(annealed_temperature(0, initial=1.0, floor=0.5, anneal_rate=1e-3)), 3)
  1.0
  >>> round(float(annealed_temperature(10_000, initial=1.0, floor=0.5, anneal_rate=1e-3)), 3)
  0.5
  """
  decayed = initial * jnp.exp(-anneal_rate * jnp.asarray(step, jnp.float32))
  return jnp.maximum(jnp.float32(floor), decayed)
