"""Keeps a run's console to the project's own lines and real warnings.

Libraries print lines a user cannot act on: JAX's probe for a TPU runtime that is not
installed, TensorFlow's oneDNN notice (twice, when CLU's writer imports TensorFlow) and
Orbax's warnings about the options of a read-only checkpoint manager (eval). Each is
dropped by its exact message; nothing else is filtered, and no platform is forced
(JAX_PLATFORMS is left to the user, so GPU and TPU hosts are unaffected).
"""

import contextlib
import logging
import os
import sys

_DROPPED = {
    # JAX probes libtpu on every host; absent on CPU/GPU hosts (logged at INFO).
    'jax._src.xla_bridge': ("Unable to initialize backend 'tpu'",),
    # Orbax explains the read-only manager eval.py opens, three lines per evaluation.
    'absl': ('CheckpointManagerOptions.read_only=True', 'Given directory is read only'),
}


class _DropMessages(logging.Filter):
  def __init__(self, prefixes: tuple[str, ...]):
    super().__init__()
    self.prefixes = prefixes

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(self.prefixes)


def quiet_libraries() -> None:
  """Installs the message filters (idempotent)."""
  for name, prefixes in _DROPPED.items():
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
      logger.addFilter(_DropMessages(prefixes))


@contextlib.contextmanager
def silenced_native_stderr():
  """Discards what native code writes to file descriptor 2 inside the block.

  For TensorFlow's import, whose C++ logging (the oneDNN notice) ignores
  TF_CPP_MIN_LOG_LEVEL. Python exceptions raised inside still propagate and print.
  """
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real stderr (e.g. captured by a test runner)
    yield
    return
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
