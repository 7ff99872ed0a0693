"""Space-to-depth helpers and the patch-matrix formulations of the 4x4 stride-2 conv.

Pure JAX. ``conv(x, k_mat)`` is ``conv_ops.conv4x4_stride2`` as the patch matrix
``patches(x)`` [B, H/2, W/2, 16C] times the [16C, O] kernel matrix ``s2d_kernel(kernel)``
reshaped; ``conv_transpose(x, k_mat)`` is its adjoint, the transpose conv. Both have
custom VJPs (one matmul per gradient, and the patch matrix or its adjoint). They serve
layers with few channels on the narrow side: the networks' 1-channel image ends, which
XLA:CPU's convolutions run far below their usual rate (benchmarks/CONV.md, "The
1-channel image ends"). ``conv_ops`` picks them (``'patches'``, ``'adjoint_patches'``)
and shares the helpers here.
"""

import jax
import jax.numpy as jnp


def space_to_depth_padded(x: jax.Array) -> jax.Array:
  """Pad by 1, then s[b, u, v, (p, q, c)] = xp[b, 2u + p, 2v + q, c]: [B, H/2+1, W/2+1, 4C]."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  s = xp.reshape(b, h // 2 + 1, 2, w // 2 + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return s.reshape(b, h // 2 + 1, w // 2 + 1, 4 * c)


def s2d_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, C, O] -> [2, 2, 4C, O]: tap (a, e) of the 2x2 conv on space-to-depth input,
  channel (p, q, c), holds kernel[2a + p, 2e + q, c]."""
  c, o = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5)   # [a, e, p, q, c, o]
  return k.reshape(2, 2, 4 * c, o)


def patches(x: jax.Array) -> jax.Array:
  """The 4x4 stride-2 pad-1 patch matrix in space-to-depth order: [B, H/2, W/2, 16C],
  channel (a, e, p, q, c) holding xpad[b, 2(i + a) + p, 2(j + e) + q, c] (the row order
  of ``s2d_kernel(kernel).reshape(16C, O)``)."""
  h, w = x.shape[1:3]
  s = space_to_depth_padded(x)
  return jnp.concatenate([s[:, a:a + h // 2, e:e + w // 2] for a in (0, 1) for e in (0, 1)],
                         axis=-1)


def patches_adjoint(z: jax.Array, h: int, w: int) -> jax.Array:
  """The adjoint of ``patches`` (col2im): [B, H/2, W/2, 16C] -> [B, H, W, C]."""
  b, ho, wo, k = z.shape
  c = k // 16
  s = None
  for t, (a, e) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
    piece = jnp.pad(z[..., 4 * c * t:4 * c * (t + 1)], ((0, 0), (a, 1 - a), (e, 1 - e), (0, 0)))
    s = piece if s is None else s + piece                                  # [B, ho+1, wo+1, 4C]
  s = s.reshape(b, ho + 1, wo + 1, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return s.reshape(b, h + 2, w + 2, c)[:, 1:h + 1, 1:w + 1]


def _varying_axes(value: jax.Array) -> frozenset:
  manual = getattr(jax.typeof(value), 'manual_axis_type', None)
  return getattr(manual, 'varying', frozenset())


def like_primal(grad: jax.Array, primal: jax.Array) -> jax.Array:
  """Sums ``grad`` over the shard_map axes it varies over but ``primal`` does not.

  Inside shard_map a replicated operand (a parameter) used with per-device data is
  implicitly cast to device-varying; the transpose of that cast is a psum, which a
  custom VJP has to apply itself (JAX checks that the cotangent's type matches).
  """
  extra = tuple(sorted(_varying_axes(grad) - _varying_axes(primal)))
  return jax.lax.psum(grad, extra) if extra else grad


@jax.custom_vjp
def conv(x: jax.Array, k_mat: jax.Array) -> jax.Array:
  """conv4x4_stride2 as ``patches(x) @ k_mat`` (k_mat: [16C, O], ``s2d_kernel`` rows)."""
  return jnp.dot(patches(x), k_mat)


def _conv_patches_fwd(x, k_mat):
  p = patches(x)
  return jnp.dot(p, k_mat), (x, p, k_mat)


def _conv_patches_bwd(res, g):
  x, p, k_mat = res
  dx = patches_adjoint(jnp.dot(g, k_mat.T), *x.shape[1:3])
  dk = jnp.einsum('bijk,bijo->ko', p, g)
  return like_primal(dx, x), like_primal(dk, k_mat)


conv.defvjp(_conv_patches_fwd, _conv_patches_bwd)


@jax.custom_vjp
def conv_transpose(x: jax.Array, k_mat: jax.Array) -> jax.Array:
  """conv_transpose4x4_stride2 as ``col2im(x @ k_mat)``: the adjoint of ``conv``
  with k_mat [C, 16 O] the transposed ``s2d_kernel`` rows of the adjoint kernel."""
  h, w = x.shape[1:3]
  return patches_adjoint(jnp.dot(x, k_mat), 2 * h, 2 * w)


def _deconv_patches_fwd(x, k_mat):
  return conv_transpose(x, k_mat), (x, k_mat)


def _deconv_patches_bwd(res, g):
  x, k_mat = res
  pg = patches(g)                                                         # [B, H, W, 16 O]
  dx = jnp.dot(pg, k_mat.T)
  # [16 O, C] then transposed: XLA:CPU runs this orientation as one library matmul,
  # while 'bijc,bijk->ck' became a transpose of x and a slow generic dot.
  dk = jnp.einsum('bijk,bijc->kc', pg, x).T
  return like_primal(dx, x), like_primal(dk, k_mat)


conv_transpose.defvjp(_deconv_patches_fwd, _deconv_patches_bwd)
