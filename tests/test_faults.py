"""Faults: SIGTERM saves and exits 0; kill -9 loses only the unfinished save.

`python -m adagen_jax.main` on the tiny config (test_multiprocess.FLAGS: 3
iterations, a checkpoint after each) in a subprocess with 4 CPU devices (as
conftest's run), interrupted both ways in one run (each launch costs ~40 s
of CPU even with a warm compilation cache), then rerun to completion. A
resumed run restores the state bit for bit and reads the same data batches,
so on CPU its final state must equal the uninterrupted run's exactly
(conftest's `uninterrupted_run`, shared with test_multiprocess; its outputs
are checked here).
"""
import glob
import json
import os
import re
import signal
import sys
import time

import jax
import numpy as np
import pytest

from adagen_jax import generators
from adagen_jax.metrics import writers
from adagen_jax.rl import export

sys.path.insert(0, os.path.dirname(__file__))
import test_multiprocess as mp  # pylint: disable=wrong-import-position
import test_train  # pylint: disable=wrong-import-position


@pytest.fixture(scope='module')
def uninterrupted(uninterrupted_run):
  """(config file, weights, final host state) of conftest's uninterrupted
  run, after checking the outputs it leaves."""
  config, weights, workdir, _ = uninterrupted_run
  step, state = mp.final_state(workdir, weights)
  assert step == 3
  assert int(state.ppo.step) == 3 * 2  # 2 PPO epochs per iteration
  for name in ('policy/policy.json', 'schedules_final.png', 'metrics.jsonl',
               'samples_heuristic.png', 'samples_adagen.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    assert set(json.load(f)) == {'heuristic', 'adagen'}
  assert any('loss' in r for r in writers.read_jsonl(
      os.path.join(workdir, 'metrics.jsonl')))
  # The export loads and runs for the same generator.
  gen, _ = generators.build(test_train.tiny_config(weights).generator)
  export.load(os.path.join(workdir, 'policy'), gen)
  return config, weights, state


def _steps(workdir):
  """(complete checkpoint steps, unfinished temporary folders)."""
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  return (sorted(int(n) for n in names if n.isdigit()),
          sorted(n for n in names if '.orbax-checkpoint-tmp' in n))


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(x, y)


@pytest.mark.xdist_group('launched_runs')  # shares conftest's run
def test_sigterm_then_kill_during_save_resume_to_the_same_state(
    uninterrupted, tmp_path):
  """One run, interrupted twice: SIGTERM after checkpoint 1 (it saves
  iteration 2 and exits 0), then kill -9 of the resumed run while it writes
  checkpoint 3 (only that save is lost). The third launch restores 2, cleans
  up the leftover and ends in the uninterrupted run's state."""
  config, weights, expected = uninterrupted
  workdir = str(tmp_path / 'run')
  (proc,) = mp.start(config, workdir, devices=4)
  # Checkpoint 1 is renamed into place after the stop check of iteration 1:
  # the signal is seen at the end of iteration 2.
  mp.wait_for(os.path.join(workdir, 'checkpoints', '1'), [proc])
  proc.send_signal(signal.SIGTERM)
  (out,) = mp.wait([proc])  # exit code 0
  assert re.search(r'Preempted after iteration 2\b', out), out[-3000:]
  assert _steps(workdir) == ([1, 2], [])
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))

  # Kill -9 while checkpoint 3 is being written: as soon as its temporary
  # folder exists (it is renamed to `3` only once complete).
  (proc,) = mp.start(config, workdir, devices=4)
  pattern = os.path.join(workdir, 'checkpoints', '3.orbax-checkpoint-tmp*')
  while not glob.glob(pattern):
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    time.sleep(0.002)
  proc.kill()
  out, _ = proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert 'Restored checkpoint 2' in out, out[-3000:]
  complete, unfinished = _steps(workdir)
  assert complete == [1, 2] and unfinished, (complete, unfinished)

  (out,) = mp.wait(mp.start(config, workdir, devices=4))
  assert 'Restored checkpoint 2' in out, out[-3000:]
  assert _steps(workdir) == ([1, 2, 3], [])  # the leftover is cleaned up
  step, state = mp.final_state(workdir, weights)
  assert step == 3
  _assert_same(state, expected)
  assert os.path.exists(os.path.join(workdir, 'final_metrics.json'))
