"""Flax (linen) encoders, decoders and the auxiliary Q network for 28x28x1 images.

Two families share one interface:

* ``'mlp'``: dense layers (e.g. 784-512-512 -> heads).
* ``'conv'``: strided 4x4 convolutions then dense layers. With channels (64, 128),
  dense (512,), BatchNorm and LeakyReLU(0.2) it is the architecture of the authors'
  PyTorch code (encoder and Q), and its transpose-convolution mirror is their decoder.

Images are NHWC ``[B, 28, 28, 1]``. BatchNorm statistics are averaged over the
``batch_norm_axis`` mesh axis when it is set, so a data-parallel step normalises
with global-batch statistics, exactly as a single device would.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmivae_jax import latents

IMAGE_SHAPE = (28, 28, 1)
_ACTIVATIONS = {
    'relu': nn.relu,
    'leaky_relu': lambda x: nn.leaky_relu(x, negative_slope=0.2),
    'elu': nn.elu,
    'gelu': nn.gelu,
    'tanh': jnp.tanh,
}
FAMILIES = ('mlp', 'conv')
NORMS = ('none', 'batch', 'layer')


# ----------------------------------------------------------------------------------
# Strided 4x4 convolutions as matrix multiplications (performance only).
#
# XLA:CPU runs strided convolutions slowly and the gradients of transposed
# (input-dilated) convolutions pathologically slowly (seconds per call for the
# authors' decoder at batch 256). The layers below compute exactly the same
# functions as ``nn.Conv(f, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))`` and
# ``nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding='SAME')``, with the same
# parameter names, shapes and initialisers, from slices, pads, reshapes and matrix
# multiplications, whose gradients XLA:CPU runs well (lax stride-1 convolutions
# are no way out: their kernel gradients are as slow). Only the order of
# floating-point additions differs. Measured on the authors' MI step at batch 128
# (2 cores): about 0.45 s/step, against minutes per step with lax.conv.

_CONV_DN = ('NHWC', 'HWIO', 'NHWC')
# Which formulation each layer uses; 'lax' is the plain lax.conv reference.
_CONV_IMPL = {'conv': 'im2col', 'deconv': 'auto'}


def conv4x4_stride2(x: jax.Array, kernel: jax.Array, impl: str | None = None) -> jax.Array:
  """[B, H, W, C] (x) [4, 4, C, O], padding 1, stride 2 -> [B, H/2, W/2, O] (H, W even)."""
  impl = impl or _CONV_IMPL['conv']
  b, h, w, c = x.shape
  ho, wo = h // 2, w // 2
  if impl == 'lax' or h % 2 or w % 2:
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                        dimension_numbers=_CONV_DN)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if impl == 'im2col':
    # patches[b, i, j, (di, dj, c)] = xp[b, 2i + di, 2j + dj, c]: one matmul.
    patches = jnp.concatenate([xp[:, di:di + 2 * ho:2, dj:dj + 2 * wo:2]
                               for di in range(4) for dj in range(4)], axis=-1)
    return jnp.dot(patches, kernel.reshape(16 * c, -1)).reshape(b, ho, wo, -1)
  if impl == 'space_to_depth':
    # s[b, u, v, (p, q, c)] = xp[b, 2u + p, 2v + q, c]; then a 2x2 stride-1 convolution.
    # (Correct, but XLA:CPU's kernel gradient of that convolution is slow: not the default.)
    s = xp.reshape(b, ho + 1, 2, wo + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    s = s.reshape(b, ho + 1, wo + 1, 4 * c)
    k = kernel.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)
    return jax.lax.conv_general_dilated(s, k, (1, 1), 'VALID', dimension_numbers=_CONV_DN)
  raise ValueError(f'unknown conv implementation {impl!r}')


def _subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, C, O] -> [3, 3, C, 4 * O]: output phase (p, q) of the stride-2 transpose conv
  is a 3x3 stride-1 conv whose taps (p + a, q + e) hold kernel[2a + p, 2e + q]."""
  c, o = kernel.shape[2:]
  zero = jnp.zeros((c, o), kernel.dtype)
  rows = []
  for s in range(3):
    cols = []
    for r in range(3):
      phases = []
      for p in (0, 1):
        for q in (0, 1):
          a, e = s - p, r - q
          phases.append(kernel[2 * a + p, 2 * e + q] if a in (0, 1) and e in (0, 1) else zero)
      cols.append(jnp.stack(phases, axis=1).reshape(c, 4 * o))   # [(C), (p, q, O)]
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)


