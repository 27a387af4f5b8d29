"""`python -m adagen_jax.main`: user errors are one line and exit code 2."""
import os
import subprocess
import sys

import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, env=None):
  return subprocess.run(
      [sys.executable, '-m', 'adagen_jax.main', *args], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})})


@pytest.mark.parametrize('args, message', [
    (['--config.no_such_key=1'], "bad --config override: .*no_such_key"),
    (['--config.seed=abc'], 'config.seed=abc'),
    (['--config=configs/does_not_exist.py'],
     'config file configs/does_not_exist.py not found'),
    (['--config=configs/fmnist_maskgit.py:bogus'],
     "unknown config argument.*bogus"),
    (['--config=configs/maskgit_l.py'], 'MaskGIT.*weights.*not found'),
    (['--config=configs/fmnist_maskgit.py', '--config.generator.name=nope'],
     "generator.name='nope' is not a paradigm"),
    (['--config=configs/fmnist_maskgit.py', '--config.ppo.rollout_batch=12'],
     'rollout_batch=12 must be a multiple of'),
])
def test_user_errors_exit_2_with_one_line(args, message, tmp_path):
  r = _main(*args, f'--workdir={tmp_path}')
  assert r.returncode == 2, r.stderr[-2000:]
  err = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
  assert len(err) == 1, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  assert re.search(message, err[0]), err[0]


def test_missing_data_names_the_fix(tmp_path):
  r = _main('--config=configs/fmnist_maskgit.py:runlocal',
            f'--config.data.path={tmp_path}/none', f'--workdir={tmp_path}')
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'apt-get install -y dataset-fashion-mnist' in r.stderr


def test_config_arguments_and_the_embedded_default():
  from adagen_jax import errors  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import default  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import experiment  # pylint: disable=g-import-not-at-top
  from adagen_jax.configs import shipped  # pylint: disable=g-import-not-at-top
  gen = shipped.fmnist_maskgit_generator
  # ':cpu' applies the 2-core CPU settings over an experiment's own.
  c = experiment.adagen_config(gen(), 'cpu,steps=4',
                               overrides={'num_iterations': 300,
                                          'policy': {'hidden': 128}})
  assert c.generator.steps == 4
  assert c.num_iterations == experiment.CPU_RL['num_iterations']
  assert c.policy.hidden == experiment.CPU_RL['policy']['hidden']
  assert c.ppo.trajectories == experiment.CPU_RL['ppo']['trajectories']
  with pytest.raises(errors.UserError, match='known: cpu, runlocal'):
    experiment.adagen_config(gen(), 'gpu')
  # The embedded default: MaskGIT at T=4, the FD-reward table recipe on
  # DiscBackbone's block 3 started at the tuned schedule, groups of 4.
  d = default.get_config()
  assert (d.generator.name, d.generator.steps) == ('maskgit', 4)
  assert d.reward.name == 'fd' and d.policy.step_bias
  assert (d.reward.backbone, d.reward.feature_index) == ('fmnist', 3)
  assert (d.policy.table_init, d.ppo.group_size) == ('tuned', 4)
  assert d.ppo.table_learning_rate == 0.01
  assert d.num_iterations == experiment.CPU_RL['num_iterations']
