"""Flax (linen) encoders, decoders and the auxiliary Q network.

Three families share one interface; the family fixes the image shape (``IMAGE_SHAPES``):

* ``'mlp'`` (28x28x1): dense layers (e.g. 784-512-512 -> heads).
* ``'conv'`` (28x28x1): strided 4x4 convolutions then dense layers. With channels (64, 128),
  dense (512,), BatchNorm and LeakyReLU(0.2) it is the architecture of the authors'
  PyTorch code (encoder and Q), and its transpose-convolution mirror is their decoder.
* ``'dlib_conv'`` (64x64x1): the same layers at 64x64. With encoder channels
  (32, 32, 64, 64), dense (256,), decoder dense (256,), grid 4x4x64 and transpose convs
  to (64, 32, 32, 1), ReLU, no normalisation, it is disentanglement_lib's conv_encoder /
  deconv_decoder (Locatello et al. 2019; TF's 'same' padding of a 4x4 stride-2 conv on
  an even side is our padding of 1), the standard network of the disentanglement
  benchmarks (``dsprites_config.dlib_architecture``). Q reads x' with the encoder's trunk.

Mixed precision: with ``dtype`` set (``config.compute_dtype='bfloat16'``) the layers
compute in that dtype (activations and matmul/conv inputs; BatchNorm statistics stay
float32, as Flax computes them) while parameters stay float32; the networks' outputs
(posterior parameters, decoder output, Q's predictions) are cast back to float32, so
every loss is computed in float32. ``dtype=None`` (the default) is the float32 model.

Images are NHWC ``[B, H, W, 1]`` (``image_shape(family)``); a network given another
shape raises a ValueError naming the family and both shapes. BatchNorm statistics are
averaged over the ``batch_norm_axis`` mesh axis when it is set, so a data-parallel step
normalises with global-batch statistics, exactly as a single device would.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmivae_jax import latents
from vmivae_jax.model import conv_ops

IMAGE_SHAPE = (28, 28, 1)     # the 'mlp' and 'conv' families' images
IMAGE_SHAPES = {'mlp': IMAGE_SHAPE, 'conv': IMAGE_SHAPE, 'dlib_conv': (64, 64, 1)}
_ACTIVATIONS = {
    'relu': nn.relu,
    'leaky_relu': lambda x: nn.leaky_relu(x, negative_slope=0.2),
    'elu': nn.elu,
    'gelu': nn.gelu,
    'tanh': jnp.tanh,
}
FAMILIES = tuple(IMAGE_SHAPES)
CONV_FAMILIES = ('conv', 'dlib_conv')   # strided 4x4 convs: same layers, other image sides
NORMS = ('none', 'batch', 'layer')
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}   # config name -> module dtype
AUTO = 'auto'   # config.model.conv_impl/deconv_impl: the backend's default (conv_impls)


# ----------------------------------------------------------------------------------
# Strided 4x4 convolutions. The formulations live in ``conv_ops``; which one runs is a
# per-backend choice: on CPU, XLA's plain strided convolutions and their input-dilated
# gradients run on slow generic paths (benchmarks/CONV.md), so the CPU default is
# ``conv_ops``'s custom-VJP formulation; GPU and TPU run native ``lax`` convolutions.

def conv_impls(backend: str | None = None) -> tuple[str, str]:
  """(conv, transpose-conv) formulation names of ``conv_ops`` for ``backend``."""
  backend = backend or jax.default_backend()
  if backend == 'cpu':
    return conv_ops.DEFAULT_CONV, conv_ops.DEFAULT_DECONV
  return 'lax', 'lax'


# config.model.conv_impl / deconv_impl choices. conv_ops' own 'auto' (per layer: patch
# matrices for the 1-channel ends, custom-VJP lax convolutions otherwise) is the CPU
# default, reached through AUTO; the 'vjp:<conv>' transposes exist for the conv
# formulations without a custom VJP (jax.linear_transpose cannot transpose one).
CONV_CHOICES = (AUTO,) + tuple(c for c in conv_ops.CONV_IMPLS if c != 'auto')
DECONV_CHOICES = (AUTO,) + tuple(d for d in conv_ops.DECONV_IMPLS if d != 'auto') + tuple(
    f'vjp:{c}' for c in conv_ops.CONV_IMPLS
    if c not in ('auto', 'lax_vjp', 'patches') and f'vjp:{c}' not in conv_ops.DECONV_IMPLS)


def image_shape(family: str) -> tuple[int, int, int]:
  """(H, W, C) of the images a ``family``'s networks read and write."""
  if family not in IMAGE_SHAPES:
    raise ValueError(f'unknown model family {family!r}; choose from {FAMILIES}')
  return IMAGE_SHAPES[family]


