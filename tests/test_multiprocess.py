"""Multi-host path: two local processes (jax.distributed on localhost).

Two processes with 2 CPU devices each train 2 iterations, save, are
restarted, restore and train a 3rd; the result must match one process with
4 devices training 3 iterations straight. Both runs see the same global
batches on the same 4-device mesh, so they agree up to float32 round-off of
cross-process reductions. Also checks that only process 0 writes logs.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(__file__))
import test_train  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
import test_train


def get_config(arg=None):
  return test_train.tiny_config({weights!r})
'''


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
  weights = test_train.make_weights(
      str(tmp_path_factory.mktemp('gen') / 'tiny.msgpack'))
  path = tmp_path_factory.mktemp('cfg') / 'tiny_config.py'
  path.write_text(_CONFIG.format(tests=os.path.dirname(__file__),
                                 weights=weights))
  return str(path), weights


def _launch(config, workdir, iterations, num_processes, devices):
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(num_processes):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
           'JAX_NUM_CPU_DEVICES': str(devices), 'XLA_FLAGS': ''}
    if num_processes > 1:
      env.update(ADAGEN_COORDINATOR=f'localhost:{port}',
                 ADAGEN_NUM_PROCESSES=str(num_processes),
                 ADAGEN_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'adagen_jax.main', f'--config={config}',
         f'--workdir={workdir}', f'--config.num_iterations={iterations}'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]


def _final_params(workdir, weights):
  config = test_train.tiny_config(weights)
  return test_train._params(workdir, config)  # pylint: disable=protected-access


def test_two_processes_match_one(config_file, tmp_path):
  config, weights = config_file
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  _launch(config, one, 3, num_processes=1, devices=4)
  _launch(config, two, 2, num_processes=2, devices=2)
  _launch(config, two, 3, num_processes=2, devices=2)  # restore + continue
  (s1, a), (s2, b) = _final_params(one, weights), _final_params(two, weights)
  assert s1 == s2 == 3
  for x, y in zip(jax.tree.leaves(a.ppo.params),
                  jax.tree.leaves(b.ppo.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  for x, y in zip(jax.tree.leaves(a.reward.params),
                  jax.tree.leaves(b.reward.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  # One metrics log, written by process 0 only, with all 3 iterations.
  steps = [l for l in open(os.path.join(two, 'metrics.jsonl'))
           if '"loss"' in l]
  assert len(steps) == 3
