"""Records the golden outputs of a few smoke runs (train + eval) under tests/golden/.

  VMIVAE_DATA_DIR=/work/shared/datasets python tests/golden/make_golden.py

tests/test_golden.py reruns the same configs and requires ``metrics.jsonl`` and
``eval/metrics.json`` to be bitwise identical to the files stored here. Rerun this
script only when a change of behaviour is intended, and say so in the commit.
The runs use 8 forced CPU devices, as the test suite does (tests/conftest.py).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

CONFIGS = {  # golden name -> config file:variant
    'mnist_gauss': 'configs/mnist_gauss.py:smoke',
    'mnist_joint': 'configs/mnist_joint.py:smoke',
    'authors_mnist_joint': 'configs/authors_mnist_joint.py:smoke',
}
FILES = ('metrics.jsonl', 'eval/metrics.json')


def load_config(spec: str):
  """The config of ``configs/x.py:variant``, as train.py's --config flag loads it."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(':')
  module = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      'golden_config', str(ROOT / path))
  return module.get_config(variant) if variant else module.get_config()


def run(name: str, workdir: Path) -> dict[str, bytes]:
  """Trains and evaluates the golden config ``name`` in ``workdir``; returns FILES' bytes."""
  from vmivae_jax.app import cli  # pylint: disable=g-import-not-at-top
  cli.run_train(load_config(CONFIGS[name]), str(workdir))
  cli.run_eval(str(workdir))
  return {f: (workdir / f).read_bytes() for f in FILES}


def main():
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  import jax  # pylint: disable=g-import-not-at-top
  from vmivae_jax.model import conv_ops  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', 8)  # as tests/conftest.py
  conv_ops.apply_cpu_xla_flags()
  names = sys.argv[1:] or list(CONFIGS)
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      outputs = run(name, Path(tmp) / name)
      for f, content in outputs.items():
        target = HERE / name / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        print(f'wrote {target.relative_to(ROOT)} ({len(content)} bytes)')


if __name__ == '__main__':
  main()
