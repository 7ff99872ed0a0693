"""What train.py and eval.py do after parsing flags: run, and turn known failures into
one clear message and a non-zero exit instead of a traceback.

Exit codes (docs/reliability.md lists every case):

  0    done (train.py: trained to config.num_train_steps; eval.py: results written)
  1    a bug: an uncaught exception and its traceback (please report it)
  2    ``error: ...``: bad command line (unknown flag or --config key, a value that does
       not parse as the key's type, a missing required flag), invalid config value,
       missing/corrupt data, unusable workdir
  3    ``error: divergence at step N: non-finite <term>=nan ...`` (train.py)
  128+signal  ``stopped: stopped by SIGTERM at step N/M; ...`` (train.py): a checkpoint of
       step N is saved; rerunning the same command resumes. 143 = SIGTERM, 130 = SIGINT.

Anything else is a bug and keeps its traceback.
"""

import difflib
import sys

from absl import flags
from absl import logging

from vmivae_jax.config import validation
from vmivae_jax.data import sources as data
from vmivae_jax.model import conv_ops
from vmivae_jax.rundir import sweep
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.util import console
from vmivae_jax.util import distributed

console.quiet_libraries()
# XLA reads XLA_FLAGS once, when the backend starts: set the CPU conv options before any
# computation (benchmarks/CONV.md; nothing is added on GPU/TPU).
conv_ops.apply_cpu_xla_flags()

# Failures a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (validation.ConfigError, data.DataError, workdir_lib.WorkdirError,
               distributed.DistributedError)
EXIT_USER_ERROR = 2
EXIT_DIVERGENCE = 3


def _exit_with(error: Exception, code: int = EXIT_USER_ERROR, prefix: str = 'error'):
  logging.error('%s', error)
  print(f'{prefix}: {error}', file=sys.stderr, flush=True)
  sys.exit(code)


def _config_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if hasattr(value, 'items'):
      keys += _config_keys(value, f'{prefix}{key}.')
  return keys


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every command-line mistake as ``error: ...``, exit 2.

  ml_collections raises a bare AttributeError (a traceback) for an unknown
  ``--config.<key>``; it becomes a message naming the argument.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if 'Traceback' in message:  # ml_collections embeds get_config's traceback: keep its gist
      lines = [l for l in message.splitlines() if l.strip()]
      message = f'{lines[0]} {lines[-1]}'
    _usage_error(message)
  except (AttributeError, KeyError) as e:
    detail = e.args[0] if e.args else ''
    if isinstance(detail, BaseException):  # AttributeError(KeyError(...))
      detail = detail.args[0] if detail.args else ''
    missing = str(detail).splitlines()[0].strip('"\'') if str(detail) else ''
    overrides = [a for a in argv[1:] if a.startswith('--config.')]
    bad = next((a for a in overrides if missing in a.split('=')[0][len('--config.'):].split('.')),
               f'--config.{missing}')
    key = bad.split('=')[0][len('--config.'):]
    from vmivae_jax.config import config_lib  # pylint: disable=g-import-not-at-top
    close = difflib.get_close_matches(key, _config_keys(config_lib.get_base_config()), n=1)
    hint = f'; did you mean --config.{close[0]}?' if close else ''
    if key.startswith('sweep.') and key[len('sweep.'):] not in config_lib.SWEEP_KEYS:
      hint = (f'; {key[len("sweep."):]} cannot vary across the members of a sweep (it sets '
              "shapes, the program's structure or the loop, which one compiled program "
              f'shares). Sweepable keys: {", ".join(config_lib.SWEEP_KEYS)}')
    _usage_error(f'{bad}: the config has no key {key!r}{hint}')
  return []  # unreachable


def reject_extra_args(argv: list[str]) -> None:
  if len(argv) > 1:
    _usage_error(f'unexpected arguments {argv[1:]} (flags are --name=value)')


def _usage_error(message: str):
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def run_train(config, workdir: str, *, overwrite: bool = False,
              multiprocess: dict | None = None) -> None:
  """Trains; ``multiprocess``: ``distributed.initialize``'s keyword arguments (from the
  --coordinator_address, --num_processes, --process_id, --distributed_auto flags)."""
  from vmivae_jax.train import trainer  # pylint: disable=g-import-not-at-top
  error = getattr(config, '_error', None)  # ml_collections' stand-in for a failed --config
  if error is not None:
    detail = ' '.join(str(error).split())  # one line
    _usage_error(f'--config: cannot load the config file: {type(error).__name__}: {detail}')
  try:
    distributed.initialize(**(multiprocess or {}))   # before any JAX computation
    trainer.train(config, workdir, overwrite=overwrite)
  except USER_ERRORS as e:
    _exit_with(e)
  except trainer.DivergenceError as e:
    _exit_with(e, code=EXIT_DIVERGENCE)
  except trainer.TrainingInterrupted as e:
    _exit_with(e, code=128 + e.signum, prefix='stopped')


def run_eval(workdir: str, *, step: int | None = None) -> None:
  try:
    # Checked here, before the evaluation's imports and compilations: a wrong --workdir
    # fails in a second with one line.
    sweep.check_not_sweep(workdir)
    config = workdir_lib.check_evaluable(workdir, step)
    from vmivae_jax.evaluation import run  # pylint: disable=g-import-not-at-top
    run.evaluate_workdir(workdir, step=step, config=config)
  except USER_ERRORS as e:
    _exit_with(e)
