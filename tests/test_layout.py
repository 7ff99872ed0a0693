"""The package's shape (issue 11): small modules, each named in the README's layout."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'vmivae_jax'
# A module this long does more than one job: split it (see the README's layout).
MAX_LINES = 400


def _modules() -> set[str]:
  return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob('*.py')}


def _readme_layout() -> set[str]:
  """Paths (relative to vmivae_jax/) named in the tree under README's '## Layout'.

  One entry a line; its indentation (two spaces a level) places it in the folder named
  by the nearest less indented 'name/' line above it.
  """
  readme = (REPO / 'README.md').read_text()
  section = readme[readme.index('## Layout\n'):]
  block = re.search(r'```\n(.*?)```', section, flags=re.S).group(1)
  names, folders, inside = set(), [], False
  for line in block.splitlines():
    indent = (len(line) - len(line.lstrip(' '))) // 2
    entry = line.split()[0] if line.strip() else ''
    if indent == 0:
      inside = entry == 'vmivae_jax/'
      continue
    if not inside:
      continue
    del folders[indent - 1:]
    if entry.endswith('/'):
      folders.append(entry)
    else:
      names.add(''.join(folders) + entry)
  return names


def test_every_module_is_under_the_line_limit():
  lengths = {name: len((PACKAGE / name).read_text().splitlines()) for name in _modules()}
  too_long = {name: n for name, n in lengths.items() if n >= MAX_LINES}
  assert not too_long, f'modules of {MAX_LINES}+ lines (split them): {too_long}'


def test_readme_layout_names_every_module_and_only_those():
  modules, listed = _modules(), _readme_layout()
  assert modules - listed == set(), f'modules missing from README layout: {modules - listed}'
  assert listed - modules == set(), f'README layout names no such module: {listed - modules}'


def test_layout_parser_sees_folders():
  listed = _readme_layout()
  assert {'losses.py', 'evaluation/run.py', 'experiments/report.py'} <= listed
