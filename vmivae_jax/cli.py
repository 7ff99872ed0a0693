"""What train.py and eval.py do after parsing flags: run, and turn known failures into
one clear message and a non-zero exit instead of a traceback."""

import sys

from absl import logging

from vmivae_jax import validation
from vmivae_jax import data
from vmivae_jax import workdir as workdir_lib

# Failures a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (validation.ConfigError, data.DataError, workdir_lib.WorkdirError)


def _exit_with(error: Exception, code: int = 2):
  logging.error('%s', error)
  print(f'error: {error}', file=sys.stderr)
  sys.exit(code)


def run_train(config, workdir: str, *, overwrite: bool = False) -> None:
  from vmivae_jax import trainer  # pylint: disable=g-import-not-at-top
  try:
    trainer.train(config, workdir, overwrite=overwrite)
  except USER_ERRORS as e:
    _exit_with(e)
  except trainer.DivergenceError as e:
    _exit_with(e, code=3)


def run_eval(workdir: str, *, step: int | None = None) -> None:
  from vmivae_jax import evaluate  # pylint: disable=g-import-not-at-top
  try:
    evaluate.evaluate_workdir(workdir, step=step)
  except USER_ERRORS as e:
    _exit_with(e)
