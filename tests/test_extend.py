"""Train longer without starting over (issue 13): a finished run given a larger
num_train_steps continues on its workdir, bitwise as the longer run from the start."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import restore_latest
from vmivae_jax.config import config_lib
from vmivae_jax.rundir import extend
from vmivae_jax.rundir import workdir as workdir_lib
from vmivae_jax.train import trainer

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get('VMIVAE_DATA_DIR') or REPO.parent / 'shared' / 'datasets')


def _config(**overrides):
  config = config_lib.smoke(config_lib.joint_config('mnist'))
  config.update(data_dir=str(DATA_DIR), num_train_steps=20, steps_per_chunk=5,
                checkpoint_every_steps=10)
  return config_lib.override(config, overrides)


@pytest.mark.skipif(not (DATA_DIR / 'mnist').is_dir(), reason='real datasets not found')
def test_extending_a_finished_run_equals_a_fresh_longer_run_bitwise(tmp_path):
  extended, fresh = tmp_path / 'extended', tmp_path / 'fresh'
  trainer.train(_config(num_train_steps=20), extended, num_devices=1)
  trainer.train(_config(num_train_steps=35), extended, num_devices=1)
  trainer.train(_config(num_train_steps=35), fresh, num_devices=1)
  a, b = restore_latest(extended), restore_latest(fresh)
  assert int(a.step) == int(b.step) == 35
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))
  assert (extended / 'metrics.jsonl').read_text() == (fresh / 'metrics.jsonl').read_text()
  assert json.loads((extended / 'config.json').read_text())['num_train_steps'] == 35
  assert (extended / 'config.json').read_text() == (fresh / 'config.json').read_text()


def test_claim_allows_growth_and_eval_settings_only(tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  assert workdir_lib.claim(workdir, _config(), overwrite=False) is False
  (workdir / 'checkpoints' / '20').mkdir(parents=True)
  # eval settings and keep_checkpoints: recorded, the run resumes.
  assert workdir_lib.claim(workdir, _config(**{'eval.iwae_samples': 3, 'keep_checkpoints': 4}),
                           overwrite=False) is True
  assert workdir_lib.load_config(workdir).eval.iwae_samples == 3
  assert workdir_lib.claim(workdir, _config(num_train_steps=40), overwrite=False) is True
  assert workdir_lib.load_config(workdir).num_train_steps == 40
  assert not [p for p in workdir.iterdir() if p.name.endswith('.tmp')]
  with pytest.raises(workdir_lib.WorkdirError, match='cannot be shortened to 30'):
    workdir_lib.claim(workdir, _config(num_train_steps=30), overwrite=False)
  for other in ({'steps_per_chunk': 2}, {'checkpoint_every_steps': 20}, {'seed': 1},
                {'num_train_steps': 50, 'mi_weight': 0.0}):
    with pytest.raises(workdir_lib.WorkdirError, match='a run with a different config'):
      workdir_lib.claim(workdir, _config(**{'num_train_steps': 40, **other}), overwrite=False)
  # A schedule depending on the total length refuses, saying so.
  assert workdir_lib.load_config(workdir).num_train_steps == 40
  monkeypatch.setattr(extend, 'LENGTH_DEPENDENT', ('mi_warmup_steps',))
  scheduled = tmp_path / 'scheduled'
  workdir_lib.claim(scheduled, _config(mi_warmup_steps=5), overwrite=False)
  with pytest.raises(workdir_lib.WorkdirError, match='depend.* on the total length'):
    workdir_lib.claim(scheduled, _config(num_train_steps=60, mi_warmup_steps=5), overwrite=False)
  assert workdir_lib.load_config(scheduled).num_train_steps == 20


def test_claim_refuses_an_extension_from_a_short_last_chunk(tmp_path):
  workdir = tmp_path / 'run'
  workdir_lib.claim(workdir, _config(num_train_steps=23), overwrite=False)
  (workdir / 'checkpoints' / '23').mkdir(parents=True)  # its last chunk: steps 21..23
  with pytest.raises(workdir_lib.WorkdirError, match='short chunk at step 23'):
    workdir_lib.claim(workdir, _config(num_train_steps=40), overwrite=False)
  # Not reached yet (killed at step 20): nothing off the grid happened; extension is fine.
  (workdir / 'checkpoints' / '23').rmdir()
  assert workdir_lib.claim(workdir, _config(num_train_steps=40), overwrite=False) is True


def test_a_run_recorded_before_later_keys_existed_is_the_same_run(tmp_path):
  """config_lib.LATER_KEYS (default off) missing from a stored config.json: same run."""
  workdir = tmp_path / 'run'
  config = _config()
  assert workdir_lib.claim(workdir, config, overwrite=False) is False
  stored = json.loads((workdir / 'config.json').read_text())
  del stored['invariance']['augment']['flip_prob']       # as written before flips existed
  (workdir / 'config.json').write_text(json.dumps(stored))
  assert workdir_lib.claim(workdir, config, overwrite=False) is True
  assert 'flip_prob' in json.loads((workdir / 'config.json').read_text())['invariance']['augment']
  del stored['invariance']                                 # before the whole section existed
  (workdir / 'config.json').write_text(json.dumps(stored))
  assert workdir_lib.claim(workdir, config, overwrite=False) is True
  # A later key set to something other than its default is a different run.
  with pytest.raises(workdir_lib.WorkdirError, match='flip_prob'):
    workdir_lib.claim(workdir, _config(**{'invariance.augment.flip_prob': 0.5}), overwrite=False)
  # Every later key exists in the base config (a listed key that does not is a typo).
  base = config_lib.get_base_config()
  for dotted in config_lib.LATER_KEYS:
    node = base
    for part in dotted.split('.'):
      node = node[part]


def test_later_keys_leave_a_foreign_config_to_validation():
  """A config.json whose sections are not sections is not patched (validation names it)."""
  import ml_collections
  for foreign in ({'model': 'resnet'}, {'invariance': 'augmentation'}, {'hello': 1}):
    config = config_lib.with_later_keys(ml_collections.ConfigDict(foreign))
    assert {k: v for k, v in config.items() if k in foreign} == foreign
