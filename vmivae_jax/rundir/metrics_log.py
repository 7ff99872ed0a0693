"""WORKDIR/metrics.jsonl: one JSON line per logging period, appended as the run goes.

Appending is not atomic: a kill mid-write can leave a torn last line, which
:func:`truncate_metrics` drops (with every line after the restored checkpoint) when the
run resumes, so a resumed run's file equals an uninterrupted run's.
"""

import json
from pathlib import Path

from vmivae_jax.util import fileio

METRICS_FILE = 'metrics.jsonl'


def truncate_metrics(workdir: Path | str, last_step: int) -> None:
  """Drops metric lines after ``last_step`` (written by a run killed after its last
  checkpoint), so a resumed run's metrics.jsonl equals an uninterrupted run's."""
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line)['step'] <= last_step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      break  # a torn last line from a kill mid-write
  fileio.atomic_write(path, ''.join(l + '\n' for l in kept))


def append_metrics(workdir: Path | str, record: dict) -> None:
  with open(Path(workdir) / METRICS_FILE, 'a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')


def read_metrics(workdir: Path | str) -> list[dict]:
  path = Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
