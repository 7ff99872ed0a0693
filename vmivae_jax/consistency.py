"""Invariance losses for the categorical code's posterior q(c|x), and a mixture prior.

Pure functions that import nothing but jax. Logits are [B, K] (the encoder's logits of
q(c|x) for one K-way code); per-example losses return [B] and batch-level quantities
(the IIC mutual information) return a scalar and say so.

* :func:`consistency_kl` / :func:`consistency_cross_entropy`: KL(q(c|x) || q(c|T(x)))
  for a random transform T (VAT, Miyato et al. 2018; UDA, Xie et al. 2020; IMSAT's
  augmentation variant, Hu et al. 2017).
* :func:`paired_assignment_mi`: IIC's I(c; c') between the codes of paired views
  (Ji, Henriques & Vedaldi 2019).
* :func:`vat_perturbation` / :func:`vat_loss`: virtual adversarial training, the
  perturbation that changes q(c|x) most (Miyato et al. 2018; used by IMSAT), and
  :func:`knn_epsilon` for IMSAT's per-example radius.
* :func:`nearest_neighbours` / :func:`neighbour_consistency`: SCAN's agreement between
  the codes of an example and of one of its nearest neighbours in a feature space (Van
  Gansbeke et al. 2020; MIST and DGG use such pairs too).
* :func:`conditional_gaussian_kl`: sum_c q(c|x) KL(q(z|x) || p(z|c)), a learned
  Gaussian-mixture prior for the Gaussian group (GMVAE, Dilokthanakul et al. 2016;
  VaDE, Jiang et al. 2017).

>>> import jax.numpy as jnp
>>> from vmivae_jax import consistency
>>> logits = jnp.array([[2.0, 0.0, -1.0]])
>>> consistency.consistency_kl(logits=logits, perturbed_logits=logits).tolist()
[0.0]
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    'consistency_kl',
    'consistency_cross_entropy',
    'symmetric_consistency_kl',
    'paired_assignment_joint',
    'paired_assignment_mi',
    'vat_perturbation',
    'vat_loss',
    'knn_epsilon',
    'nearest_neighbours',
    'neighbour_consistency',
    'conditional_gaussian_kl',
]


# ----------------------------------------------------------------------------------
# Consistency between q(c|x) and q(c|T(x)).


def consistency_kl(*, logits: jax.Array, perturbed_logits: jax.Array,
                   stop_gradient_clean: bool = True) -> jax.Array:
  """KL(q(c|x) || q(c|T(x))) = sum_k p_k (log p_k - log p'_k), one value per example.

  The VAT / UDA / IMSAT consistency term. With ``stop_gradient_clean`` (default) the
  clean posterior is a fixed target and only the perturbed branch gets gradients.

  Args:
    logits: [B, K] logits of q(c|x) on the clean input.
    perturbed_logits: [B, K] logits of q(c|T(x)).
    stop_gradient_clean: treat the clean side as a constant.

  Returns:
    [B] KL divergences in nats (>= 0).

  >>> import jax.numpy as jnp
  >>> kl = consistency_kl(logits=jnp.log(jnp.array([[0.5, 0.5]])),
  ...                     perturbed_logits=jnp.log(jnp.array([[0.25, 0.75]])))
  >>> round(float(kl[0]), 4)  # 0.5 log 2 + 0.5 log(2/3)
  0.1438
  """
  if stop_gradient_clean:
    logits = jax.lax.stop_gradient(logits)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_q = jax.nn.log_softmax(perturbed_logits, axis=-1)
  p = jnp.exp(log_p)
  # p log p is 0 where p underflows to 0 (log_p = -inf would give nan otherwise).
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def consistency_cross_entropy(*, logits: jax.Array, perturbed_logits: jax.Array,
                              stop_gradient_clean: bool = True) -> jax.Array:
  """Cross-entropy -sum_k p_k log p'_k = KL(p || p') + H(p), one value per example.

  With a stop-gradient clean side its gradient equals :func:`consistency_kl`'s; without
  it, it also lowers H(p) (sharpens the clean prediction), which the KL does not.

  >>> import jax.numpy as jnp
  >>> round(float(consistency_cross_entropy(logits=jnp.zeros((1, 4)),
  ...                                       perturbed_logits=jnp.zeros((1, 4)))[0]), 4)
  1.3863
  """
  if stop_gradient_clean:
    logits = jax.lax.stop_gradient(logits)
  p = jax.nn.softmax(logits, axis=-1)
  return -jnp.sum(p * jax.nn.log_softmax(perturbed_logits, axis=-1), axis=-1)


def symmetric_consistency_kl(*, logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """0.5 [KL(p_a || p_b) + KL(p_b || p_a)] per example, gradients to both views.

  For two augmented views where neither is the clean reference.
  """
  return 0.5 * (consistency_kl(logits=logits_a, perturbed_logits=logits_b,
                               stop_gradient_clean=False)
                + consistency_kl(logits=logits_b, perturbed_logits=logits_a,
                                 stop_gradient_clean=False))


# ----------------------------------------------------------------------------------
# IIC: mutual information between the codes of paired views.


def paired_assignment_joint(*, probs_a: jax.Array, probs_b: jax.Array) -> jax.Array:
  """[K, K] symmetrised joint P = (P' + P'^T) / 2, P' = mean_i p_a(i) p_b(i)^T."""
  joint = jnp.einsum('bi,bj->ij', probs_a, probs_b) / probs_a.shape[0]
  return 0.5 * (joint + joint.T)


