"""Multi-host path: two local processes (jax.distributed on localhost).

Two processes with 2 CPU devices each train; process 1 alone gets SIGTERM
after the first checkpoint, and both must stop after the same iteration (2),
save it together and exit 0. Restarted, they restore and train a 3rd. The
result must match one process with 4 devices training 3 iterations straight
(conftest's `uninterrupted_run`, shared with test_faults): both see the same
global batches on the same 4-device mesh and run the same programs, so they
agree up to float32 round-off of the cross-process reductions (rtol 1e-4,
atol 1e-6 on parameters with a gradient; measured max relative difference
2e-5). Also checks that only process 0 writes logs,
metrics and plots.

Run time: JAX's compilation cache never serves process 1 of a multi-process
CPU run (its key includes the process's view of the topology, and only
process 0 writes), so each 2-process launch compiles every program again.
The 2-process launches run without the cache: a process 0 served from it
reaches the first collective while process 1 still compiles, and Gloo's
rendezvous gives up after 30 s (seen twice on a loaded 2-core CPU in the
resumed launch). The D step here reuses the PPO rollouts
(reward.fresh_fakes=False) to keep the compiles short.
"""
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from adagen_jax import train
from adagen_jax.checkpoint import manager
from adagen_jax.metrics import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(__file__))
import test_train  # pylint: disable=g-import-not-at-top,wrong-import-position

# Launched runs compile without LLVM's optimisation: they spend most of their
# time compiling tiny programs, and compile ~1.5x faster so (fresh-clone CI:
# this module's test 295 s -> 174 s, test_faults 306 s -> 150 s). Every run
# they compare is launched alike. In-process tests keep the default: at O0
# two programs of one formula can round 1 ulp apart, and several check
# bit-exact equality across programs.
FAST_COMPILE_FLAGS = ('--xla_backend_optimization_level=0 '
                      '--xla_llvm_disable_expensive_passes=true')

_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
import test_train


def get_config(arg=None):
  return test_train.tiny_config({weights!r})
'''
# 3 iterations; a schedule plot at the last one (a gather of sharded data).
FLAGS = ('--config.num_iterations=3', '--config.plots_every=3',
         '--config.reward.fresh_fakes=False')


def write_config(tmp_path_factory) -> tuple[str, str]:
  """(config file for `--config=`, generator weights): test_train's tiny
  config on random tiny MaskGIT weights."""
  weights = test_train.make_weights(
      str(tmp_path_factory.mktemp('gen') / 'tiny.msgpack'))
  path = tmp_path_factory.mktemp('cfg') / 'tiny_config.py'
  path.write_text(_CONFIG.format(tests=os.path.dirname(__file__),
                                 weights=weights))
  return str(path), weights


def spawn(args, num_processes=1, devices=1):
  """`python ARGS` as `num_processes` JAX processes, one Popen each."""
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(num_processes):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
           'JAX_NUM_CPU_DEVICES': str(devices),
           'XLA_FLAGS': FAST_COMPILE_FLAGS}
    if num_processes > 1:  # compiling alike, they reach collectives alike
      env.update(ADAGEN_COORDINATOR=f'localhost:{port}',
                 ADAGEN_NUM_PROCESSES=str(num_processes),
                 ADAGEN_PROCESS_ID=str(i),
                 JAX_ENABLE_COMPILATION_CACHE='false')
    procs.append(subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  return procs


def start(config, workdir, num_processes=1, devices=1):
  """`python -m adagen_jax.main` with FLAGS, one Popen per process."""
  return spawn(['-m', 'adagen_jax.main', f'--config={config}',
                f'--workdir={workdir}', *FLAGS], num_processes, devices)


def wait(procs) -> list[str]:
  """Each process's output; all must exit 0."""
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    outs.append(out)
  return outs


def wait_for(path, procs, timeout=300):
  """Polls until `path` exists while every process still runs."""
  deadline = time.time() + timeout
  while not os.path.exists(path):
    for i, p in enumerate(procs):
      if p.poll() is not None:  # say why: its output is the only trace
        raise AssertionError(f'process {i} ended early (rc {p.returncode}):'
                             f'\n{p.communicate()[0][-3000:]}')
    assert time.time() < deadline, f'{path} never appeared'
    time.sleep(0.05)


def final_state(workdir, weights):
  """(step, host TrainState) of the newest checkpoint in `workdir`."""
  config = test_train.tiny_config(weights)
  trainer = train.Trainer(config, workdir)
  ckpt = manager.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      manager.fingerprint(config, trainer.generator))
  step, state = ckpt.restore_latest(
      trainer.init_state(next(trainer.real_batches(0))))
  ckpt.close()
  return step, jax.device_get(state)


_REPLICATE = '''
import jax
import jax.numpy as jnp
import numpy as np
from adagen_jax.parallel import distributed
from adagen_jax.parallel import mesh as mesh_lib

