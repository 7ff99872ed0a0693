"""How much the Gaussian latent dims are used: Burda et al.'s active units and each dim's
influence on the decoded image. Conventions: evaluation/common.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vmivae_jax.evaluation import common
from vmivae_jax.model import vmi as model_lib

ACTIVE_UNIT_THRESHOLD = 0.01
INFLUENCE_DELTA = 1.0


def active_units(posterior_means: np.ndarray, *,
                 threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, np.ndarray]:
  """Burda et al.'s active units: dims u with Cov_x(E_q[z_u | x]) > threshold.

  Args:
    posterior_means: [N, D] E_q[z | x] for N examples.
    threshold: activity threshold (0.01 in Burda et al.).

  Returns:
    (number of active dims, [D] variances over the examples).
  """
  variances = np.var(np.asarray(posterior_means, np.float64), axis=0)
  return int(np.sum(variances > threshold)), variances


@functools.partial(jax.jit, static_argnames=('model',))
def _influence_batch(model, vae_vars, gaussian, categorical, delta):
  """[B, D] mean |x'(mu + delta e_d) - x'(mu - delta e_d)| / (2 delta) over pixels."""
  b, d = gaussian.shape
  shift = delta * jnp.eye(d, dtype=gaussian.dtype)                         # [D, D]
  moved = jnp.stack([gaussian[None] + shift[:, None], gaussian[None] - shift[:, None]])
  cat = jnp.broadcast_to(categorical, (2, d) + categorical.shape)
  code = jnp.concatenate([moved, cat], axis=-1).reshape(2 * d * b, -1)
  x_prime = common.decode_mean(model, vae_vars, code).reshape(2, d, b, -1)
  change = jnp.mean(jnp.abs(x_prime[0] - x_prime[1]), axis=-1) / (2.0 * delta)  # [D, B]
  return change.T


def latent_influence(model: model_lib.VMIModel, vae_vars: dict, posterior_means: np.ndarray,
                     posterior_logits: tuple = (), *, delta: float = INFLUENCE_DELTA,
                     max_decodes: int = 16384) -> np.ndarray:
  """[D] mean absolute per-pixel change of x' per unit change of each Gaussian dim.

  Central finite difference at the posterior mean of each example,
  |x'(mu + delta e_d) - x'(mu - delta e_d)| / (2 delta), averaged over pixels and
  examples; codes are fixed at the posterior mode (one-hot argmax of q(c|x)). In
  units of the pixel range (divided by high - low), so [0, 1] and [-1, 1] models
  compare. Each jitted call decodes about ``max_decodes`` codes (2 D per example).
  """
  model = common.local_model(model)
  means = np.asarray(posterior_means, np.float32)
  cat = np.concatenate(
      [np.zeros((len(means), 0), np.float32)] +
      [np.eye(l.shape[-1], dtype=np.float32)[np.argmax(l, -1)] for l in posterior_logits],
      axis=-1)
  joint = np.concatenate([means, cat], axis=-1)
  d = means.shape[1]
  per_example = common.map_batches(
      lambda b, _: _influence_batch(model, vae_vars, b[:, :d], b[:, d:], jnp.float32(delta)),
      joint, max(1, max_decodes // max(2 * d, 1)), jax.random.PRNGKey(0))
  low, high = model.pixel_range
  return np.mean(per_example.astype(np.float64), axis=0) / (high - low)