def paired_assignment_mi(*, probs_a: jax.Array, probs_b: jax.Array,
                         marginal_weight: float = 1.0, eps: float = 1e-12,
                         axis_name: str | None = None) -> jax.Array:
  """IIC objective I(c; c') = sum_ij P_ij (log P_ij - w log P_i - w log P_j). SCALAR.

  A batch-level quantity (not per example): P is the symmetrised joint of
  :func:`paired_assignment_joint` over the whole batch, P_i / P_j its marginals.
  Maximise it (the loss is its negative). With w = ``marginal_weight`` = 1 it is the
  mutual information (Ji et al. 2019, eq. 3): log K for perfectly agreeing one-hot
  assignments with uniform classes, 0 for independent ones. w > 1 (IIC's later code
  uses ``lamb``) weights the marginal entropy more, discouraging degenerate clusters.
  P is clamped below at ``eps`` before the logs, as IIC does.

  Args:
    probs_a, probs_b: [B, K] code probabilities q(c|x) and q(c|T(x)) of paired views.
    axis_name: data-parallel axis (inside shard_map): P is then the joint of the whole
      global batch (the mean of equal per-device slices' joints), so the value does not
      depend on the device count.

  Returns:
    Scalar mutual information in nats.

  >>> import jax.numpy as jnp
  >>> p = jnp.eye(4)
  >>> round(float(paired_assignment_mi(probs_a=p, probs_b=p)), 4)  # log 4
  1.3863
  """
  joint = paired_assignment_joint(probs_a=probs_a, probs_b=probs_b)
  if axis_name is not None:
    joint = jax.lax.pmean(joint, axis_name)
  joint = jnp.maximum(joint, eps)
  p_i = jnp.sum(joint, axis=1, keepdims=True)
  p_j = jnp.sum(joint, axis=0, keepdims=True)
  return jnp.sum(joint * (jnp.log(joint) - marginal_weight * jnp.log(p_i)
                          - marginal_weight * jnp.log(p_j)))


# ----------------------------------------------------------------------------------
# Virtual adversarial training.


def _normalise_per_example(d: jax.Array, eps: float = 1e-12) -> jax.Array:
  """d / ||d||_2 with the norm over all but the leading (batch) axis."""
  axes = tuple(range(1, d.ndim))
  norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
  return d / jnp.maximum(norm, eps)


