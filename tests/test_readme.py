"""The README's promises: its library example runs, its commands name real files."""

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()


def _code_blocks(language: str) -> list[str]:
  return re.findall(rf'```{language}\n(.*?)```', README, flags=re.S)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _entropy(p):
  return -np.sum(p * np.log(p), axis=-1)


def _example_from_scratch():
  """The README example's numbers recomputed in float64 NumPy from the same draws."""
  import jax  # only for the random draws, made with one key per draw as the README must
  key_logits, key_gumbel, key_q = jax.random.split(jax.random.PRNGKey(0), 3)
  logits = np.asarray(jax.random.normal(key_logits, (8, 10)), np.float64)
  gumbel = np.asarray(jax.random.gumbel(key_gumbel, (8, 10)), np.float64)
  q_logits = np.asarray(jax.random.normal(key_q, (8, 10)), np.float64)
  probs = np.exp(_log_softmax(logits))
  code = np.exp(_log_softmax((_log_softmax(logits) + gumbel) / 0.5))
  log_q = np.sum(code * _log_softmax(q_logits), axis=-1)
  aggregate = probs.mean(0)
  terms = log_q - probs @ np.log(aggregate)
  return dict(mi=terms.mean(), mi_se=terms.std(ddof=1) / np.sqrt(8),
              kl=np.mean(np.log(10) - _entropy(probs)),
              exact=_entropy(aggregate) - _entropy(probs).mean(), h=_entropy(aggregate))


def test_library_example_prints_the_right_numbers_in_a_fresh_interpreter(tmp_path):
  (example,) = _code_blocks('python')
  # Every random draw uses its own key (the same key twice makes the Gumbel noise a
  # monotone function of the logits).
  draw_keys = re.findall(r'jax\.random\.(?!split|PRNGKey)\w+\((\w+)', example)
  assert len(draw_keys) >= 3 and len(set(draw_keys)) == len(draw_keys), draw_keys
  script = tmp_path / 'example.py'
  script.write_text(example)
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                        text=True, env={'PYTHONPATH': str(REPO), 'PATH': '/usr/bin:/bin',
                                        'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr
  mi, mi_se, kl, exact = (float(v) for v in proc.stdout.split())
  ref = _example_from_scratch()
  assert mi == pytest.approx(ref['mi'], rel=1e-5, abs=1e-6)
  assert mi_se == pytest.approx(ref['mi_se'], rel=1e-5)
  assert kl == pytest.approx(ref['kl'], rel=1e-5)
  assert exact == pytest.approx(ref['exact'], rel=1e-5)
  # Valid ranges: log Q <= 0, so the bound is at most H(c) <= log K; I(x; c) in [0, H(c)].
  assert math.isfinite(mi) and mi <= ref['h'] <= math.log(10)
  assert mi_se > 0 and kl >= 0 and 0 <= exact <= ref['h']


def test_quick_start_is_install_main_job_test():
  quick = _code_blocks('bash')[0].strip().splitlines()
  assert quick == ['pip install -e ".[test]"',
                   'python train.py --config=configs/mnist_gauss.py --workdir=runs/mnist_gauss',
                   'pytest']


def test_ci_installs_and_tests_as_the_readme_says():
  ci = (REPO / '.ci' / 'run').read_text()
  assert 'pip install -e ".[test]"' in ci
  assert re.search(r'^pytest$', ci, flags=re.M)


def test_every_config_file_the_readme_names_exists():
  for name in set(re.findall(r'configs/([a-z_]+)\.py', README)):
    assert (REPO / 'configs' / f'{name}.py').exists(), name
  for pattern in re.findall(r'configs/authors_\{([a-z,]+)\}_joint\.py', README):
    for ds in pattern.split(','):
      assert (REPO / 'configs' / f'authors_{ds}_joint.py').exists()


def test_unknown_config_variant_is_a_one_line_error(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', '--config=configs/mnist_joint.py:smke',
                         f'--workdir={tmp_path}'], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2
  assert "config variant 'smke' is unknown" in proc.stderr
  assert 'Traceback' not in proc.stderr
