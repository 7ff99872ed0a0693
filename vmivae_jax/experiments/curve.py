"""Accuracy over training: the cheap code metrics at every kept checkpoint of a run.

  python -m vmivae_jax.experiments.curve --workdir=runs/mnist_joint

Writes WORKDIR/eval/curve.json (evaluation/curve.py): per checkpoint, test
accuracy_hungarian / accuracy_majority / nmi and accuracy_majority_train (the
thesis's protocol). No IWAE, no fresh Q. Reruns only measure new checkpoints.
"""

from absl import app
from absl import flags

from vmivae_jax.app import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a train.py run.')
_FRESH = flags.DEFINE_bool('fresh', False, 'Measure every checkpoint again (ignore curve.json).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  cli.reject_extra_args(argv)
  try:
    from vmivae_jax.evaluation import curve  # pylint: disable=g-import-not-at-top
    result = curve.checkpoint_curve(_WORKDIR.value, reuse=not _FRESH.value)
  except (*cli.USER_ERRORS, ValueError) as e:
    cli._exit_with(e)  # pylint: disable=protected-access
  for p in result['points']:
    print(f"step {p['step']:>7d}  examples {p['examples_seen']:>9d}  "
          + '  '.join(f'{k} {p[k]:.4f}' for k in result['metrics']))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
