"""The README's promises: its library example runs, its commands name real files."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()


def _code_blocks(language: str) -> list[str]:
  return re.findall(rf'```{language}\n(.*?)```', README, flags=re.S)


def test_library_example_runs_in_a_fresh_interpreter(tmp_path):
  (example,) = _code_blocks('python')
  script = tmp_path / 'example.py'
  script.write_text(example)
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                        text=True, env={'PYTHONPATH': str(REPO), 'PATH': '/usr/bin:/bin',
                                        'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr
  mi, kl, exact = (float(v) for v in proc.stdout.split())
  assert kl >= 0 and 0 <= exact <= 2.3026


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
