"""The package's shape: layered folders, no import cycles, small modules, all documented.

The layers and their order are written once, in the mermaid diagram of
docs/architecture.md; its module tree names every module. These tests read both.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'vmivae_jax'
ARCHITECTURE = REPO / 'docs' / 'architecture.md'
MATH = 'math'   # the layer of the modules at the top of vmivae_jax/
# A module this long does more than one job: split it (see docs/architecture.md).
MAX_LINES = 400


def _modules() -> set[str]:
  return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob('*.py')}


def _block(language: str) -> str:
  """The first fenced block of docs/architecture.md in ``language`` ('' = none named)."""
  blocks = re.findall(r'^```(\w*)\n(.*?)^```', ARCHITECTURE.read_text(), flags=re.S | re.M)
  return next(body for lang, body in blocks if lang == language)


def _layers() -> list[str]:
  """The diagram's layers, lowest first: its arrows 'upper --> lower' form one chain."""
  edges = re.findall(r'^\s*(\w+)\s*-->\s*(\w+)\s*$', _block('mermaid'), flags=re.M)
  below = dict(edges)
  assert len(below) == len(edges), f'a layer with two arrows out: {edges}'
  lowest = set(below.values()) - set(below)
  top = set(below) - set(below.values())
  assert len(lowest) == 1 and len(top) == 1, f'the arrows are not one chain: {edges}'
  order = [top.pop()]
  while order[-1] in below:
    order.append(below[order[-1]])
  assert len(order) == len(below) + 1, f'the arrows are not one chain: {edges}'
  return order[::-1]


def _listed_modules() -> set[str]:
  """Paths (relative to vmivae_jax/) named in the module tree of docs/architecture.md.

  One entry a line; its indentation (two spaces a level) places it in the folder named
  by the nearest less indented 'name/' line above it.
  """
  names, folders, inside = set(), [], False
  for line in _block('').splitlines():
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


def _module_name(relative: str) -> str:
  parts = ['vmivae_jax', *relative[:-len('.py')].split('/')]
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports() -> dict[str, set[str]]:
  """module -> the package's modules it imports (anywhere in it, also inside functions)."""
  names = {_module_name(m) for m in _modules()}
  graph = {}
  for relative in _modules():
    importer = _module_name(relative)
    graph[importer] = set()
    for node in ast.walk(ast.parse((PACKAGE / relative).read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        # 'from a.b import c': the module a.b.c if there is one, else a.b.
        targets = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in names
                   else node.module for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        raise AssertionError(f'{relative}: a relative import; name the package')
      else:
        continue
      graph[importer] |= {t for t in targets if t.split('.')[0] == 'vmivae_jax'} - {importer}
  return graph


def _layer(module: str) -> str:
  parts = module.split('.')
  if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
    return MATH
  return parts[1] if len(parts) > 1 else MATH


def test_every_module_is_under_the_line_limit():
  lengths = {name: len((PACKAGE / name).read_text().splitlines()) for name in _modules()}
  too_long = {name: n for name, n in lengths.items() if n >= MAX_LINES}
  assert not too_long, f'modules of {MAX_LINES}+ lines (split them): {too_long}'


def test_the_diagram_layers_are_the_folders():
  folders = {p.name for p in PACKAGE.iterdir() if (p / '__init__.py').exists()}
  assert set(_layers()) == folders | {MATH}
  assert not [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != '__pycache__'
              and p.name not in folders], 'a folder in vmivae_jax/ without __init__.py'


def test_no_module_imports_a_higher_layer():
  rank = {layer: i for i, layer in enumerate(_layers())}
  upward = sorted(f'{m} ({_layer(m)}) imports {t} ({_layer(t)})'
                  for m, targets in _imports().items() for t in targets
                  if rank[_layer(t)] > rank[_layer(m)])
  assert not upward, 'imports of a higher layer:\n' + '\n'.join(upward)


def test_no_import_cycles():
  graph, state, cycles = _imports(), {}, []

  def visit(module, path):
    state[module] = 'open'
    for target in sorted(graph.get(module, ())):
      if target == 'vmivae_jax':
        continue
      if state.get(target) == 'open':
        cycles.append(' -> '.join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_module_tree_names_every_module_and_only_those():
  modules, listed = _modules(), _listed_modules()
  assert modules - listed == set(), f'modules missing from docs/architecture.md: {modules - listed}'
  assert listed - modules == set(), f'docs/architecture.md names no such module: {listed - modules}'


def test_the_layout_readers_see_the_layers_and_the_folders():
  layers = _layers()
  assert layers[0] == MATH and layers[-1] == 'experiments'
  assert {'losses.py', 'train/trainer.py', 'evaluation/run.py'} <= _listed_modules()
  graph = _imports()
  assert 'vmivae_jax.train.loop' in graph['vmivae_jax.train.sweep_trainer']
  assert 'vmivae_jax.train.sweep_trainer' in graph['vmivae_jax.train.trainer']
  assert _layer('vmivae_jax.losses') == MATH and _layer('vmivae_jax.model.vmi') == 'model'
