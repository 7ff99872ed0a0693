"""Tests for vmivae_jax.util.console: library notices dropped by exact message, nothing else."""

import logging

from vmivae_jax.util import console


def test_drops_only_the_listed_messages(caplog):
  console.quiet_libraries()
  console.quiet_libraries()  # idempotent
  xla = logging.getLogger('jax._src.xla_bridge')
  with caplog.at_level(logging.INFO):
    xla.info("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    xla.warning('a real warning')
    logging.getLogger('absl').warning('CheckpointManagerOptions.read_only=True, setting x')
    logging.getLogger('absl').warning('something else')
  messages = [r.getMessage() for r in caplog.records]
  assert messages == ['a real warning', 'something else']
  assert sum(isinstance(f, console._DropMessages) for f in xla.filters) == 1  # pylint: disable=protected-access
