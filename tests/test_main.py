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