def conv_transpose4x4_stride2(x: jax.Array, kernel: jax.Array, impl: str | None = None
                              ) -> jax.Array:
  """``lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` for a [4, 4, C, O] kernel:
  [B, H, W, C] -> [B, 2H, 2W, O]."""
  impl = impl or _CONV_IMPL['deconv']
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  if impl == 'auto':
    impl = 'phases' if o >= 16 else 'adjoint'
  if impl == 'lax':
    return jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME', dimension_numbers=_CONV_DN)
  if impl == 'adjoint':
    # The transpose conv is the adjoint (w.r.t. its input) of the stride-2 conv with the
    # spatially flipped, in/out-swapped kernel: one matmul to 16 * O channels, then the
    # transpose of im2col (each tap's [B, H, W, O] block lands on a stride-2 grid).
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).reshape(16 * o, c)
    z = jnp.dot(x, flipped.T)                          # [B, H, W, (di, dj, O)]
    y = None
    for di in range(4):
      for dj in range(4):
        t = 4 * di + dj
        piece = jax.lax.pad(z[..., t * o:(t + 1) * o], jnp.zeros((), z.dtype),
                            ((0, 0, 0), (di, 3 - di, 1), (dj, 3 - dj, 1), (0, 0, 0)))
        y = piece if y is None else y + piece           # [B, 2H + 2, 2W + 2, O]
    return y[:, 1:2 * h + 1, 1:2 * w + 1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if impl == 'subpixel':
    # One 3x3 stride-1 convolution to 4 * O channels, then depth-to-space. (Correct, but
    # its kernel gradient is slow on XLA:CPU: not the default.)
    y = jax.lax.conv_general_dilated(xp, _subpixel_kernel(kernel), (1, 1), 'VALID',
                                     dimension_numbers=_CONV_DN)
  elif impl == 'phases':
    # The same sums as one matmul per output phase on 2x2 patches.
    phases = []
    for p in (0, 1):
      for q in (0, 1):
        patches = jnp.concatenate([xp[:, p + a:p + a + h, q + e:q + e + w]
                                   for a in (0, 1) for e in (0, 1)], axis=-1)
        phases.append(jnp.dot(patches, kernel[p::2, q::2].reshape(4 * c, o)))
    y = jnp.stack(phases, axis=3)                                   # [B, H, W, 4, O]
  else:
    raise ValueError(f'unknown transpose-conv implementation {impl!r}')
  y = y.reshape(b, h, w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, o)


class StridedConv(nn.Module):
  """``nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))``, same params."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features), jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    y = conv4x4_stride2(x, kernel)
    return y if bias is None else y + bias


class StridedConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')``, same params."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    return conv_transpose4x4_stride2(x, kernel) + bias


def _normalise(norm: str, batch_norm_axis: str | None, train: bool, name: str):
  if norm == 'batch':
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=batch_norm_axis,
                        name=name)
  if norm == 'layer':
    return nn.LayerNorm(name=name)
  return lambda x: x


class FeatureExtractor(nn.Module):
  """Image -> feature vector: the shared trunk of the encoder and of Q."""
  family: str = 'mlp'
  hidden: Sequence[int] = (512, 512)          # dense widths after the convs (or the MLP)
  conv_channels: Sequence[int] = (64, 128)    # conv family only
  norm: str = 'none'
  activation: str = 'relu'
  batch_norm_axis: str | None = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    act = _ACTIVATIONS[self.activation]
    x = images
    if self.family == 'conv':
      for i, channels in enumerate(self.conv_channels):
        x = StridedConv(channels, use_bias=(i == 0 or self.norm == 'none'),
                        name=f'conv_{i}')(x)
        # The authors (like DCGAN/InfoGAN) leave the first conv un-normalised.
        if i > 0:
          x = _normalise(self.norm, self.batch_norm_axis, train, f'conv_norm_{i}')(x)
        x = act(x)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, name=f'dense_{i}')(x)
      if self.norm != 'none':
        x = _normalise(self.norm, self.batch_norm_axis, train, f'dense_norm_{i}')(x)
      x = act(x)
    return x


def _gaussian_head(features: jax.Array, dims: int) -> jax.Array:
  """[B, 2 * dims] means then log-variances ([B, 0] when there are no Gaussian dims)."""
  if not dims:
    return jnp.zeros((features.shape[0], 0), features.dtype)
  return nn.Dense(2 * dims, name='gaussian_head')(features)


class Encoder(nn.Module):
  """q(z, c | x): Gaussian mean/log-variance heads and one logits head per code."""
  spec: latents.LatentSpec
  trunk: FeatureExtractor

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> latents.PosteriorParams:
    features = self.trunk(images, train=train)
    d = self.spec.gaussian_dims
    gaussian = _gaussian_head(features, d)
    logits = tuple(nn.Dense(k, name=f'categorical_head_{i}')(features)
                   for i, k in enumerate(self.spec.categorical_sizes))
    return latents.PosteriorParams(mean=gaussian[:, :d], logvar=gaussian[:, d:], logits=logits)


class Decoder(nn.Module):
  """p(x | z, c): latent code -> raw image output [B, 28, 28, 1] (logits or pre-mean)."""
  family: str = 'mlp'
  hidden: Sequence[int] = (512, 512)        # dense widths, in order from the code
  conv_channels: Sequence[int] = (128, 64)  # conv family: channels at 7x7, 14x14
  norm: str = 'none'
  activation: str = 'relu'
  batch_norm_axis: str | None = None

  @nn.compact
  def __call__(self, code: jax.Array, *, train: bool) -> jax.Array:
    act = _ACTIVATIONS[self.activation]
    norm_dense = self.norm != 'none'
    x = code
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, name=f'dense_{i}')(x)
      if norm_dense:
        x = _normalise(self.norm, self.batch_norm_axis, train, f'dense_norm_{i}')(x)
      x = act(x)
    if self.family == 'mlp':
      x = nn.Dense(IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], name='output')(x)
      return x.reshape((-1,) + IMAGE_SHAPE)
    side = IMAGE_SHAPE[0] // 2 ** len(self.conv_channels)
    x = nn.Dense(side * side * self.conv_channels[0], name='to_grid')(x)
    x = _normalise(self.norm, self.batch_norm_axis, train, 'to_grid_norm')(x)
    x = act(x).reshape(-1, side, side, self.conv_channels[0])
    out_channels = tuple(self.conv_channels[1:]) + (IMAGE_SHAPE[2],)
    for i, channels in enumerate(out_channels):
      x = StridedConvTranspose(channels, name=f'deconv_{i}')(x)
      if i < len(out_channels) - 1:
        x = act(_normalise(self.norm, self.batch_norm_axis, train, f'deconv_norm_{i}')(x))
    return x


class QNetwork(nn.Module):
  """Q(z_sel | x'): reads the decoder output x' and predicts the selected latents.

  Outputs a mean and log-variance for each selected Gaussian dim and logits for
  each selected categorical code.
  """
  num_gaussian: int
  categorical_sizes: tuple[int, ...]
  trunk: FeatureExtractor

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool
               ) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
    features = self.trunk(images, train=train)
    n = self.num_gaussian
    gaussian = _gaussian_head(features, n)
    logits = tuple(nn.Dense(k, name=f'categorical_head_{i}')(features)
                   for i, k in enumerate(self.categorical_sizes))
    return gaussian[:, :n], gaussian[:, n:], logits


class VAE(nn.Module):
  """Encoder + decoder; ``__call__`` is one stochastic pass x -> (q(z|x), z, p(x|z))."""
  encoder: Encoder
  decoder: Decoder
  learn_output_logvar: bool = False  # a learned shared pixel log-variance (Gaussian likelihood)

  def encode(self, images: jax.Array, *, train: bool) -> latents.PosteriorParams:
    return self.encoder(images, train=train)

  def decode(self, code: jax.Array, *, train: bool) -> jax.Array:
    return self.decoder(code, train=train)

  def setup(self):
    # A parameter outside the submodules must be declared in setup() (the methods
    # below are called separately through apply(method=...)).
    if self.learn_output_logvar:
      self._output_logvar = self.param('output_logvar', nn.initializers.zeros, ())

  def output_logvar(self) -> jax.Array | None:
    return self._output_logvar if self.learn_output_logvar else None

  def __call__(self, images: jax.Array, noise: latents.LatentNoise, *,
               temperature: jax.Array | float, hard: bool, train: bool
               ) -> tuple[latents.PosteriorParams, latents.LatentSample, jax.Array, jax.Array | None]:
    """Returns the posterior, the reparameterised sample, the raw decoder output
    [B, 28, 28, 1] and the learned output log-variance (or None)."""
    posterior = self.encode(images, train=train)
    sample = latents.sample(posterior, noise, temperature=temperature, hard=hard)
    return posterior, sample, self.decode(sample.code(), train=train), self.output_logvar()
