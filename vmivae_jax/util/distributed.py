"""Several processes, one run: JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same train.py command (plus its own ``--process_id``); after
:func:`initialize` the mesh of ``parallel.make_mesh`` spans the devices of every
process and each jitted step is one SPMD program over all of them. What differs per
process is only what touches the workdir: process 0 holds the lock, writes
config.json, metrics.jsonl and the TensorBoard events (:func:`is_main_process`), while
Orbax's multi-host path has every process take part in each checkpoint save. Decisions
that must be the same everywhere (resume or start, stop on a signal) are taken on
process 0 or agreed by all (:func:`broadcast_from_main`, :func:`any_process`), so the
processes never run different programs (which would hang the collectives).

With one process (the default) nothing here runs any collective: single-process runs
are exactly what they were before multi-host support.
"""

import re

import jax
import numpy as np


class DistributedError(ValueError):
  """Invalid multi-process settings; the message names the flag and its value."""


_ADDRESS = re.compile(r'^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$')


def check_settings(*, coordinator_address: str | None, num_processes: int | None,
                   process_id: int | None) -> bool:
  """Validates the flags before anything starts; True when they ask for several processes.

  All three unset means one process, unless ``auto`` detection is asked for by the
  caller. Otherwise all three are needed (explicit settings), with
  ``0 <= process_id < num_processes`` and an address of the form ``host:port``.

  Raises:
    DistributedError: naming the bad flag and value.
  """
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  if all(v is None for v in given.values()):
    return False
  missing = [f'--{k}' for k, v in given.items() if v is None]
  if missing:
    set_ = ', '.join(f'--{k}={v!r}' for k, v in given.items() if v is not None)
    raise DistributedError(f'{set_} given without {", ".join(missing)}: a multi-process run '
                           'needs --coordinator_address, --num_processes and --process_id '
                           '(or --distributed_auto on TPU/SLURM/Open MPI)')
  if not _ADDRESS.match(coordinator_address):
    raise DistributedError(f'--coordinator_address={coordinator_address!r}: expected '
                           'host:port (the address of process 0, reachable from every process)')
  if num_processes < 1:
    raise DistributedError(f'--num_processes={num_processes}: must be >= 1')
  if not 0 <= process_id < num_processes:
    raise DistributedError(f'--process_id={process_id}: must be in [0, {num_processes}) '
                           f'(--num_processes={num_processes})')
  return True


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Joins the multi-process run the flags describe (nothing for a single process).

  ``auto``: let JAX detect the cluster (Cloud TPU slices, SLURM, Open MPI, GKE;
  ``JAX_COORDINATOR_ADDRESS`` etc.), as ``jax.distributed.initialize()`` does. Explicit
  values, if any, override what is detected. Must run before any JAX computation.

  Raises:
    DistributedError: invalid or incomplete flags (checked before connecting).
  """
  if auto:
    if num_processes is not None and process_id is not None:
      check_settings(coordinator_address=coordinator_address or 'auto:0',
                     num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return
  if not check_settings(coordinator_address=coordinator_address, num_processes=num_processes,
                        process_id=process_id):
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def is_main_process() -> bool:
  """Process 0: the one that writes the run's files (config, metrics, events)."""
  return jax.process_index() == 0


def broadcast_from_main(value: np.ndarray | int | bool) -> np.ndarray:
  """Process 0's ``value`` on every process (the value itself with one process)."""
  value = np.asarray(value)
  if not is_multiprocess():
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(value))


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process (the flag itself with one process)."""
  if not is_multiprocess():
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (nothing with one process)."""
  if is_multiprocess():
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
