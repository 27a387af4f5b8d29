"""Test setup: CPU only, 8 fake host devices, set before JAX initialises."""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
# A persistent compilation cache shared by the test processes (pytest-xdist
# workers, CLI subprocesses): identical programs compile once per run.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(os.path.dirname(__file__), '..',
                                   '.pytest_cache', 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# The launched-run tests (test_faults, test_multiprocess) compare against one
# uninterrupted tiny CLI run. They are marked xdist_group('launched_runs') and
# `pytest.ini` schedules by group, so both land on one worker and the run
# below (~3 min of a core with a cold compilation cache) happens once.


@pytest.fixture(scope='session')
def uninterrupted_run(tmp_path_factory):
  """(config file, weights, workdir, output) of `python -m adagen_jax.main`
  on test_train's tiny config with test_multiprocess.FLAGS: one process with
  4 CPU devices (the two-process test's global mesh), 3 iterations
  uninterrupted."""
  import test_multiprocess as mp  # pylint: disable=g-import-not-at-top
  config, weights = mp.write_config(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  (out,) = mp.wait(mp.start(config, workdir, devices=4))
  return config, weights, workdir, out