def vat_perturbation(logits_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
                     key: jax.Array, *, epsilon: jax.Array | float, xi: float = 0.0,
                     num_power_iterations: int = 1,
                     clean_logits: jax.Array | None = None,
                     start: jax.Array | None = None) -> jax.Array:
  """r_adv = epsilon * d, d ~ the dominant eigenvector of each example's KL Hessian.

  Miyato et al. (2018), eq. 12-13: the KL D(r) = KL(p(c|x) || p(c|x + r)) has D(0) = 0
  and grad D(0) = 0, so D(r) ~ r^T H r / 2 with H = J^T F J (J the Jacobian of the
  logits in x, F the softmax's Fisher matrix). Power iteration from a random d:

    d <- normalise(H d),   H d ~ grad_r D(r)|_{r = xi d} / xi   (finite difference),

  normalised per example. ``xi = 0`` (default) uses the exact Hessian-vector product
  H d instead (forward-over-reverse autodiff at r = 0, no step size to tune). The paper's
  xi = 1e-6 is unusable in float32: x + xi d rounds back to x for pixels near 1, and on
  MNIST with a random 784-256-10 MLP its direction had median cosine 0.53 (min -0.86)
  to the exact H d; xi = 1e-4..1e-1 gave >= 0.98 (1e-2: 1.0000), xi = 10 (IMSAT's code)
  0.92 (min 0.49).

  With a ``logits_fn`` that treats examples independently (no batch statistics) the
  batch-summed KL's gradient is each example's own. One that normalises with the
  perturbed batch's own statistics (IMSAT's code; ``model.classifier``) also passes the
  other examples' terms into each direction. The result carries no gradient.

  Args:
    logits_fn: pure function images [B, ...] -> logits [B, K].
    images: [B, ...] inputs (any shape after the batch axis).
    key: PRNG key for the random start.
    epsilon: scalar or [B] radius (L2 norm over all of an example's pixels).
    xi: finite-difference step, or 0 for the exact Hessian-vector product.
    num_power_iterations: power-iteration steps (1 in the paper).
    clean_logits: [B, K] logits_fn(images) if already computed.
    start: [B, ...] the power iteration's (unnormalised) random start, e.g. a slice of
      a draw for the global batch; drawn as N(0, I) from ``key`` when None.

  Returns:
    [B, ...] r_adv with ||r_adv[b]||_2 = epsilon[b].
  """
  images = jax.lax.stop_gradient(images)
  if clean_logits is None:
    clean_logits = logits_fn(images)
  clean_logits = jax.lax.stop_gradient(clean_logits)

  def kl_sum(r):
    return jnp.sum(consistency_kl(logits=clean_logits, perturbed_logits=logits_fn(images + r)))

  grad_kl = jax.grad(kl_sum)
  if start is None:
    start = jax.random.normal(key, images.shape, images.dtype)
  d = _normalise_per_example(start)

  def power_step(_, d):
    if xi == 0:
      hd = jax.jvp(grad_kl, (jnp.zeros_like(images),), (d,))[1]
    else:
      hd = grad_kl(xi * d)
    return _normalise_per_example(hd)

  d = jax.lax.fori_loop(0, num_power_iterations, power_step, d)
  epsilon = jnp.asarray(epsilon, images.dtype)
  epsilon = jnp.reshape(epsilon, epsilon.shape + (1,) * (images.ndim - epsilon.ndim))
  return jax.lax.stop_gradient(epsilon * d)


def vat_loss(logits_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
             key: jax.Array, *, epsilon: jax.Array | float, xi: float = 0.0,
             num_power_iterations: int = 1,
             clean_logits: jax.Array | None = None) -> jax.Array:
  """LDS: KL(p(c|x) || p(c|x + r_adv)) per example, p(c|x) a stop-gradient target.

  Miyato et al. (2018), eq. 9-10 (the "local distributional smoothness" penalty);
  IMSAT's R_vat (Hu et al. 2017, eq. 5). Gradients reach the model only through
  ``logits_fn(images + r_adv)``; pass the clean logits from the main forward pass as
  ``clean_logits`` to save a forward. Arguments as :func:`vat_perturbation`.

  Returns:
    [B] KL divergences in nats.

  >>> import jax, jax.numpy as jnp
  >>> w = jnp.array([[1.0, -1.0], [0.5, 2.0]])
  >>> loss = vat_loss(lambda x: x @ w, jnp.ones((3, 2)), jax.random.key(0), epsilon=0.1)
  >>> loss.shape, bool(jnp.all(loss > 0))
  ((3,), True)
  """
  if clean_logits is None:
    clean_logits = logits_fn(images)
  r_adv = vat_perturbation(logits_fn, images, key, epsilon=epsilon, xi=xi,
                           num_power_iterations=num_power_iterations,
                           clean_logits=clean_logits)
  return consistency_kl(logits=clean_logits, perturbed_logits=logits_fn(images + r_adv),
                        stop_gradient_clean=True)


def knn_epsilon(queries: jax.Array, references: jax.Array, *, k: int = 10,
                scale: float = 0.25, exclude_self: bool = True) -> jax.Array:
  """IMSAT's adaptive radius: eps(x) = scale * ||x - (k-th nearest reference)||_2.

  Hu et al. (2017), sec. 4.1: k = 10, scale = 0.25 with neighbours over the whole
  training set (compute once, in chunks of queries, and look eps up by example index);
  neighbours within one batch are farther apart, so a batch-only estimate is larger.

  Args:
    queries: [B, ...] inputs. references: [N, ...] inputs (may be ``queries`` itself).
    k: neighbour rank. scale: multiplier.
    exclude_self: skip one zero distance per query (queries are among references).

  Returns:
    [B] radii.

  >>> import jax.numpy as jnp
  >>> x = jnp.array([[0.0], [1.0], [3.0]])
  >>> knn_epsilon(x, x, k=1, scale=1.0).tolist()
  [1.0, 1.0, 2.0]
  """
  q = queries.reshape(queries.shape[0], -1).astype(jnp.float32)
  r = references.reshape(references.shape[0], -1).astype(jnp.float32)
  sq = (jnp.sum(q * q, 1)[:, None] + jnp.sum(r * r, 1)[None, :] - 2.0 * q @ r.T)
  sq = jnp.maximum(sq, 0.0)
  rank = k + 1 if exclude_self else k
  smallest = -jax.lax.top_k(-sq, rank)[0]         # ascending squared distances
  return scale * jnp.sqrt(smallest[:, rank - 1])


