"""The README's and docs pages' promises: the library example runs, every command names
real files, flags, config keys and experiments, every link and anchor resolves."""

import importlib.metadata
import importlib.util
import math
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()
# docs/architecture.md is written with the package layout (not a page these tests own).
DOCS = {path: path.read_text() for path in sorted((REPO / 'docs').glob('*.md'))
        if path.name != 'architecture.md'}
USER_PAGES = {REPO / 'README.md': README, **DOCS,
              **{path: path.read_text() for path in sorted((REPO / 'benchmarks').glob('*.md'))}}
# Topic pages that took over the README's commands: each must hold commands.
TOPIC_PAGES = ('running.md', 'metrics.md', 'sweeps.md', 'devices.md', 'performance.md',
               'reproducing.md')


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


@pytest.mark.parametrize('page', [REPO / 'README.md', *DOCS], ids=lambda p: p.name)
def test_every_config_file_a_page_names_exists(page):
  text = USER_PAGES[page]
  # reliability.md shows the error a missing config file gives, with configs/nope.py.
  for name in set(re.findall(r'configs/([a-z_]+)\.py', text)) - {'nope'}:
    assert (REPO / 'configs' / f'{name}.py').exists(), name
  for pattern in re.findall(r'configs/authors_\{([a-z,]+)\}_joint\.py', text):
    for ds in pattern.split(','):
      assert (REPO / 'configs' / f'authors_{ds}_joint.py').exists()


def test_unknown_config_variant_is_a_one_line_error(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', '--config=configs/mnist_joint.py:smke',
                         f'--workdir={tmp_path}'], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2
  assert "config variant 'smke' is unknown" in proc.stderr
  assert 'Traceback' not in proc.stderr


# --- Commands of the README and the docs pages -------------------------------------------

# Shell variables the pages' commands use: a loop's process id, the suite's root.
SHELL_VARIABLES = {'$i': '0', '$ROOT': 'runs/reproduce'}


def _commands(text: str, program: str) -> list[list[str]]:
  """Argument lists of every `python <program>` command in code blocks and inline code.

  Continuation lines are joined; shell around the command (env prefixes, srun, loops,
  quotes of an ssh --command) is cut off; lines with a `...` placeholder are skipped.
  """
  spans = re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)
  spans += re.findall(r'(?<!`)`([^`\n]+)`(?!`)', re.sub(r'```.*?```', '', text, flags=re.S))
  found = []
  for span in spans:
    for line in span.replace('\\\n', ' ').splitlines():
      line = line.split('  #')[0]
      if line.lstrip().startswith('#'):
        continue
      for match in re.finditer(rf'python {re.escape(program)}(?=\s|$)(.*)', line):
        rest = re.split(r'\s[&;|]|"', match.group(1))[0]
        if '...' in rest:
          continue
        for var, value in SHELL_VARIABLES.items():
          rest = rest.replace(var, value)
        found.append(shlex.split(rest))
  return found


def _flag_names(source: str) -> dict[str, str]:
  return dict((name, kind) for kind, name in
              re.findall(r"DEFINE_(\w+)\(\s*'(\w+)'", source))


def _parse_train_or_eval(script: str, argv: list[str]):
  """Parses argv with the script's own flag definitions; the config, its variant and
  every --config.* override are resolved as train.py resolves them."""
  fv = flags.FlagValues()
  for name, kind in _flag_names((REPO / script).read_text()).items():
    if kind == 'config_file':
      config_flags.DEFINE_config_file(name, None, '', flag_values=fv, lock_config=True,
                                      sys_argv=[script, *argv])
    elif kind == 'bool':
      flags.DEFINE_bool(name, False, '', flag_values=fv)
    elif kind == 'integer':
      flags.DEFINE_integer(name, None, '', flag_values=fv)
    else:
      flags.DEFINE_string(name, None, '', flag_values=fv)
  fv([script, *argv])
  return fv


def _expand_template(page: Path, argv: list[str]) -> list[list[str]]:
  """class_tuning.md gives one command with CONFIG, NAME, SEED and FLAGS filled in by the
  rows of its table: one command per row."""
  if not any(word in ' '.join(argv) for word in ('CONFIG', 'NAME', 'SEED', 'FLAGS')):
    return [argv]
  assert page.name == 'class_tuning.md', (page.name, argv)
  expanded = []
  for row in re.findall(r'^\|(.*)\|$', USER_PAGES[page], flags=re.M):
    cells = [c.strip() for c in re.split(r'(?<!\\)\|', row)]
    if not re.fullmatch(r'\d+', cells[1]):
      continue
    name, seed, config, extra = cells[:4]
    extra = '' if extra == '(none)' else extra.strip('`')
    fill = {'CONFIG': config, 'NAME': re.sub(r'\W+', '_', name), 'SEED': seed}
    args = []
    for arg in argv:
      if arg == 'FLAGS':
        args += shlex.split(extra)
      else:
        args.append(re.sub(r'CONFIG|NAME|SEED', lambda m: fill[m.group()], arg))
    expanded.append(args)
  assert len(expanded) >= 10
  return expanded


