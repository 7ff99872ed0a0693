"""Formulations of the strided 4x4 convolutions of the conv family, selectable by name.

Pure JAX. Every formulation computes exactly (up to the order of float additions)

* ``conv4x4_stride2(x, k)`` = ``lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)))``
  (NHWC / HWIO: ``nn.Conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))``,
  PyTorch's ``Conv2d(c, f, 4, 2, 1)``), ``[B, H, W, C] x [4, 4, C, O] -> [B, H/2, W/2, O]``;
* ``conv_transpose4x4_stride2(x, k)`` = ``lax.conv_transpose(x, k, (2, 2), 'SAME')``
  (``nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding='SAME')``, PyTorch's
  ``ConvTranspose2d(c, f, 4, 2, 1)`` up to the kernel's flip),
  ``[B, H, W, C] x [4, 4, C, O] -> [B, 2H, 2W, O]``,

and differentiates to the same gradients (``tests/test_conv_ops.py``). They exist for
speed on XLA:CPU, whose own strided and input-dilated convolutions (the gradients of
convolutions) are slow; ``benchmarks/conv_step.py`` times them against PyTorch.

Formulations (``CONV_IMPLS``, ``DECONV_IMPLS``); the defaults are the fastest measured:

* ``'lax_vjp'`` (default conv): ``lax.conv_general_dilated`` forward, which XLA:CPU
  (jaxlib 0.10.2) hands to YNNPACK, with a custom VJP whose two gradients are also
  YNNPACK convolutions: the kernel gradient as a canonical NHWC conv (channels as batch,
  batch as features, optimisation barriers so XLA cannot fold the transposes back into
  a form it runs on its slow generic path), and the input gradient as a 2x2 stride-1
  conv in space-to-depth coordinates instead of autodiff's input-dilated conv.
* ``'adjoint_lax'``: the transpose conv as the exact adjoint of that strided conv with
  the flipped, in/out-swapped kernel (forward: the space-to-depth input adjoint;
  gradients: the strided forward conv and the canonical kernel-gradient conv), a custom
  VJP. ``'auto'`` (default transpose conv): ``'adjoint_lax'``, or ``'adjoint_patches'``
  (below) for the decoder's 1-channel last layer.
* ``'patches'``: for few channels (the encoder's and Q's first layer read one channel),
  the space-to-depth patch matrix ``[B, H/2, W/2, 16C]`` times the ``[16C, O]`` kernel,
  with a custom VJP: kernel gradient ``patches^T g`` (one matmul) and input gradient
  ``col2im(g K^T)`` (one matmul, then the patch matrix's adjoint: four padded adds and
  depth-to-space). XLA:CPU's convolutions with one input or output channel run at a
  fraction of their rate on wide layers; with C = 1 the patch matrix is only 16x the image.
  ``'auto'`` (default conv): ``'patches'`` for fewer than ``FEW_CHANNELS`` input
  channels, else ``'lax_vjp'``. The transpose conv's ``'adjoint_patches'`` is its
  adjoint (``col2im(x K)``), which ``'auto'`` picks for fewer than ``FEW_CHANNELS``
  output channels (the decoder's last layer).
* ``'lax'``: the plain lax reference (autodiff's input-dilated convolutions are slow).
* ``'im2col'``: 16 strided slices of the padded input concatenated on channels, one
  matmul (the repo's earlier formulation).
* ``'s2d'``: space-to-depth of the padded input (one transpose, 4C channels), then the
  4x4 stride-2 conv is a 2x2 stride-1 conv: 4 contiguous shifted slices concatenated,
  one matmul with the same contraction (16C) as im2col.
* ``'s2d_conv'``: space-to-depth, then ``lax`` 2x2 stride-1 VALID conv.
* ``'s2d_taps'``: space-to-depth, then 4 matmuls (one per 2x2 tap, contraction 4C)
  accumulated into one buffer (no concatenated patch matrix).
* ``'im2col_nchw'``: as im2col, computed in channel-major layout inside (a layout test).
* Transpose conv ``'phases'``: one matmul per output phase on 2x2 patches (the repo's
  earlier default for O >= 16); ``'adjoint'``: one matmul of the unpadded input
  to all 16 taps (``Z = x @ K``, no input copies), then the 16 tap blocks are added into
  the output on a stride-2 grid with interior pads (the repo's default for O < 16);
  ``'adjoint_phases'``: the same ``Z``, with each of the 4 output phases the sum of 4
  shifted slices of ``Z`` (no interior padding), then interleaved;
  ``'vjp:<conv impl>'``: the exact adjoint, ``jax.linear_transpose`` of the conv
  formulation named after the colon with the flipped, in/out-swapped kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vmivae_jax.model import conv_patches
from vmivae_jax.util import cpu_affinity

DN = ('NHWC', 'HWIO', 'NHWC')

CONV_IMPLS = ('lax', 'auto', 'lax_vjp', 'patches', 's2d_conv', 'im2col', 's2d', 's2d_taps',
              'im2col_nchw')
DECONV_IMPLS = ('lax', 'auto', 'adjoint_lax', 'adjoint_patches', 'vjp:s2d_conv', 'phases',
                'adjoint', 'adjoint_phases', 'vjp:im2col', 'vjp:s2d', 'vjp:lax')
# Layers with fewer channels than this on their narrow side (the 1-channel image ends of
# the networks) take the patch-matrix formulations under 'auto' (benchmarks/CONV.md).
FEW_CHANNELS = 4


# ----------------------------------------------------------------------------------
# Strided conv: [B, H, W, C] x [4, 4, C, O], padding 1, stride 2 -> [B, H/2, W/2, O].


def conv4x4_stride2(x: jax.Array, kernel: jax.Array, impl: str = 'auto') -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))`` in NHWC/HWIO."""
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  ho, wo = h // 2, w // 2
  if impl == 'auto':
    impl = 'patches' if c < FEW_CHANNELS else 'lax_vjp'
  if impl == 'lax' or h % 2 or w % 2:
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                        dimension_numbers=DN)
  if impl == 'im2col':
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, di:di + 2 * ho:2, dj:dj + 2 * wo:2]
                               for di in range(4) for dj in range(4)], axis=-1)
    return jnp.dot(patches, kernel.reshape(16 * c, o)).reshape(b, ho, wo, o)
  if impl == 'im2col_nchw':
    xp = jnp.pad(x.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))   # [B, C, H+2, W+2]
    patches = jnp.stack([xp[:, :, di:di + 2 * ho:2, dj:dj + 2 * wo:2]
                         for di in range(4) for dj in range(4)], axis=2)   # [B, C, 16, ho, wo]
    k = kernel.transpose(3, 2, 0, 1).reshape(o, 16 * c)                     # [O, (C, di, dj)]
    y = jnp.einsum('ok,bkp->bop', k, patches.reshape(b, 16 * c, ho * wo))
    return y.reshape(b, o, ho, wo).transpose(0, 2, 3, 1)
  if impl == 's2d':
    s = conv_patches.space_to_depth_padded(x)
    patches = jnp.concatenate([s[:, a:a + ho, e:e + wo] for a in (0, 1) for e in (0, 1)],
                              axis=-1)                                       # [B, ho, wo, 16C]
    return jnp.dot(patches, conv_patches.s2d_kernel(kernel).reshape(16 * c, o))
  if impl == 'lax_vjp':
    return _conv_lax(x, kernel)
  if impl == 'patches':
    return conv_patches.conv(x, conv_patches.s2d_kernel(kernel).reshape(16 * c, o))
  if impl == 's2d_conv':
    return jax.lax.conv_general_dilated(conv_patches.space_to_depth_padded(x),
                                        conv_patches.s2d_kernel(kernel), (1, 1),
                                        'VALID', dimension_numbers=DN)
  if impl == 's2d_taps':
    s = conv_patches.space_to_depth_padded(x)
    k = conv_patches.s2d_kernel(kernel)
    y = None
    for a in (0, 1):
      for e in (0, 1):
        t = jnp.dot(s[:, a:a + ho, e:e + wo], k[a, e])
        y = t if y is None else y + t
    return y
  raise ValueError(f'unknown conv implementation {impl!r}')