def check_image_shape(family: str, images: jax.Array) -> None:
  """A ValueError naming both shapes unless ``images`` is [B] + ``image_shape(family)``:
  a 28x28 network would otherwise flatten 64x64 images into wrong-sized dense layers."""
  expected = image_shape(family)
  if tuple(images.shape[1:]) != expected:
    raise ValueError(f'model family {family!r} takes [B, {", ".join(map(str, expected))}] '
                     f'images, got {tuple(images.shape)}')


def _float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.float32) if x.dtype != jnp.float32 else x


def _conv_params(module: nn.Module, x: jax.Array, *, use_bias: bool):
  """(x, kernel [4, 4, in, out], bias or None) of a 4x4 conv module, promoted to its dtype."""
  kernel = module.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], module.features), jnp.float32)
  bias = (module.param('bias', nn.initializers.zeros_init(), (module.features,), jnp.float32)
          if use_bias else None)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


class StridedConv(nn.Module):
  """``nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))``, same params.

  ``impl``: a ``conv_ops.CONV_IMPLS`` formulation, or 'auto' (``conv_impls()``).
  """
  features: int
  use_bias: bool = True
  impl: str = AUTO
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel, bias = _conv_params(self, x, use_bias=self.use_bias)
    impl = conv_impls()[0] if self.impl == AUTO else self.impl
    y = conv_ops.conv4x4_stride2(x, kernel, impl=impl)
    return y if bias is None else y + bias


class StridedConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')``, same params.

  ``impl``: a ``conv_ops`` transpose-conv formulation, or 'auto' (``conv_impls()``).
  """
  features: int
  impl: str = AUTO
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel, bias = _conv_params(self, x, use_bias=True)
    impl = conv_impls()[1] if self.impl == AUTO else self.impl
    return conv_ops.conv_transpose4x4_stride2(x, kernel, impl=impl) + bias


def _normalise(norm: str, batch_norm_axis: str | None, train: bool, name: str, dtype=None):
  if norm == 'batch':
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=batch_norm_axis,
                        dtype=dtype, name=name)
  if norm == 'layer':
    return nn.LayerNorm(dtype=dtype, name=name)
  return lambda x: x


class FeatureExtractor(nn.Module):
  """Image -> feature vector: the shared trunk of the encoder and of Q."""
  family: str = 'mlp'
  hidden: Sequence[int] = (512, 512)          # dense widths after the convs (or the MLP)
  conv_channels: Sequence[int] = (64, 128)    # conv family only
  norm: str = 'none'
  activation: str = 'relu'
  batch_norm_axis: str | None = None
  conv_impl: str = AUTO
  dtype: Any = None        # compute dtype (None: float32); parameters are float32
  # The VAE's trunks read the family's images; the bare classifier (classifier.py) may
  # read any [B, ...] vectors through an MLP.
  images_only: bool = True

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    if self.images_only or self.family != 'mlp':
      check_image_shape(self.family, images)
    act = _ACTIVATIONS[self.activation]
    x = images
    if self.family in CONV_FAMILIES:
      for i, channels in enumerate(self.conv_channels):
        x = StridedConv(channels, use_bias=(i == 0 or self.norm == 'none'),
                        impl=self.conv_impl, dtype=self.dtype, name=f'conv_{i}')(x)
        # The authors (like DCGAN/InfoGAN) leave the first conv un-normalised.
        if i > 0:
          x = _normalise(self.norm, self.batch_norm_axis, train, f'conv_norm_{i}',
                         self.dtype)(x)
        x = act(x)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x)
      if self.norm != 'none':
        x = _normalise(self.norm, self.batch_norm_axis, train, f'dense_norm_{i}',
                       self.dtype)(x)
      x = act(x)
    return x


def _gaussian_head(features: jax.Array, dims: int, dtype=None) -> jax.Array:
  """[B, 2 * dims] means then log-variances ([B, 0] when there are no Gaussian dims)."""
  if not dims:
    return jnp.zeros((features.shape[0], 0), jnp.float32 if dtype else features.dtype)
  out = nn.Dense(2 * dims, dtype=dtype, name='gaussian_head')(features)
  return _float32(out) if dtype else out


def _logits_head(features: jax.Array, k: int, name: str, dtype=None) -> jax.Array:
  out = nn.Dense(k, dtype=dtype, name=name)(features)
  return _float32(out) if dtype else out


class Encoder(nn.Module):
  """q(z, c | x): Gaussian mean/log-variance heads and one logits head per code.

  With ``code_trunk`` the code heads read their own feature extractor instead of the
  Gaussian heads' trunk, so reconstruction-driven features (stroke style) do not have
  to be shared with the class-like code.
  """
  spec: latents.LatentSpec
  trunk: FeatureExtractor
  code_trunk: FeatureExtractor | None = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> latents.PosteriorParams:
    features = self.trunk(images, train=train)
    code_features = features if self.code_trunk is None else self.code_trunk(images, train=train)
    d, dtype = self.spec.gaussian_dims, self.trunk.dtype
    gaussian = _gaussian_head(features, d, dtype)
    logits = tuple(_logits_head(code_features, k, f'categorical_head_{i}', dtype)
                   for i, k in enumerate(self.spec.categorical_sizes))
    return latents.PosteriorParams(mean=gaussian[:, :d], logvar=gaussian[:, d:], logits=logits)


class Decoder(nn.Module):
  """p(x | z, c): latent code -> raw image output [B] + ``image_shape(family)`` (logits or
  pre-mean)."""
  family: str = 'mlp'
  hidden: Sequence[int] = (512, 512)        # dense widths, in order from the code
  conv_channels: Sequence[int] = (128, 64)  # conv families: grid channels, then each deconv's
  norm: str = 'none'
  activation: str = 'relu'
  batch_norm_axis: str | None = None
  deconv_impl: str = AUTO
  dtype: Any = None        # compute dtype (None: float32); the output is float32

  @nn.compact
  def __call__(self, code: jax.Array, *, train: bool) -> jax.Array:
    act = _ACTIVATIONS[self.activation]
    norm_dense = self.norm != 'none'
    dtype = self.dtype
    x = code
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, dtype=dtype, name=f'dense_{i}')(x)
      if norm_dense:
        x = _normalise(self.norm, self.batch_norm_axis, train, f'dense_norm_{i}', dtype)(x)
      x = act(x)
    shape = image_shape(self.family)
    if self.family == 'mlp':
      x = nn.Dense(shape[0] * shape[1] * shape[2], dtype=dtype, name='output')(x)
      x = x.reshape((-1,) + shape)
      return _float32(x) if dtype else x
    side = shape[0] // 2 ** len(self.conv_channels)
    x = nn.Dense(side * side * self.conv_channels[0], dtype=dtype, name='to_grid')(x)
    x = _normalise(self.norm, self.batch_norm_axis, train, 'to_grid_norm', dtype)(x)
    x = act(x).reshape(-1, side, side, self.conv_channels[0])
    out_channels = tuple(self.conv_channels[1:]) + (shape[2],)
    for i, channels in enumerate(out_channels):
      x = StridedConvTranspose(channels, impl=self.deconv_impl, dtype=dtype,
                               name=f'deconv_{i}')(x)
      if i < len(out_channels) - 1:
        x = act(_normalise(self.norm, self.batch_norm_axis, train, f'deconv_norm_{i}',
                           dtype)(x))
    return _float32(x) if dtype else x


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
    n, dtype = self.num_gaussian, self.trunk.dtype
    gaussian = _gaussian_head(features, n, dtype)
    logits = tuple(_logits_head(features, k, f'categorical_head_{i}', dtype)
                   for i, k in enumerate(self.categorical_sizes))
    return gaussian[:, :n], gaussian[:, n:], logits


def _scale_gradient(x: jax.Array, scale: jax.Array | float) -> jax.Array:
  """x in the forward pass; ``scale`` times its gradient in the backward pass."""
  frozen = jax.lax.stop_gradient(x)
  return frozen + scale * (x - frozen)


class VAE(nn.Module):
  """Encoder + decoder; ``__call__`` is one stochastic pass x -> (q(z|x), z, p(x|z)).

  With ``encoder.spec.mixture_code`` set, the VAE also holds the Gaussian group's
  mixture prior p(z | c) (parameters 'prior_means' [K, D], initialised N(0,
  prior_init_scale^2), and, if ``learn_prior_logvars``, 'prior_logvars' [K, D] from 0;
  else unit variances); :meth:`encode` attaches it to the posterior.
  """
  encoder: Encoder
  decoder: Decoder
  learn_output_logvar: bool = False  # a learned shared pixel log-variance (Gaussian likelihood)
  learn_prior_logvars: bool = False  # mixture prior: learned component variances
  prior_init_scale: float = 1.0      # mixture prior: std of the component means' init

  def encode(self, images: jax.Array, *, train: bool) -> latents.PosteriorParams:
    posterior = self.encoder(images, train=train)
    if self.encoder.spec.mixture_code is not None:
      posterior = posterior._replace(prior=self.prior())
    return posterior

  def prior(self) -> latents.MixturePrior | None:
    """The mixture prior's components (None: the prior is N(0, I))."""
    if self.encoder.spec.mixture_code is None:
      return None
    logvars = (self._prior_logvars if self.learn_prior_logvars
               else jnp.zeros_like(self._prior_means))
    return latents.MixturePrior(means=self._prior_means, logvars=logvars)

  def decode(self, code: jax.Array, *, train: bool) -> jax.Array:
    return self.decoder(code, train=train)

  def setup(self):
    # A parameter outside the submodules must be declared in setup() (the methods
    # below are called separately through apply(method=...)).
    if self.learn_output_logvar:
      self._output_logvar = self.param('output_logvar', nn.initializers.zeros, ())
    spec = self.encoder.spec
    if spec.mixture_code is not None:
      shape = (spec.categorical_sizes[spec.mixture_code], spec.gaussian_dims)
      self._prior_means = self.param('prior_means',
                                     nn.initializers.normal(self.prior_init_scale), shape)
      if self.learn_prior_logvars:
        self._prior_logvars = self.param('prior_logvars', nn.initializers.zeros, shape)

  def output_logvar(self) -> jax.Array | None:
    return self._output_logvar if self.learn_output_logvar else None

  def __call__(self, images: jax.Array, noise: latents.LatentNoise, *,
               temperature: jax.Array | float, hard: bool, train: bool,
               code_gradient: jax.Array | float = 1.0
               ) -> tuple[latents.PosteriorParams, latents.LatentSample, jax.Array, jax.Array | None]:
    """Returns the posterior, the reparameterised sample, the raw decoder output
    [B, H, W, 1] and the learned output log-variance (or None).

    ``code_gradient`` scales the gradient reaching the codes' logits through their
    sample (values unchanged); the Python float 1.0 adds no operation."""
    posterior = self.encode(images, train=train)
    sampled_from = posterior
    if not (isinstance(code_gradient, float) and code_gradient == 1.0):
      sampled_from = posterior._replace(
          logits=tuple(_scale_gradient(l, code_gradient) for l in posterior.logits))
    sample = latents.sample(sampled_from, noise, temperature=temperature, hard=hard)
    return posterior, sample, self.decode(sample.code(), train=train), self.output_logvar()
