"""The benchmarked VMI-VAE networks and train step, written plainly in PyTorch.

The same networks as ``vmivae_jax.model.networks`` in the benchmarked settings and the same
two-update step as ``vmivae_jax.train.train_step`` (thesis Algorithm 1, lines 3-5):

1. the next minibatch of the epoch's permutation of the in-memory uint8 data set;
2. one VAE forward pass: x -> q(z, c | x) -> (z, c) (Gaussian reparameterisation and a
   Gumbel-softmax code, temperature 1) -> x' = sigmoid(decoder logits);
3. a Q update on -E log Q(c | x') with x' and c detached (Adam);
4. a VAE update on -ELBO - lambda * (E log Q(c | x') + H(mean_x q(c|x))) with the
   *updated* Q held fixed (Adam). The graph of step 2 serves both updates, as in the
   JAX step (torch reuses it naturally).

Step kinds, as in ``benchmarks/bench.py``:

* ``'mi'``: lambda > 0 (the MI step);
* ``'elbo'``: lambda = 0, Q still updated and its bound computed for monitoring
  (the repo's ELBO-only baseline: Q forward without autograd in step 4);
* ``'elbo_noq'``: no MI targets, no Q at all (the purest ELBO step).

Written the way a PyTorch user would: ``nn.Sequential`` layers, NCHW convolutions,
autograd, ``torch.optim.Adam``. Fairness choices (documented in
``benchmarks/README.md``): Q's parameters are frozen (``requires_grad_(False)``)
during the VAE update, so no Q weight gradients are computed that the JAX step does
not compute either; Adam uses ``fused=True`` (the fastest CPU implementation);
``torch.compile`` is applied to the three networks and the two loss functions.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

GAUSSIAN_DIMS = 16
CATEGORIES = 10
CODE_SIZE = GAUSSIAN_DIMS + CATEGORIES
KINDS = ('elbo_noq', 'elbo', 'mi')


def _mlp(widths, act=nn.ReLU):
  layers = []
  for a, b in zip(widths[:-1], widths[1:]):
    layers += [nn.Linear(a, b), act()]
  return nn.Sequential(*layers)


def _lrelu():
  return nn.LeakyReLU(0.2)


def _conv_trunk():
  """The authors' conv feature extractor: k4 s2 convs (64, 128), BN, LeakyReLU, Linear 512."""
  return nn.Sequential(
      nn.Conv2d(1, 64, 4, 2, 1), _lrelu(),
      nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128, momentum=0.1), _lrelu(),
      nn.Flatten(),
      nn.Linear(128 * 7 * 7, 512), nn.BatchNorm1d(512, momentum=0.1), _lrelu())


class Encoder(nn.Module):
  def __init__(self, arch: str):
    super().__init__()
    if arch == 'mlp':
      self.trunk = nn.Sequential(nn.Flatten(), _mlp([784, 512, 512]))
    else:
      self.trunk = _conv_trunk()
    self.gaussian = nn.Linear(512, 2 * GAUSSIAN_DIMS)
    self.logits = nn.Linear(512, CATEGORIES)

  def forward(self, x):
    h = self.trunk(x)
    mean, logvar = self.gaussian(h).chunk(2, dim=-1)
    return mean, logvar, self.logits(h)


class Decoder(nn.Module):
  def __init__(self, arch: str):
    super().__init__()
    self.arch = arch
    if arch == 'mlp':
      self.net = nn.Sequential(_mlp([CODE_SIZE, 512, 512]), nn.Linear(512, 784))
    else:
      self.net = nn.Sequential(
          nn.Linear(CODE_SIZE, 512), nn.BatchNorm1d(512, momentum=0.1), _lrelu(),
          nn.Linear(512, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7, momentum=0.1), _lrelu(),
          nn.Unflatten(1, (128, 7, 7)),
          nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64, momentum=0.1), _lrelu(),
          nn.ConvTranspose2d(64, 1, 4, 2, 1))

  def forward(self, code):
    return self.net(code).reshape(-1, 1, 28, 28)   # logits


class QNet(nn.Module):
  def __init__(self, arch: str):
    super().__init__()
    self.trunk = (nn.Sequential(nn.Flatten(), _mlp([784, 512, 512])) if arch == 'mlp'
                  else _conv_trunk())
    self.logits = nn.Linear(512, CATEGORIES)

  def forward(self, x):
    return self.logits(self.trunk(x))


def vae_forward(encoder, decoder, x, eps, gumbel, temperature: float = 1.0):
  mean, logvar, logits = encoder(x)
  z = mean + torch.exp(0.5 * logvar) * eps
  c = torch.softmax((F.log_softmax(logits, -1) + gumbel) / temperature, dim=-1)
  raw = decoder(torch.cat([z, c], dim=-1))
  return mean, logvar, logits, c, raw


