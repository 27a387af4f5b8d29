"""Faults: SIGTERM saves and exits 0; kill -9 loses only the unfinished save.

`python -m adagen_jax.main` on the tiny config (test_multiprocess.FLAGS: 3
iterations, a checkpoint after each) in a subprocess with 1 CPU device,
interrupted both ways in one run (each launch costs ~40 s of CPU even with
a warm compilation cache), then rerun to completion. A resumed run restores the state bit
for bit and reads the same data batches, so on CPU its final state must equal
the uninterrupted run's exactly.
"""
import glob
import os
import re
import signal
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_multiprocess as mp  # pylint: disable=wrong-import-position


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """(config file, weights, final host state of an uninterrupted run)."""
  config, weights = mp.write_config(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  mp.wait(mp.start(config, workdir))
  step, state = mp.final_state(workdir, weights)
  assert step == 3
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


def test_sigterm_then_kill_during_save_resume_to_the_same_state(
    uninterrupted, tmp_path):
  """One run, interrupted twice: SIGTERM after checkpoint 1 (it saves
  iteration 2 and exits 0), then kill -9 of the resumed run while it writes
  checkpoint 3 (only that save is lost). The third launch restores 2, cleans
  up the leftover and ends in the uninterrupted run's state."""
  config, weights, expected = uninterrupted
  workdir = str(tmp_path / 'run')
  (proc,) = mp.start(config, workdir)
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
  (proc,) = mp.start(config, workdir)
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

  (out,) = mp.wait(mp.start(config, workdir))
  assert 'Restored checkpoint 2' in out, out[-3000:]
  assert _steps(workdir) == ([1, 2, 3], [])  # the leftover is cleaned up
  step, state = mp.final_state(workdir, weights)
  assert step == 3
  _assert_same(state, expected)
  assert os.path.exists(os.path.join(workdir, 'final_metrics.json'))