# ----------------------------------------------------------------------------------
# Transpose conv: [B, H, W, C] x [4, 4, C, O] -> [B, 2H, 2W, O], lax.conv_transpose SAME.


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """The kernel of the stride-2 conv whose input-adjoint is the transpose conv."""
  return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)                    # [4, 4, O, C]


def _interleave_phases(phases, b, h, w, o):
  """phases[(p, q)] [B, H, W, O] (p, q in {0, 1}, row-major) -> [B, 2H, 2W, O]."""
  y = jnp.stack(phases, axis=3).reshape(b, h, w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, o)


def _lax_conv(u: jax.Array, k: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(u, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)


def _lax_conv_kernel_grad(x: jax.Array, g: jax.Array, materialize: bool = False
                          ) -> jax.Array:
  """d/dk of <conv(x, k), g> = sum_{b,i,j} xpad[b, 2i + di, 2j + dj, c] g[b, i, j, o].

  Written as the canonical NHWC conv that XLA:CPU hands to YNNPACK: the channels of x
  act as the batch, the batch as the contracted feature, g as a [ho, wo, B, O] kernel
  dilated by 2. The optimisation barriers keep XLA from folding the two transposes
  back into the convolution's dimension numbers (f01b_i01o->01bf), a form it runs on
  its slow generic convolution path (about 20x slower inside the train step).
  """
  h, w = x.shape[1:3]
  ho, wo = g.shape[1:3]
  if materialize:
    # x is a forward activation, relu(conv + bias): XLA fuses that elementwise producer
    # into the transpose below, a fusion whose strided loop runs several times slower
    # than a plain transpose (the optimisation barriers are gone by then). A product with the identity
    # (exact for finite x) is a library matmul XLA cannot fuse, so the transpose reads a
    # materialised x; it costs C multiply-adds per element, far less than it saves.
    x = jnp.dot(x, jnp.eye(x.shape[-1], dtype=x.dtype))
  lhs = jax.lax.optimization_barrier(x.transpose(3, 1, 2, 0))              # [C, H, W, B]
  rhs = jax.lax.optimization_barrier(g.transpose(1, 2, 0, 3))              # [ho, wo, B, O]
  # Tap di reads padded rows di + 2i, i < ho: padding 1 before and 2 ho + 1 - H after
  # (1 for even H) gives exactly 4 taps.
  dk = jax.lax.conv_general_dilated(
      lhs, rhs, (1, 1), ((1, 4 - h - 1 + 2 * (ho - 1)), (1, 4 - w - 1 + 2 * (wo - 1))),
      rhs_dilation=(2, 2), dimension_numbers=DN)                            # [C, 4, 4, O]
  return dk.transpose(1, 2, 0, 3)


def _conv_input_adjoint(g: jax.Array, kernel: jax.Array, x_shape) -> jax.Array:
  """The adjoint of ``x -> conv(x, kernel)`` (stride 2, pad 1, even H, W) applied to g.

  Autodiff would use an input-dilated convolution, which XLA:CPU runs on its generic
  path with 3/4 of the multiplications on inserted zeros. Instead: in space-to-depth
  coordinates the conv is a 2x2 stride-1 VALID conv, whose adjoint is a 2x2 stride-1
  conv of g padded by one with the flipped, in/out-swapped kernel (YNNPACK runs it),
  followed by depth-to-space and the crop of the padding ring.
  """
  b, h, w, c = x_shape
  k2 = conv_patches.s2d_kernel(kernel)                                     # [2, 2, 4C, O]
  kf = jnp.flip(k2, (0, 1)).transpose(0, 1, 3, 2)                          # [2, 2, O, 4C]
  ds = jax.lax.conv_general_dilated(g, kf, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
  ds = ds.reshape(b, h // 2 + 1, w // 2 + 1, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return ds.reshape(b, h + 2, w + 2, c)[:, 1:h + 1, 1:w + 1]


@jax.custom_vjp
def _conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _lax_conv(x, kernel)


def _conv_lax_fwd(x, kernel):
  return _lax_conv(x, kernel), (x, kernel)


def _conv_lax_bwd(res, g):
  x, kernel = res
  return (conv_patches.like_primal(_conv_input_adjoint(g, kernel, x.shape), x),
          conv_patches.like_primal(_lax_conv_kernel_grad(x, g, materialize=True), kernel))


_conv_lax.defvjp(_conv_lax_fwd, _conv_lax_bwd)


@jax.custom_vjp
def _deconv_lax_adjoint(x: jax.Array, kernel: jax.Array) -> jax.Array:
  b, h, w, _ = x.shape
  o = kernel.shape[-1]
  return _conv_input_adjoint(x, _adjoint_kernel(kernel), (b, 2 * h, 2 * w, o))


def _deconv_lax_adjoint_fwd(x, kernel):
  return _deconv_lax_adjoint(x, kernel), (x, kernel)


def _deconv_lax_adjoint_bwd(res, g):
  # y = A(k_adj)^T x with A(k) u = conv(u, k), so <g, y> = <conv(g, k_adj), x>:
  # dx = conv(g, k_adj) (a strided forward conv) and dk_adj = the kernel gradient of
  # conv at input g with output cotangent x; both are forward-conv kernels that XLA:CPU
  # runs fast, unlike the derivatives of the input-dilated conv that autodiff would use.
  x, kernel = res
  k_adj = _adjoint_kernel(kernel)
  dx = _lax_conv(g, k_adj)
  dk_adj = _lax_conv_kernel_grad(g, x)
  return (conv_patches.like_primal(dx, x),
          conv_patches.like_primal(jnp.flip(dk_adj, (0, 1)).transpose(0, 1, 3, 2), kernel))


_deconv_lax_adjoint.defvjp(_deconv_lax_adjoint_fwd, _deconv_lax_adjoint_bwd)


def conv_transpose4x4_stride2(x: jax.Array, kernel: jax.Array, impl: str = 'auto'
                              ) -> jax.Array:
  """``lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` in NHWC/HWIO."""
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  if impl == 'auto':
    impl = 'adjoint_patches' if o < FEW_CHANNELS else 'adjoint_lax'
  if impl == 'adjoint_lax':
    return _deconv_lax_adjoint(x, kernel)
  if impl == 'adjoint_patches':
    k_mat = conv_patches.s2d_kernel(_adjoint_kernel(kernel)).reshape(16 * o, c).T   # [C, 16 O]
    return conv_patches.conv_transpose(x, k_mat)
  if impl == 'lax':
    return jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME', dimension_numbers=DN)
  if impl.startswith('vjp:'):
    k_adj = _adjoint_kernel(kernel)
    fwd = functools.partial(conv4x4_stride2, kernel=k_adj, impl=impl[4:])
    (y,) = jax.linear_transpose(fwd, jax.ShapeDtypeStruct((b, 2 * h, 2 * w, o), x.dtype))(x)
    return y
  if impl in ('adjoint', 'adjoint_phases'):
    # z[b, i, j, (di, dj, o)]: input pixel (i, j)'s contribution to output pixel
    # (2i + di - 1, 2j + dj - 1).
    flipped = _adjoint_kernel(kernel).reshape(16 * o, c)
    z = jnp.dot(x, flipped.T)                                               # [B, H, W, 16 O]
    if impl == 'adjoint':
      y = None
      for di in range(4):
        for dj in range(4):
          t = 4 * di + dj
          piece = jax.lax.pad(z[..., t * o:(t + 1) * o], jnp.zeros((), z.dtype),
                              ((0, 0, 0), (di, 3 - di, 1), (dj, 3 - dj, 1), (0, 0, 0)))
          y = piece if y is None else y + piece                             # [B, 2H+2, 2W+2, O]
      return y[:, 1:2 * h + 1, 1:2 * w + 1]
    # Output row 2u + p gets z rows i with 2i + di - 1 = 2u + p: p = 0: (i, di) = (u, 1),
    # (u - 1, 3); p = 1: (u + 1, 0), (u, 2). With z padded by one row/column each side,
    # row i is padded row i + 1.
    zp = jnp.pad(z.reshape(b, h, w, 4, 4, o), ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    taps = {0: ((1, 1), (0, 3)), 1: ((2, 0), (1, 2))}   # phase -> ((row offset, di), ...)
    phases = []
    for p in (0, 1):
      for q in (0, 1):
        acc = None
        for ri, di in taps[p]:
          for rj, dj in taps[q]:
            t = zp[:, ri:ri + h, rj:rj + w, di, dj]
            acc = t if acc is None else acc + t
        phases.append(acc)
    return _interleave_phases(phases, b, h, w, o)
  if impl == 'phases':
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    phases = []
    for p in (0, 1):
      for q in (0, 1):
        patches = jnp.concatenate([xp[:, p + a:p + a + h, q + e:q + e + w]
                                   for a in (0, 1) for e in (0, 1)], axis=-1)
        phases.append(jnp.dot(patches, kernel[p::2, q::2].reshape(4 * c, o)))
    return _interleave_phases(phases, b, h, w, o)
  raise ValueError(f'unknown transpose-conv implementation {impl!r}')


# ----------------------------------------------------------------------------------
# Selection by name.

DEFAULT_CONV = 'auto'
DEFAULT_DECONV = 'auto'


def make_conv(impl: str = 'default'):
  """``f(x, kernel)`` computing ``conv4x4_stride2`` with the named formulation."""
  impl = DEFAULT_CONV if impl == 'default' else impl
  if impl not in CONV_IMPLS:
    raise ValueError(f'unknown conv implementation {impl!r}; choose from {CONV_IMPLS}')
  return functools.partial(conv4x4_stride2, impl=impl)


def make_conv_transpose(impl: str = 'default'):
  """``f(x, kernel)`` computing ``conv_transpose4x4_stride2`` with the named formulation."""
  impl = DEFAULT_DECONV if impl == 'default' else impl
  if impl not in DECONV_IMPLS and not (impl.startswith('vjp:') and impl[4:] in CONV_IMPLS):
    raise ValueError(f'unknown transpose-conv implementation {impl!r}; choose from '
                     f'{DECONV_IMPLS}')
  return functools.partial(conv_transpose4x4_stride2, impl=impl)


# ----------------------------------------------------------------------------------
# XLA:CPU options (see benchmarks/conv_step.py). Flags in XLA_FLAGS are read once, when
# the backend starts: apply them before the first JAX computation.

# Measured on jaxlib 0.10.2 (2-core AVX-512 VM, benchmarks/CONV.md): YNNPACK runs dots
# and convolutions by default; taking the convolutions off YNNPACK (XLA's own Eigen
# spatial convolutions, given the canonical NHWC forms above) is faster for the
# authors' layers, while dots stay on YNNPACK. Other XLA:CPU options of this jaxlib
# (oneDNN/XNNPACK fusion types, fast math, thunk runtime) changed nothing or are gone.
RECOMMENDED_CPU_XLA_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def recommended_xla_flags(platform: str) -> str:
  """The XLA_FLAGS found to speed up the conv step on ``platform`` ('' = none)."""
  return RECOMMENDED_CPU_XLA_FLAGS if platform == 'cpu' else ''


def apply_cpu_xla_flags(platform: str | None = None) -> str:
  """Appends ``recommended_xla_flags`` to ``$XLA_FLAGS`` when the run is CPU-only.

  ``platform`` defaults to ``$JAX_PLATFORMS``'s first entry, else 'cpu' when no GPU/TPU
  plugin is installed. Call before the backend starts (before the first computation);
  a flag already present is not added twice. Returns the flags added.
  """
  import os  # pylint: disable=g-import-not-at-top
  flags = recommended_xla_flags(platform or cpu_affinity.expected_platform())
  current = os.environ.get('XLA_FLAGS', '')
  if not flags or flags.split('=')[0] in current:
    return ''
  os.environ['XLA_FLAGS'] = (current + ' ' + flags).strip()
  return flags
