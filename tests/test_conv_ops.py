"""Every conv_ops formulation equals the lax convolutions: outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmivae_jax.model import conv_ops
from vmivae_jax.model import conv_patches

# (batch, H, C, O): the authors' layers (encoder/Q conv 1->64 at 28, 64->128 at 14;
# decoder transpose conv 128->64 at 7, 64->1 at 14), batch 1, odd small shapes.
CONV_SHAPES = [(2, 28, 1, 64), (2, 14, 64, 128), (1, 14, 64, 128), (1, 6, 3, 5), (3, 4, 2, 1)]
DECONV_SHAPES = [(2, 7, 128, 64), (2, 14, 64, 1), (1, 7, 128, 64), (1, 3, 3, 5), (3, 2, 1, 4)]


def _data(b, h, c, o, out_side, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((b, h, h, c)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((4, 4, c, o)) / np.sqrt(16 * c), jnp.float32)
  g = jnp.asarray(rng.standard_normal((b, out_side, out_side, o)), jnp.float32)
  return x, k, g


def _value_and_grads(op, x, k, g):
  y, vjp = jax.vjp(op, x, k)
  return (y,) + vjp(g)


def _assert_close(got, want, what):
  for name, a, b in zip(('output', 'grad x', 'grad kernel'), got, want):
    assert a.shape == b.shape, (what, name)
    scale = float(jnp.max(jnp.abs(b))) + 1e-6
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2e-5 * scale,
                               err_msg=f'{what}: {name}')


def _lax_conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _lax_deconv(x, k):
  return jax.lax.conv_transpose(x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('impl', conv_ops.CONV_IMPLS + ('default',))
@pytest.mark.parametrize('shape', CONV_SHAPES)
def test_conv_matches_lax(impl, shape):
  b, h, c, o = shape
  x, k, g = _data(b, h, c, o, h // 2)
  want = _value_and_grads(_lax_conv, x, k, g)
  got = jax.jit(lambda x, k, g: _value_and_grads(conv_ops.make_conv(impl), x, k, g))(x, k, g)
  _assert_close(got, want, f'conv {impl} {shape}')


@pytest.mark.parametrize('impl', conv_ops.DECONV_IMPLS + ('default',))
@pytest.mark.parametrize('shape', DECONV_SHAPES)
def test_conv_transpose_matches_lax(impl, shape):
  b, h, c, o = shape
  x, k, g = _data(b, h, c, o, 2 * h)
  want = _value_and_grads(_lax_deconv, x, k, g)
  got = jax.jit(lambda x, k, g: _value_and_grads(conv_ops.make_conv_transpose(impl), x, k, g)
                )(x, k, g)
  _assert_close(got, want, f'deconv {impl} {shape}')


def test_lax_conv_transpose_is_torch_conv_transpose2d_layout():
  """The decoder's lax.conv_transpose SAME is PyTorch's ConvTranspose2d(k4, s2, p1) with
  the kernel flipped: checked directly as a sum over the stride-2 scatter."""
  x, k, _ = _data(1, 3, 2, 3, 6)
  y = np.asarray(_lax_deconv(x, k))
  xn, kn = np.asarray(x), np.asarray(jnp.flip(k, (0, 1)))
  want = np.zeros((1, 8, 8, 3), np.float32)           # padded by 1 each side
  for i in range(3):
    for j in range(3):
      want[0, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum('c,abco->abo', xn[0, i, j], kn)
  np.testing.assert_allclose(y, want[:, 1:7, 1:7], atol=1e-5)


def test_custom_vjp_kernel_grad_through_jax_grad():
  """jax.grad (not only jax.vjp) reaches the custom-VJP transpose conv's kernel gradient."""
  x, k, g = _data(1, 3, 2, 3, 6)
  f = conv_ops.make_conv_transpose('adjoint_lax')
  got = jax.grad(lambda k: jnp.sum(f(x, k) * g))(k)
  want = jax.grad(lambda k: jnp.sum(_lax_deconv(x, k) * g))(k)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_unknown_names_raise():
  with pytest.raises(ValueError):
    conv_ops.make_conv('nope')
  with pytest.raises(ValueError):
    conv_ops.make_conv_transpose('vjp:nope')


def test_cpu_flags_only_for_cpu(monkeypatch):
  assert conv_ops.recommended_xla_flags('gpu') == ''
  flags = conv_ops.recommended_xla_flags('cpu')
  assert flags.startswith('--xla_cpu_')
  monkeypatch.setenv('XLA_FLAGS', '--xla_foo=1')
  assert conv_ops.apply_cpu_xla_flags('gpu') == ''
  assert conv_ops.apply_cpu_xla_flags('cpu') == flags
  assert conv_ops.apply_cpu_xla_flags('cpu') == ''          # not twice
  import os
  assert os.environ['XLA_FLAGS'] == '--xla_foo=1 ' + flags


def test_recommended_flags_parse_and_keep_convs_correct():
  """The flag is accepted by this jaxlib, and the formulations stay equal to lax under it
  (in a fresh process: XLA reads XLA_FLAGS once)."""
  import os
  import subprocess
  import sys
  code = ('import jax, jax.numpy as jnp, numpy as np\n'
          'from vmivae_jax.model import conv_ops\n'
          'x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 14, 14, 8)), jnp.float32)\n'
          'k = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4, 8, 4)), jnp.float32)\n'
          'lax = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),\n'
          '    dimension_numbers=conv_ops.DN)\n'
          'f = lambda op: jax.grad(lambda x, k: jnp.sum(op(x, k) ** 2), argnums=(0, 1))(x, k)\n'
          'a, b = f(conv_ops.make_conv()), f(lax)\n'
          'assert all(np.allclose(u, v, atol=1e-4) for u, v in zip(a, b))\n'
          'print("ok")\n')
  env = dict(os.environ, XLA_FLAGS=conv_ops.recommended_xla_flags('cpu'), JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize('c, o, narrow', [(1, 32, True), (3, 8, True), (4, 32, False),
                                          (32, 64, False)])
def test_auto_takes_the_patch_matrix_for_few_channels(c, o, narrow):
  """'auto' runs the 1-channel image ends as matmuls (no convolution in the gradient's
  program either), and wider layers as the lax custom-VJP convolution."""
  x, k, g = _data(2, 8, c, o, 4)
  grads = lambda x, k: _value_and_grads(conv_ops.make_conv('auto'), x, k, g)
  jaxpr = str(jax.make_jaxpr(grads)(x, k))
  assert ('conv_general_dilated' not in jaxpr) == narrow, jaxpr[:2000]
  # The transpose conv is the adjoint: few *output* channels take the patch matrix.
  xt, kt, gt = _data(2, 4, o, c, 8)
  grads_t = lambda x, k: _value_and_grads(conv_ops.make_conv_transpose('auto'), x, k, gt)
  jaxpr_t = str(jax.make_jaxpr(grads_t)(xt, kt))
  assert ('conv_general_dilated' not in jaxpr_t) == narrow, jaxpr_t[:2000]


def test_patch_matrix_adjoint_is_exact():
  """<patches(x), z> = <x, col2im(z)>: the transpose conv's forward and the conv's input
  gradient rest on it."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 6, 8, 3)), jnp.float32)
  z = jnp.asarray(rng.standard_normal((2, 3, 4, 48)), jnp.float32)
  lhs = float(jnp.vdot(conv_patches.patches(x), z))
  rhs = float(jnp.vdot(x, conv_patches.patches_adjoint(z, 6, 8)))
  assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
