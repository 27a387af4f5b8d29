"""experiments/fmnist_sweep.sh: its job list and its variant tables."""

import os
import subprocess

_SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'experiments',
                       'fmnist_sweep.sh')


def _run(script: str, *args, env=None):
  return subprocess.run(['bash', script, *args], capture_output=True,
                        text=True, env={**os.environ, **(env or {})},
                        check=False)


def test_lists_the_default_jobs_of_each_generator():
  for gen, first in (('maskgit', 'table 4 0'), ('var', 'table 6 0')):
    out = _run(_SCRIPT, env={'JOBS': 'list', 'GENERATOR': gen})
    assert out.returncode == 0, out.stderr
    jobs = out.stdout.splitlines()
    assert jobs[0] == first
    assert 'heuristic ' + first.split()[1] in jobs


def test_a_variant_missing_its_name_fails_at_once(tmp_path):
  with open(_SCRIPT) as f:
    text = f.read()
  # A variant given flags but no name: the mistake the check is for.
  broken = text.replace('declare -A FLAGS=(\n',
                        "declare -A FLAGS=(\n  [unnamed]='--config.seed=1'\n",
                        1)
  assert broken != text
  path = tmp_path / 'fmnist_sweep.sh'
  path.write_text(broken)
  out = _run(str(path), env={'JOBS': 'list'})
  assert out.returncode == 2
  assert "variant 'unnamed' needs an entry in both FLAGS and NAMES" in (
      out.stderr)