# ----------------------------------------------------------------------------------
# Nearest neighbours in a feature space (SCAN).


def nearest_neighbours(features: jax.Array, *, k: int, chunk_size: int = 512) -> jax.Array:
  """Indices of each example's ``k`` nearest other examples by cosine similarity.

  Computed once per run over the whole training set, in chunks of ``chunk_size``
  queries (memory chunk_size x N); ties go to the lower index. An example is never its
  own neighbour (an exact duplicate elsewhere in the set can be).

  Args:
    features: [N, ...] one feature vector per example (flattened; e.g. the pixels).
    k: neighbours per example, 1 <= k < N.
    chunk_size: queries per matrix product.

  Returns:
    [N, k] int32, nearest first.

  >>> import jax.numpy as jnp
  >>> x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  >>> nearest_neighbours(x, k=1).tolist()
  [[1], [0], [3], [2]]
  """
  n = features.shape[0]
  if not 1 <= k < n:
    raise ValueError(f'k={k} nearest neighbours need 1 <= k < N = {n} examples')
  f = features.reshape(n, -1).astype(jnp.float32)
  f = f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  chunks = -(-n // chunk_size)
  queries = jnp.arange(chunks * chunk_size).reshape(chunks, chunk_size)

  def one_chunk(rows):
    similarity = f[jnp.minimum(rows, n - 1)] @ f.T            # [chunk, N]
    similarity = jnp.where(rows[:, None] == jnp.arange(n)[None, :], -jnp.inf, similarity)
    return jax.lax.top_k(similarity, k)[1].astype(jnp.int32)

  return jax.lax.map(one_chunk, queries).reshape(-1, k)[:n]


def neighbour_consistency(*, logits: jax.Array, neighbour_logits: jax.Array) -> jax.Array:
  """SCAN's consistency: -log sum_c q(c|x) q(c|n), n a neighbour of x ([B, K] each -> [B]).

  Zero only when both put all their mass on the same class; gradients reach both sides
  (Van Gansbeke et al. 2020, eq. 2, whose entropy term is the information term here).

  >>> import jax.numpy as jnp
  >>> sure = jnp.array([[30.0, 0.0]])
  >>> abs(round(float(neighbour_consistency(logits=sure, neighbour_logits=sure)[0]), 6))
  0.0
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_q = jax.nn.log_softmax(neighbour_logits, axis=-1)
  return -jax.nn.logsumexp(log_p + log_q, axis=-1)


# ----------------------------------------------------------------------------------
# Mixture prior for the Gaussian group.


def conditional_gaussian_kl(*, mean: jax.Array, logvar: jax.Array, code_probs: jax.Array,
                            prior_means: jax.Array, prior_logvars: jax.Array) -> jax.Array:
  """sum_c q(c|x) KL(N(mean, e^logvar) || N(prior_means[c], e^prior_logvars[c])), per example.

  Closed form per component, summed over the D dims:
    KL_c = 0.5 sum_d [lv_c - lv + (e^lv + (m - mu_c)^2) e^-lv_c - 1].
  The Gaussian-group term of a GMVAE/VaDE prior p(z, c) = p(c) N(z; mu_c, sigma_c^2);
  the code's own term KL(q(c|x) || p(c)) is separate. With learned prior_means the
  Gaussian need not encode the class: the code does (Jiang et al. 2017, eq. 17).

  Args:
    mean, logvar: [B, D] q(z|x). code_probs: [B, K] q(c|x).
    prior_means, prior_logvars: [K, D] component parameters.

  Returns:
    [B] KL in nats.

  >>> import jax.numpy as jnp
  >>> kl = conditional_gaussian_kl(mean=jnp.zeros((1, 2)), logvar=jnp.zeros((1, 2)),
  ...                              code_probs=jnp.array([[1.0, 0.0]]),
  ...                              prior_means=jnp.array([[0.0, 0.0], [1.0, 1.0]]),
  ...                              prior_logvars=jnp.zeros((2, 2)))
  >>> kl.tolist()
  [0.0]
  """
  m, lv = mean[:, None, :], logvar[:, None, :]                  # [B, 1, D]
  mu, plv = prior_means[None], prior_logvars[None]              # [1, K, D]
  per_component = 0.5 * jnp.sum(
      plv - lv + (jnp.exp(lv) + jnp.square(m - mu)) * jnp.exp(-plv) - 1.0, axis=-1)
  return jnp.sum(code_probs * per_component, axis=-1)

