"""Checkpoint manager: round trip, refusal of foreign/corrupted checkpoints."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adagen_jax import errors
from adagen_jax.checkpoint import manager

FP = {'generator': {'name': 'toy'}, 'actions': ['a'], 'num_steps': 4,
      'policy_kind': 'adaptive', 'policy_hidden': 8, 'reward': 'static'}


def _state(x):
  return {'w': jnp.full((3, 2), x, jnp.float32), 'rng': jax.random.key(7),
          'it': jnp.int32(x)}


def test_round_trip_and_latest(tmp_path):
  ckpt = manager.Checkpointer(str(tmp_path), FP, keep=2)
  assert ckpt.restore_latest(jax.eval_shape(lambda: _state(0))) is None
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), '{"seed": 0}')
  step, state = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  assert step == 3
  np.testing.assert_array_equal(state['w'], np.full((3, 2), 3.0))
  assert int(state['it']) == 3
  np.testing.assert_array_equal(jax.random.key_data(state['rng']),
                                jax.random.key_data(jax.random.key(7)))
  # keep=2: the oldest step is gone.
  assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [2, 3]


def test_a_relative_directory_saves_and_restores(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ckpt = manager.Checkpointer('workdir/checkpoints', FP)
  ckpt.save(1, _state(1), '{"seed": 0}')
  step, state = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  assert step == 1 and int(state['it']) == 1
  assert os.path.isdir(tmp_path / 'workdir' / 'checkpoints' / '1')


def test_refuses_other_run(tmp_path):
  manager.Checkpointer(str(tmp_path), FP).save(1, _state(1), '{}')
  other = dict(FP, num_steps=8)
  with pytest.raises(errors.UserError, match='another run.*num_steps'):
    manager.Checkpointer(str(tmp_path), other).restore_latest(
        jax.eval_shape(lambda: _state(0)))


def test_refuses_corrupted(tmp_path):
  ckpt = manager.Checkpointer(str(tmp_path), FP)
  ckpt.save(1, _state(1), '{}')
  # Truncate every array file of the state item.
  for root, _, files in os.walk(tmp_path / '1' / 'state'):
    for f in files:
      if not f.startswith('_'):
        with open(os.path.join(root, f), 'wb') as fh:
          fh.write(b'garbage')
  with pytest.raises(errors.UserError, match='corrupted|unreadable'):
    manager.Checkpointer(str(tmp_path), FP).restore_latest(
        jax.eval_shape(lambda: _state(0)))


def test_incomplete_step_is_ignored(tmp_path):
  ckpt = manager.Checkpointer(str(tmp_path), FP)
  ckpt.save(1, _state(1), '{}')
  # What a kill -9 during a save leaves: a temporary folder, never step 2.
  os.makedirs(tmp_path / '2.orbax-checkpoint-tmp-123' / 'state')
  step, _ = manager.Checkpointer(str(tmp_path), FP).restore_latest(
      jax.eval_shape(lambda: _state(0)))
  assert step == 1
