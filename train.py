"""Trains a VMI-VAE.

  python train.py --config=configs/mnist_gauss.py --workdir=runs/mnist_gauss
  python train.py --config=configs/mnist_joint.py --workdir=runs/j --config.mi_weight=0

Rerunning the same command resumes from the workdir's latest checkpoint (bitwise
identical to an uninterrupted run on CPU). SIGTERM/Ctrl-C saves a checkpoint at the end
of the current chunk and exits 143/130; rerun to resume. Exit codes and messages of
every failure: docs/reliability.md (2 = fix the command/config/data/workdir,
3 = divergence).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from vmivae_jax.app import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Delete a different run found in --workdir instead of refusing.')
# Several processes (README "Several hosts"): the same command on every process.
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (multi-process runs).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes of the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, in [0, num_processes).')
_AUTO = flags.DEFINE_bool('distributed_auto', False,
                          'Let JAX detect the processes (Cloud TPU, SLURM, Open MPI).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.reject_extra_args(argv)
  cli.run_train(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                multiprocess=dict(coordinator_address=_COORDINATOR.value,
                                  num_processes=_NUM_PROCESSES.value,
                                  process_id=_PROCESS_ID.value, auto=_AUTO.value))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