def log_q(q_logits, c):
  return torch.sum(c * F.log_softmax(q_logits, -1), dim=-1)


def q_loss_fn(q_net, x_prime, c):
  return -log_q(q_net(x_prime.detach()), c.detach()).mean()


def vae_loss_fn(mean, logvar, logits, c, raw, x, q_logits, mi_weight: float):
  """-ELBO - lambda * MI bound (Bernoulli likelihood, N(0, I) and uniform priors)."""
  rec = -F.binary_cross_entropy_with_logits(raw, x, reduction='none').flatten(1).sum(-1)
  kl_gauss = 0.5 * torch.sum(torch.exp(logvar) + mean * mean - 1.0 - logvar, dim=-1)
  log_probs = F.log_softmax(logits, -1)
  kl_cat = math.log(CATEGORIES) + torch.sum(log_probs.exp() * log_probs, dim=-1)
  loss = -rec.mean() + kl_gauss.mean() + kl_cat.mean()
  if q_logits is not None:
    aggregate = torch.softmax(logits, -1).mean(0)
    entropy = -torch.sum(aggregate * torch.log(aggregate.clamp_min(1e-30)))
    mi_bound = log_q(q_logits, c).mean() + entropy
    if mi_weight:
      loss = loss - mi_weight * mi_bound
  return loss


class Trainer:
  """Holds the networks, optimizers and the data; ``run(n)`` does n train steps."""

  def __init__(self, arch: str, kind: str, batch_size: int, images_uint8, *,
               compiled: bool = False, mi_weight: float = 10.0, seed: int = 0):
    if kind not in KINDS:
      raise ValueError(kind)
    torch.manual_seed(seed)
    self.kind, self.batch_size = kind, batch_size
    self.mi_weight = mi_weight if kind == 'mi' else 0.0
    # uint8 [N, 1, 28, 28] in memory; no DataLoader.
    self.images = torch.as_tensor(images_uint8).reshape(-1, 1, 28, 28).contiguous()
    self.n = len(self.images)
    self.steps_per_epoch = self.n // batch_size
    self.encoder, self.decoder = Encoder(arch), Decoder(arch)
    self.q_net = QNet(arch) if kind != 'elbo_noq' else None
    vae_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
    self.vae_opt = torch.optim.Adam(vae_params, lr=1e-3, fused=True)
    self.q_opt = (torch.optim.Adam(self.q_net.parameters(), lr=1e-3, fused=True)
                  if self.q_net is not None else None)
    self._forward, self._q_loss, self._vae_loss = vae_forward, q_loss_fn, vae_loss_fn
    self._enc, self._dec, self._q = self.encoder, self.decoder, self.q_net
    if compiled:
      self._enc = torch.compile(self.encoder)
      self._dec = torch.compile(self.decoder)
      self._q = torch.compile(self.q_net) if self.q_net is not None else None
      self._q_loss = torch.compile(q_loss_fn)
      self._vae_loss = torch.compile(vae_loss_fn)
    self.step = 0
    self.perm = None

  def _batch(self):
    epoch, position = divmod(self.step, self.steps_per_epoch)
    if position == 0 or self.perm is None:
      self.perm = torch.randperm(self.n)
    idx = self.perm[position * self.batch_size:(position + 1) * self.batch_size]
    return self.images[idx].float().div_(255.0)

  def train_step(self):
    x = self._batch()
    b = x.shape[0]
    eps = torch.randn(b, GAUSSIAN_DIMS)
    gumbel = -torch.empty(b, CATEGORIES).exponential_().log()
    mean, logvar, logits, c, raw = self._forward(self._enc, self._dec, x, eps, gumbel)
    x_prime = torch.sigmoid(raw)
    q_logits = None
    if self.q_net is not None:
      # Q update on (x', c) with the VAE fixed.
      self.q_opt.zero_grad(set_to_none=True)
      self._q_loss(self._q, x_prime, c).backward()
      self.q_opt.step()
      # The updated Q, held fixed, scores x' for the VAE objective.
      self.q_net.requires_grad_(False)
      if self.mi_weight:
        q_logits = self._q(x_prime)
      else:
        with torch.no_grad():            # monitoring only (lambda = 0)
          q_logits = self._q(x_prime.detach())
    self.vae_opt.zero_grad(set_to_none=True)
    loss = self._vae_loss(mean, logvar, logits, c, raw, x, q_logits, self.mi_weight)
    loss.backward()
    self.vae_opt.step()
    if self.q_net is not None:
      self.q_net.requires_grad_(True)
    self.step += 1
    return loss

  def run(self, num_steps: int) -> float:
    loss = None
    for _ in range(num_steps):
      loss = self.train_step()
    return float(loss.detach())