distributed.maybe_initialize()
assert (jax.process_count(), jax.device_count()) == (2, 4)
mesh = mesh_lib.make_mesh()
done = mesh_lib.replicate(jnp.arange(3.0), mesh)
rows = np.full((2, 2), jax.process_index(), np.float32)
out = mesh_lib.replicate({
    'host': np.arange(6.0).reshape(2, 3), 'scalar': 1.5,
    'local': jnp.arange(4),  # on this process's first device
    'key': jax.random.key(3), 'done': done,
    'sharded': jax.make_array_from_process_local_data(
        mesh_lib.batch_sharded(mesh), rows)}, mesh)
for name, x in out.items():
  assert x.sharding.is_equivalent_to(mesh_lib.replicated(mesh), x.ndim), name
assert out['done'] is done
np.testing.assert_array_equal(out['host'], np.arange(6.0).reshape(2, 3))
np.testing.assert_array_equal(out['local'], np.arange(4))
assert float(out['scalar']) == 1.5
np.testing.assert_array_equal(out['sharded'], [[0, 0], [0, 0], [1, 1], [1, 1]])
np.testing.assert_array_equal(jax.random.key_data(out['key']),
                              jax.random.key_data(jax.random.key(3)))
assert jax.random.key_impl(out['key']) == jax.random.key_impl(
    jax.random.key(3))
print('replicated')
'''


def test_replicate_across_processes():
  """Each kind of leaf becomes a global array replicated on both processes'
  devices: host values, process-local arrays, typed keys, global arrays
  sharded otherwise; already replicated ones pass through."""
  outs = wait(spawn(['-c', _REPLICATE], num_processes=2, devices=2))
  assert all('replicated' in out for out in outs)


def _assert_trained_alike(params_a, params_b, adam_state_a):
  """Parameters agree to rtol 1e-4 and a per-leaf atol, except gradient-free
  ones.

  The atol is 1e-2 of the leaf's largest magnitude, at least 1e-5: the two
  runs reduce across devices in another order, and Adam turns the
  round-off of an entry whose gradient is near zero into a step of full
  size. Measured on the 2-core CPU (jax 0.10.2): the same 3 of the 512
  entries of the critic's adaLN modulation kernel (one column) 1.7e-6
  apart in one run and 1.2e-5 in another (leaf scale 4e-3), the critic's
  output bias 3.8e-6 apart; every other leaf within rtol 1e-4, atol 1e-6.
  A real divergence (a gradient not averaged over processes) moves every
  entry by Adam's full step, far above this.

  A bias followed by a normalisation (the discriminator's conv biases) has
  gradient 0 up to round-off, which Adam rescales into full-size steps; such
  leaves (Adam's second moment at most 1e-18 everywhere, i.e. RMS gradient
  < 1e-9; measured: <= 2e-20, every other leaf >= 1e-16) carry only
  round-off and are skipped.
  """
  nu = jax.tree.leaves(adam_state_a[0].nu)
  leaves = jax.tree_util.tree_flatten_with_path(params_a)[0]
  for (path, x), y, v in zip(leaves, jax.tree.leaves(params_b), nu):
    if np.max(v) <= 1e-18:
      assert jax.tree_util.keystr(path).endswith("['bias']"), path
      continue
    atol = max(1e-5, 1e-2 * float(np.max(np.abs(x))))
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.xdist_group('launched_runs')  # shares conftest's run
def test_two_processes_match_one(uninterrupted_run, tmp_path):
  config, weights, one, _ = uninterrupted_run
  two = str(tmp_path / 'two')

  procs = start(config, two, num_processes=2, devices=2)
  wait_for(os.path.join(two, 'checkpoints', '1'), procs)
  procs[1].send_signal(signal.SIGTERM)  # in iteration 2 by now
  outs = wait(procs)
  assert all('Preempted after iteration 2' in out for out in outs), outs[0]
  outs = wait(start(config, two, num_processes=2, devices=2))
  assert all('Restored checkpoint 2' in out for out in outs), outs[0]

  (s1, a), (s2, b) = final_state(one, weights), final_state(two, weights)
  assert s1 == s2 == 3
  np.testing.assert_array_equal(jax.random.key_data(a.rng),
                                jax.random.key_data(b.rng))
  assert int(a.ppo.step) == int(b.ppo.step) == 3 * 2
  _assert_trained_alike(a.ppo.params, b.ppo.params, a.ppo.opt_state)
  _assert_trained_alike(a.reward.params, b.reward.params,
                        a.reward.opt_state)
  # One metrics log, written by process 0 only, with each iteration once.
  steps = [r['step'] for r in writers.read_jsonl(
      os.path.join(two, 'metrics.jsonl')) if 'loss' in r]
  assert steps == [1, 2, 3]
  # One TensorBoard event file per launch, and only process 0 reports.
  assert len(glob.glob(os.path.join(two, 'tb', 'events.*'))) == 2
  for name in ('final_metrics.json', 'schedules.png', 'schedules_final.png',
               'samples_adagen.png', 'policy/policy.json'):
    assert os.path.exists(os.path.join(two, name)), name
  assert 'adagen iterations' in outs[0] and 'FD-FMNIST' in outs[0]
  assert 'adagen iterations' not in outs[1] and 'FD-FMNIST' not in outs[1]