def _all_commands(program: str):
  return [(page.name, expanded) for page, text in USER_PAGES.items()
          for argv in _commands(text, program) for expanded in _expand_template(page, argv)]


def test_the_topic_pages_exist_and_hold_commands():
  for name in TOPIC_PAGES:
    text = DOCS[REPO / 'docs' / name]
    assert any(_commands(text, p) for p in ('train.py', 'eval.py', 'benchmarks/bench.py',
                                            '-m vmivae_jax.experiments.reproduce')), name
    assert f'(docs/{name})' in README, f'README does not link docs/{name}'
  assert '(docs/architecture.md)' in README


def test_every_train_command_parses_with_its_config_variant_and_overrides(monkeypatch):
  monkeypatch.chdir(REPO)
  commands = _all_commands('train.py')
  pages = {page for page, _ in commands}
  assert {'README.md', 'running.md', 'sweeps.md', 'devices.md', 'results.md',
          'results_class.md'} <= pages, pages
  for name in ('results.md', 'results_class.md'):   # one per run, none skipped
    text = DOCS[REPO / 'docs' / name]
    assert sum(page == name for page, _ in commands) == text.count('python train.py ') > 30
  for page, argv in commands:
    try:
      fv = _parse_train_or_eval('train.py', argv)
      config = fv.config
    except Exception as e:  # pragma: no cover - the message is the diagnosis
      raise AssertionError(f'{page}: python train.py {shlex.join(argv)}: {e}') from e
    assert fv.workdir, (page, argv)
    for arg in argv:   # an override's value reached the config
      key, _, value = arg.partition('=')
      if key.startswith('--config.') and value and not value.startswith('('):
        node = config
        for part in key[len('--config.'):].split('.'):
          node = node[part]
        assert str(node) == value or float(node) == float(value), (page, arg, node)


def test_every_eval_and_curve_command_parses(monkeypatch):
  monkeypatch.chdir(REPO)
  commands = _all_commands('eval.py')
  assert {'README.md', 'running.md', 'metrics.md', 'sweeps.md', 'results.md'} <= {
      page for page, _ in commands}
  for page, argv in commands:
    fv = _parse_train_or_eval('eval.py', argv)
    assert fv.workdir, (page, argv)
  curve = _all_commands('-m vmivae_jax.experiments.curve')
  assert curve
  source = Path(importlib.util.find_spec('vmivae_jax.experiments.curve').origin).read_text()
  for page, argv in curve:
    for arg in argv:
      assert arg.startswith('--') and arg[2:].split('=')[0] in _flag_names(source), (page, arg)


def test_every_suite_command_names_real_flags_suites_and_experiments():
  from vmivae_jax.experiments import suite as suite_lib
  source = Path(importlib.util.find_spec('vmivae_jax.experiments.reproduce').origin).read_text()
  names = _flag_names(source)
  commands = _all_commands('-m vmivae_jax.experiments.reproduce')
  assert {'README.md', 'reproducing.md', 'results.md', 'results_class.md'} <= {
      page for page, _ in commands}
  experiments = {s: {e.name for e in make()} for s, make in suite_lib.SUITES.items()}
  for page, argv in commands:
    values = dict(arg[2:].partition('=')[::2] for arg in argv)
    for name in values:
      assert name in names, (page, name)
    suite = values.get('suite', 'thesis')
    assert suite in experiments, (page, suite)
    for name in filter(None, values.get('only', '').split(',')):
      assert name in experiments[suite], (page, suite, name)
  # The README's short form `reproduce --suite=S --only=E` names real experiments too.
  short = re.findall(r'`reproduce --suite=(\w+) --only=(\w+)`', README)
  assert len(short) >= 4
  for suite, name in short:
    assert name in experiments[suite], (suite, name)


def test_every_benchmark_command_names_a_real_script_and_its_flags():
  commands = [(page, m.group(1), m.group(2)) for page, text in USER_PAGES.items()
              for m in re.finditer(r'python (benchmarks/\w+\.py)([^`\n]*)', text)]
  assert commands
  for page, script, rest in commands:
    assert (REPO / script).exists(), (page.name, script)
    source = (REPO / script).read_text()
    for flag in re.findall(r'(?:^|\s)--([\w-]+)', rest):
      assert re.search(rf"""['"]--{flag}['"]|DEFINE_\w+\(\s*'{flag}'""", source), (
          page.name, script, flag)


