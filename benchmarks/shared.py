"""What the benchmark's parent, workers and report share: the benchmarked settings, the
configs (built from ``vmivae_jax.config.config_lib``), test images, interleaved timing."""

import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

ARCHS = ('mlp', 'conv')
KINDS = ('elbo_noq', 'elbo', 'mi')
KIND_LABELS = {
    'elbo_noq': 'ELBO, no Q (purest)',
    'elbo': 'ELBO, lambda=0 (Q trained)',
    'mi': 'MI step (lambda=10)',
}
ARCH_LABELS = {'mlp': 'MLP 784-512-512', 'conv': "conv (authors')"}
# Steps per timed call (one jitted chunk = one lax.scan of this many steps); the
# trainer's default chunk is 100 steps. Conv steps are ~30x dearer (so fewer per call,
# and fewer rounds: --conv-rounds).
STEPS_PER_CALL = {'mlp': 100, 'conv': 5}
MI_WEIGHT = 10.0
TRAIN_EXAMPLES = 60_000
TEST_EXAMPLES = 10_000

# Targets of the benchmark issue.
TARGET_MATMUL_FRACTION = 0.60
TARGET_MI_OVER_ELBO = 1.6
TARGET_VS_TORCH = 1.5
TARGET_IWAE_SECONDS = 300.0


# ----------------------------------------------------------------------------------
# Helpers shared by the workers.


def maxrss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg() -> list[float] | None:
  try:
    return [float(v) for v in Path('/proc/loadavg').read_text().split()[:3]]
  except OSError:
    return None


def median(xs):
  return float(statistics.median(xs)) if xs else float('nan')


def load_images(split: str, n: int, data_dir: str):
  """uint8 [n, 28, 28, 1] MNIST images, or random ones when no data set is found."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vmivae_jax.data import sources as data  # pylint: disable=g-import-not-at-top
  for d in [data_dir, os.environ.get(data.DATA_DIR_ENV, ''), str(ROOT.parent / 'shared' / 'datasets')]:
    if not d or not Path(d).is_dir():
      continue
    try:
      images = data.load_split('mnist', split, data_dir=d).images
      reps = -(-n // len(images))
      return np.concatenate([images] * reps)[:n], f'mnist-{split} ({d})'
    except (data.DataError, OSError, ValueError):
      continue
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), 'random uint8 (no MNIST found)'


def make_config(arch: str, kind: str, batch_size: int):
  """The benchmarked config: the joint MNIST setting (16 Gaussian + one 10-way code)."""
  from vmivae_jax.config import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.joint_config('mnist')
  c.batch_size = batch_size
  c.mi_weight = MI_WEIGHT if kind == 'mi' else 0.0
  if kind == 'elbo_noq':
    c.mi.gaussian_indices = ()
    c.mi.categorical_indices = ()
  if arch == 'conv':
    config_lib.authors_architecture(c.model)   # the authors' networks, with our objective
  elif arch != 'mlp':
    raise ValueError(arch)
  return c


def tiny_config(c):
  """--tiny: the same code paths with small layers (the run only checks the script)."""
  from vmivae_jax.config import config_lib  # pylint: disable=g-import-not-at-top
  config_lib.smoke_widths(c.model)
  return c


class Rounds:
  """Interleaved timing: each round times every registered callable once."""

  def __init__(self):
    self.items = {}   # name -> (fn, samples)

  def add(self, name, fn):
    self.items[name] = (fn, [])

  def run(self, rounds: int):
    names = list(self.items)
    for r in range(rounds):
      # Rotate the order so that no configuration always follows the same one.
      order = names[r % len(names):] + names[:r % len(names)] if names else []
      for name in order:
        fn, samples = self.items[name]
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return {name: samples for name, (_, samples) in self.items.items()}


def jax_matmul(n: int):
  """A jitted float32 [n, n] @ [n, n]; returns (fn, flops)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ka, kb = jax.random.split(jax.random.PRNGKey(n))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  return (lambda: f(a, b).block_until_ready()), 2.0 * n ** 3


