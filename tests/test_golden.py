"""Behaviour lock: smoke runs reproduce the recorded metrics files bitwise (CPU).

tests/golden/make_golden.py trains and evaluates a few smoke configs and stores their
``metrics.jsonl`` and ``eval/metrics.json``; this test reruns them and compares the
bytes. Only ``eval_seconds`` (wall-clock time) is masked. After an intended change of
behaviour, regenerate with ``python tests/golden/make_golden.py`` and commit the diff.
"""

import os
import re

import pytest

from tests.golden import make_golden

_WALL_CLOCK = re.compile(rb'^\s*"eval_seconds": .*\n', re.MULTILINE)


def _masked(content: bytes) -> bytes:
  return _WALL_CLOCK.sub(b'', content)


@pytest.mark.skipif(not os.environ.get('VMIVAE_DATA_DIR'), reason='needs $VMIVAE_DATA_DIR (MNIST)')
@pytest.mark.parametrize('name', sorted(make_golden.CONFIGS))
def test_smoke_run_matches_golden_files(name, tmp_path):
  outputs = make_golden.run(name, tmp_path / name)
  for filename, content in outputs.items():
    expected = (make_golden.HERE / name / filename).read_bytes()
    assert _masked(content) == _masked(expected), (
        f'{name}/{filename} changed; if intended, rerun tests/golden/make_golden.py')
