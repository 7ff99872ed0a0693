"""Device mesh and placement for data parallelism over a 1-D 'data' axis.

The per-device code is written in the pmap style (local batch, explicit
``lax.pmean`` over ``DATA_AXIS``) and run with ``jax.shard_map``; parameters and the
dataset are replicated, each device works on its slice of the global batch.

With several processes (``distributed.initialize``) the mesh spans every process's
devices; each process places its own copy of the replicated values on its local
devices (``replicate``), and each device still gathers only its rows of every global
batch, so a process computes on its share of each batch only. With the host feed
(``config.data_feed='host'``) the dataset is not replicated at all: each process builds
the chunk's global batches from its own devices' rows only (``feed_batches``).
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'
# Host-fed batches [steps, batch, ...]: every step's batch split over 'data'.
BATCHES_SPEC = P(None, DATA_AXIS)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first ``num_devices`` local devices (default: all).

  With several processes: over every device of every process (``num_devices`` must
  then be None or that total), in process order.
  """
  if jax.process_count() > 1:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices not in (None, len(devices)):
      raise ValueError(f'num_devices={num_devices}: a multi-process run uses all '
                       f'{len(devices)} devices of its {jax.process_count()} processes')
    return jax.sharding.Mesh(np.array(devices), (DATA_AXIS,))
  devices = jax.local_devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f'num_devices={n}: this process has {len(devices)} local devices')
  return jax.make_mesh((n,), (DATA_AXIS,), devices=devices[:n])


def describe(mesh: jax.sharding.Mesh) -> str:
  """'4 devices' or '4 devices over 2 processes' (for messages)."""
  n, processes = mesh.devices.size, len({d.process_index for d in mesh.devices.flat})
  return f'{n} devices' + (f' over {processes} processes' if processes > 1 else '')


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places every array of ``tree`` on all devices of ``mesh``.

  With several processes each process passes its own, identical, host values; every
  process places them on its local devices only (no transfer between processes).
  """
  sharding = NamedSharding(mesh, P())
  if mesh.is_multi_process:
    def put(x):
      host = np.asarray(x)
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree)
  return jax.device_put(tree, sharding)


def process_rows(sharding: jax.sharding.Sharding, global_shape: tuple[int, ...],
                 axis: int = 1) -> np.ndarray:
  """Indices along ``axis`` of the rows that this process's devices hold under
  ``sharding``, in the order ``jax.make_array_from_process_local_data`` reads its local
  data (the devices' slices sorted; a slice two local devices share counted once)."""
  slices = {index[axis].indices(global_shape[axis])
            for index in sharding.addressable_devices_indices_map(global_shape).values()}
  return np.concatenate([np.arange(*s) for s in sorted(slices)])


def feed_batches(images: np.ndarray, indices: np.ndarray, mesh: jax.sharding.Mesh
                 ) -> tuple[jax.Array, np.ndarray]:
  """The global batches ``images[indices]`` ([steps, batch, ...]), sharded over 'data' on
  the batch axis (``BATCHES_SPEC``), built from this process's rows only.

  Every process passes the same host ``indices`` (the chunk's [steps, batch] example
  indices) and its own host copy of the dataset, gathers only the rows its devices hold
  (one host gather, one transfer) and ``jax.make_array_from_process_local_data`` joins
  the processes' parts into one global array: no process reads or places another's rows.
  Returns the array and the batch rows this process fed (for logging and tests).
  """
  sharding = NamedSharding(mesh, BATCHES_SPEC)
  global_shape = tuple(indices.shape) + tuple(images.shape[1:])
  rows = process_rows(sharding, global_shape)
  local = images[indices[:, rows]]
  return jax.make_array_from_process_local_data(sharding, local, global_shape), rows


def host_device() -> jax.Device:
  """This process's first CPU device (for small host-side programs), else its first device."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:   # no CPU backend in this process (JAX_PLATFORMS excludes it)
    return jax.local_devices()[0]


def replicated_shardings(tree, mesh: jax.sharding.Mesh):
  """``tree``'s ShapeDtypeStructs with the replicated sharding of ``mesh`` (restore targets)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def local_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> int:
  n = mesh.shape[DATA_AXIS]
  if global_batch_size % n:
    raise ValueError(f'batch_size={global_batch_size} is not divisible by the '
                     f'{describe(mesh)}')
  return global_batch_size // n


def axis_name_for(mesh: jax.sharding.Mesh) -> str | None:
  """The collective axis name of the per-device code on ``mesh``; None on one device.

  A pmean over a size-1 axis is the identity, but XLA:CPU still emits an all-reduce
  for it (about 0.9 ms per train step measured), so one-device runs skip shard_map.
  """
  return DATA_AXIS if mesh.shape[DATA_AXIS] > 1 else None


def pmean(x, axis_name: str | None):
  """``lax.pmean`` over ``axis_name``; the identity when there is no axis."""
  return jax.lax.pmean(x, axis_name) if axis_name else x


def local_slice(global_array: jax.Array, local_size: int, axis_name: str | None) -> jax.Array:
  """This device's rows of an array computed identically on every device.

  Random draws for the global batch are made in full on each device and sliced, so
  every example sees the same noise whatever the device count. Without an axis (one
  device) the global array is the local one.
  """
  if axis_name is None:
    return global_array
  start = jax.lax.axis_index(axis_name) * local_size
  return jax.lax.dynamic_slice_in_dim(global_array, start, local_size, axis=0)


def is_varying(x: jax.Array) -> bool:
  """Whether ``x`` may differ between devices of the 'data' axis (inside shard_map)."""
  aval = jax.typeof(x)
  varying = getattr(aval, 'vma', None)
  if varying is None:  # jax >= 0.10 keeps it on the manual-axis type
    varying = aval.mat.varying
  return DATA_AXIS in varying
