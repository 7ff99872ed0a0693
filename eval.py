"""Evaluates the latest checkpoint of a run on the test split.

  python eval.py --workdir=runs/mnist_joint

Reads the config from the workdir; writes DIR/eval/metrics.json, assignments.npz
(categorical models) and the thesis figures as PNGs.

Exit 2 with one ``error: ...`` line when --workdir holds no train.py run or no
checkpoint (docs/reliability.md).
"""

from absl import app
from absl import flags

from vmivae_jax.app import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a train.py run.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: latest).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  cli.reject_extra_args(argv)
  cli.run_eval(_WORKDIR.value, step=_STEP.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