def _slug(heading: str) -> str:
  """GitHub's anchor of a markdown heading."""
  text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip().lower())
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def test_every_relative_link_and_anchor_resolves():
  for page, text in USER_PAGES.items():
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'[a-z]+://', target):
        continue
      path, _, anchor = target.partition('#')
      file = (page.parent / path).resolve() if path else page
      if file == REPO / 'docs' / 'architecture.md' and not file.exists():
        continue   # written with the package layout
      assert file.exists(), f'{page.name}: link to missing {target}'
      if anchor:
        headings = re.findall(r'^#+ (.*)$', file.read_text(), flags=re.M)
        assert anchor in {_slug(h) for h in headings}, f'{page.name}: no anchor {target}'


def test_user_facing_text_names_no_issue_numbers():
  texts = dict(USER_PAGES)
  for config in sorted((REPO / 'configs').glob('*.py')):
    texts[config] = config.read_text()
  for path, text in texts.items():
    hits = re.findall(r'.*\bissues? ?#?\d.*', text, flags=re.I)
    assert not hits, f'{path.name}: {hits}'


def test_results_pages_name_no_machine_paths():
  for name in ('results.md', 'results_class.md', 'results_disentanglement.md'):
    text = DOCS[REPO / 'docs' / name]
    assert '/work/' not in text, name
    workdirs = re.findall(r'--workdir=(\S+)', text)
    assert workdirs and all(re.fullmatch(r'\$ROOT/\w+/[\w.]+/seed\d+', w) for w in workdirs)
    assert '`ROOT` is the directory given to `--root` of the suite command' in text
    if re.search(r'[0-9a-f]{12}\+dirty', text):   # a run made with uncommitted changes
      assert 'Code versions marked `+dirty`' in text


def test_readme_is_a_short_front_door():
  lines = README.splitlines()
  assert len(lines) <= 150, len(lines)
  first_screen = '\n'.join(lines[:60])
  for needle in ('pip install -e ".[test]"', 'python train.py --config=configs/mnist_gauss.py',
                 '\npytest\n', 'VMIVAE_DATA_DIR', '## Results at a glance'):
    assert needle in first_screen, needle
  for name in (*TOPIC_PAGES, 'results.md', 'architecture.md'):   # where each topic lives
    assert f'(docs/{name})' in first_screen, name
  assert '## Layout' not in README   # the package layout lives in docs/architecture.md
  assert not re.search(r'vmivae_jax/\w+\.py', README)


def test_readme_states_the_versions_the_tests_ran_on():
  line = re.search(r'Tests ran on Python (\S+) with (.*?)\.(?:\s|$)', README.replace('\n', ' '))
  assert line, 'no versions line'
  assert line.group(1) == platform.python_version()
  versions = dict(re.findall(r'([a-z][\w-]*) (\d[\w.]*)', line.group(2)))
  assert set(versions) == {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'}, versions
  for name, version in versions.items():
    assert importlib.metadata.version(name) == version, name


def test_every_config_key_the_pages_name_exists():
  """`--config.a.b=...` and `config.a.b` named in prose exist (in the joint config, which
  has every section); a renamed key breaks the page's advice silently otherwise."""
  import importlib.util as iu
  spec = iu.spec_from_file_location('mnist_joint', REPO / 'configs' / 'mnist_joint.py')
  module = iu.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  checked = 0
  for page, text in USER_PAGES.items():
    if page.parent.name == 'benchmarks' or page.name == 'reliability.md':
      continue   # reliability.md shows misspelled keys and the errors they give
    for key in set(re.findall(r'`(?:--)?config\.([a-z_][\w.]*[a-z_0-9])', text)) - {'json'}:
      node = config
      for part in key.split('.'):
        assert part in node, f'{page.name}: config.{key}'
        node = node[part]
      checked += 1
  assert checked > 20


def test_every_library_function_the_pages_name_exists():
  """`losses.x`, `distributions.x`, ... of the top-level math modules, as pages name them."""
  import importlib
  checked = 0
  for page, text in USER_PAGES.items():
    for module, name in set(re.findall(
        r'\b(distributions|latents|losses|entropies|consistency)\.([a-z_]\w*)\b', text)):
      if name in ('py', 'md'):
        continue
      assert hasattr(importlib.import_module(f'vmivae_jax.{module}'), name), (
          page.name, f'{module}.{name}')
      checked += 1
  assert checked >= 3
